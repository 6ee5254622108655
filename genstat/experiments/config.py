"""Experiment configuration: YAML (``safe_load``) validated by pydantic v2 models.

A file has the top-level keys ``name``, ``kind``, ``seed``, ``device``, ``description`` and
``params`` (the kind's own schema). Every error is reported at once with its dotted path.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .registry import get_kind

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "apply_overrides", "format_errors"]


class ConfigError(ValueError):
    """An invalid experiment file; ``errors`` lists every problem as ``"path: message"``."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid experiment config:\n  " + "\n  ".join(self.errors))


class ExperimentConfig(BaseModel):
    """Top-level schema of an experiment file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="run directory name")
    kind: str = Field(description="registered experiment kind (see `genstat list`)")
    seed: int = Field(default=0, ge=0)
    device: str = "cpu"
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v


def format_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic ValidationError into ``"dotted.path: message (got value)"`` lines."""
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix,) + tuple(err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        got = err.get("input")
        tail = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        out.append(f"{path or '<root>'}: {msg}{tail}")
    return out


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
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
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
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
