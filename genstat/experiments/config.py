"""Experiment configuration: YAML (``safe_load``) validated by pydantic v2 models.

A file has the top-level keys ``name``, ``kind``, ``seed``, ``device``, ``description`` and
``params`` (the kind's own schema), and optionally ``sweep`` (:class:`SweepBlock`, read by ``genstat sweep``
only). Every error is reported at once with its dotted path.
"""
from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .registry import get_kind

__all__ = ["ConfigError", "ExperimentConfig", "SweepBlock", "parse_seeds", "load_config", "apply_overrides", "format_errors", "safe_load_bounded",
           "resolved_config", "MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "MAX_SEED"]

#: an experiment file larger than this is refused before it is parsed
MAX_CONFIG_BYTES = 1 << 20
#: scalars + containers after YAML aliases are expanded (a "billion laughs" file expands to 10**9)
MAX_CONFIG_NODES = 100_000
#: seeds are hashed into 64-bit block seeds
MAX_SEED = 2**63 - 1


class ConfigError(ValueError):
    """An invalid experiment file; ``errors`` lists every problem as ``"path: message"``."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid experiment config:\n  " + "\n  ".join(self.errors))


def parse_seeds(value: str | int | list[int]) -> list[int]:
    """Seeds from ``"0-4"``, ``"0,1,5"`` or ``"0-2,7"`` (ranges inclusive), an int or a list of ints.

    Order is kept and repeats are dropped; ``ValueError`` for anything else or a negative seed.
    """
    if isinstance(value, bool):
        raise ValueError(f"seeds must be a list of integers or a string like '0-4' or '0,1,5', got {value!r}")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        out: list[int] = []
        for part in value.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None or (m[2] is not None and int(m[2]) < int(m[1])):
                raise ValueError(f"seeds must look like '0-4', '0,1,5' or '0-2,7', got {value!r}")
            out += range(int(m[1]), int(m[2] or m[1]) + 1)
        value = out
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            and v >= 0 for v in value):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {value!r}")
    return list(dict.fromkeys(value))


class SweepBlock(BaseModel):
    """The optional ``sweep:`` block of an experiment file, expanded by ``genstat sweep FILE``."""

    model_config = ConfigDict(extra="forbid")

    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="dotted key -> values; the cells are their product")
    seeds: list[int] | None = Field(None, description="every cell runs with each seed (None: the file's seed)")
    keys: list[str] = Field(default_factory=list,
                            description="numeric results.csv columns that identify a row for `genstat collect`")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> list[int] | None:
        return None if v is None else parse_seeds(v)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+)*", key):
                raise ValueError(f"grid key {key!r} must be a dotted key such as params.steps")
            if key.split(".")[0] in ("seed", "sweep"):
                raise ValueError(f"grid key {key!r} cannot be swept (seeds go in `seeds`)")
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return v


class ExperimentConfig(BaseModel):
    """Top-level schema of an experiment file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="run directory name")
    kind: str = Field(description="registered experiment kind (see `genstat list`)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    device: str = "cpu"
    description: str = Field("", max_length=10_000)
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: SweepBlock | None = Field(None, exclude=True, description="read by `genstat sweep`; `genstat run` ignores it")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 6, 6, 60, 60


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic ValidationError into ``"dotted.path: message (got value)"`` lines.

    The offending value is shown through a bounded repr (nested containers and long strings cut),
    so a huge input cannot make a huge message.
    """
    out = []
    for err in exc.errors(include_url=False):
        path = _short(".".join(str(p) for p in (prefix,) + tuple(err["loc"]) if p != ""))
        msg = _short(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        got = err.get("input")
        tail = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else \
            f" (got {_short(_REPR.repr(got))})"
        out.append(f"{path or '<root>'}: {msg}{tail}")
    return out


def _check_size(obj: Any, limit: int) -> None:
    """Raise ValueError when ``obj`` expanded as a tree has more than ``limit`` nodes or a cycle.

    Shared sub-structures (YAML aliases) are counted once per reference, with a memo per object
    so that the count itself stays cheap for a "billion laughs" document.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(o: Any) -> int:
        if not isinstance(o, (list, dict)):
            return 1
        key = id(o)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("a YAML alias refers to itself (recursive structure)")
        active.add(key)
        n = 1
        for child in (o.values() if isinstance(o, dict) else o):
            n += size(child)
            if n > limit:
                raise ValueError(f"the document expands to more than {limit:,} values through YAML aliases "
                                 f"(*name); write the values out or shorten it")
        active.discard(key)
        sizes[key] = n
        return n

    size(obj)


def safe_load_bounded(text: str, *, max_nodes: int = MAX_CONFIG_NODES) -> Any:
    """``yaml.safe_load`` that refuses documents expanding (through aliases) past ``max_nodes`` values.

    Raises
    ------
    yaml.YAMLError
        Invalid YAML.
    ValueError
        Too large once aliases are expanded, or recursive.
    """
    data = yaml.safe_load(text)
    _check_size(data, max_nodes)
    return data


def _parse_scalar(text: str) -> Any:
    try:
        return safe_load_bounded(text)
    except (yaml.YAMLError, ValueError):
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML scalars) to a nested dict, in place."""
    errors = []
    for item in overrides:
        if "=" not in item:
            errors.append(f"--set {item!r}: expected KEY=VALUE with a dotted key")
            continue
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            errors.append(f"--set {item!r}: empty key component")
            continue
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _parse_scalar(value)
    if errors:
        raise ConfigError(errors)
    return raw


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    raw: dict | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> tuple[ExperimentConfig, BaseModel]:
    """Read, override and validate an experiment file.

    Returns
    -------
    (ExperimentConfig, params)
        The top-level config and the kind's validated params model.

    Raises
    ------
    ConfigError
        With every problem found (YAML syntax, unknown keys with their dotted path, bad values
        with the allowed ones, unknown kind with the known ones).
    """
    if raw is None:
        if path is None:
            raise TypeError("load_config needs a path or raw")
        p = Path(path)
        if not p.is_file():
            raise ConfigError([f"{path}: no such file"])
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: {size:,} bytes; an experiment file is at most {MAX_CONFIG_BYTES:,}"])
        try:
            raw = safe_load_bounded(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: invalid YAML: {_short(str(exc), 1000)}"]) from None
        except ValueError as exc:
            raise ConfigError([f"{path}: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a mapping of keys, got {type(raw).__name__}"])
    raw = apply_overrides(dict(raw), list(overrides or []))
    if seed is not None:
        raw["seed"] = seed
    if device is not None:
        raw["device"] = device
    errors: list[str] = []
    top = None
    try:
        top = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        errors.extend(format_errors(exc))
    params = None
    kind_name = raw.get("kind")
    if isinstance(kind_name, str):
        try:
            kind = get_kind(kind_name)
        except KeyError as exc:
            errors.append(f"kind: {exc.args[0]}")
        else:
            p_raw = raw.get("params", {})
            if p_raw is None:
                p_raw = {}
            if isinstance(p_raw, dict):
                try:
                    params = kind.params.model_validate(p_raw)
                except ValidationError as exc:
                    errors.extend(format_errors(exc, "params"))
    dev = raw.get("device", "cpu")
    if isinstance(dev, str) and dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            errors.append(f"device: {dev!r} requested but CUDA is not available on this machine (use 'cpu')")
    if errors:
        raise ConfigError(errors)
    return top, params


def resolved_config(config: ExperimentConfig, params: BaseModel) -> dict:
    """The configuration as run: top-level keys plus ``params`` with every default filled in
    (what ``config.yaml`` of a run directory and ``genstat validate --print`` show)."""
    out = config.model_dump(mode="json")
    out["params"] = params.model_dump(mode="json")
    return out
