"""Sweeps: one ordinary run per (grid cell, seed) under a sweep directory with a manifest.

Layout of a sweep directory::

    sweep.json                              manifest: base config, grid, seeds, one entry per (cell, seed)
    .sweep.lock                             flock'ed around every read-modify-write of the manifest
    cells/<cell-id>/seed<k>/<name>/<stamp>_<sha>/   the run directory of each attempt (``genstat run`` layout)
    submitit/                               job files of the ``slurm`` and ``submitit-local`` launchers

Every manifest update re-reads ``sweep.json`` under an exclusive ``fcntl.flock`` on ``.sweep.lock``
and replaces it atomically (:mod:`.manifest`), so several sweep processes (or SLURM jobs) can share
one directory; the workers that run the entries are started by :mod:`.launchers`.
A cell is claimed (``queued``, with the claiming process as owner) before it is run; a second sweep
into the same directory skips cells whose owner is alive and redoes those whose owner died.
Re-running a sweep resumes it: completed cells are skipped, failed, interrupted or stale ones rerun.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import ValidationError

from .config import ConfigError, SweepBlock, apply_overrides, format_errors, load_config, parse_seeds
from .launchers import LAUNCHERS, launch, sigterm_to_interrupt
from .manifest import (MANIFEST, held_by_live_owner, now, read_manifest, release_entries, run_completed, this_process,
                       update_manifest)
from .registry import get_kind

__all__ = ["MANIFEST", "LAUNCHERS", "SweepError", "SweepPlan", "parse_grid", "plan_sweep", "read_manifest",
           "update_manifest", "run_sweep", "cell_id"]



class SweepError(RuntimeError):
    """A sweep that cannot start (e.g. its directory holds a sweep of another base configuration)."""


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (how ``--set`` would write it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _short_hash(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:8]


# -- grid -------------------------------------------------------------------------------------------------------

def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["params.eps=0.1,1,10", "params.dims=[2],[16]"]`` -> ``{"params.eps": [0.1, 1, 10], ...}``.

    The text after ``=`` is read as the items of a YAML flow list, so values are parsed like
    ``--set`` values and brackets keep list values together. ``ConfigError`` lists every problem.
    """
    grid: dict[str, list[Any]] = {}
    errors = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            errors.append(f"--grid {item!r}: expected KEY=V1,V2,... with a dotted key")
            continue
        if key in grid:
            errors.append(f"--grid {key}: given twice")
            continue
        try:
            values = yaml.safe_load(f"[{text}]")
        except yaml.YAMLError as exc:
            errors.append(f"--grid {item!r}: cannot read the values as a YAML list ({str(exc).splitlines()[0]})")
            continue
        try:
            SweepBlock(grid={key: values})
        except ValidationError as exc:
            errors += [e.split("Value error, ", 1)[-1].split(" (got ")[0] for e in format_errors(exc)]
            continue
        grid[key] = values
    if errors:
        raise ConfigError(errors)
    return grid


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = copy.deepcopy(value)


def _label(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _flow(value)
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
        return "+".join(str(v) for v in value)
    return "h" + _short_hash(value)


def cell_id(overrides: dict[str, Any]) -> str:
    """Directory name of a grid cell: ``eps=0.1,dims=2+16`` (``params.`` dropped from the keys).

    A name that had to be shortened or cleaned (long, or characters outside ``[A-Za-z0-9._+=,-]``)
    ends with a hash of the overrides, so distinct cells never share a name.
    """
    if not overrides:
        return "base"
    text = ",".join(f"{k.removeprefix('params.')}={_label(v)}" for k, v in overrides.items())
    clean = re.sub(r"[^A-Za-z0-9._+=,-]", "_", text)
    if clean != text or len(clean) > 80 or clean.startswith("."):
        clean = f"{clean[:70]}~{_short_hash(overrides)}"
    return clean


@dataclass
class SweepPlan:
    """A validated sweep: the base config (raw YAML + ``--set``), its cells and seeds."""

    file: str
    name: str
    kind: str
    kind_module: str
    base: dict
    base_overrides: list[str]
    device: str | None
    grid: dict[str, list[Any]]
    seeds: list[int]
    keys: list[str] = field(default_factory=list)
    cells: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def base_hash(self) -> str:
        return _short_hash({"base": self.base, "device": self.device})

    def tasks(self) -> dict[str, dict]:
        """Entry key ``<cell>/seed<k>`` -> what a worker needs to run it."""
        out = {}
        for cid, ov in self.cells:
            raw = copy.deepcopy(self.base)
            for k, v in ov.items():
                _set_dotted(raw, k, v)
            for seed in self.seeds:
                key = f"{cid}/seed{seed}"
                out[key] = {"key": key, "raw": raw, "seed": seed, "device": self.device,
                            "out": f"cells/{cid}/seed{seed}", "kind_module": self.kind_module,
                            "overrides": self.base_overrides + [f"{k}={_flow(v)}" for k, v in ov.items()]}
        return out


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"{path}: no such file"])
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a mapping of keys, got {type(raw).__name__}"])
    return raw


def plan_sweep(
    file: str | Path,
    *,
    grid: dict[str, list[Any]] | None = None,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    keys: list[str] | None = None,
) -> SweepPlan:
    """Expand and validate a sweep without writing anything.

    The file's ``sweep:`` block gives the default grid, seeds and keys; ``grid`` entries replace
    the block's for the same key, ``seeds`` replaces its seeds (default: the file's ``seed``).
    Every (cell, seed) is validated with :func:`load_config` against the kind's schema.

    Raises
    ------
    ConfigError
        Every problem of every cell at once, each line prefixed with the cells it occurs in.
    """
    raw = _read_yaml(file)
    block_raw = raw.pop("sweep", None) or {}
    errors: list[str] = []
    block = SweepBlock()
    if not isinstance(block_raw, dict):
        errors.append(f"sweep: expected a mapping (grid, seeds, keys), got {type(block_raw).__name__}")
    else:
        try:
            block = SweepBlock.model_validate(block_raw)
        except ValidationError as exc:
            errors += format_errors(exc, "sweep")
    base = apply_overrides(copy.deepcopy(raw), list(overrides or []))
    full_grid = {**block.grid, **(grid or {})}
    if seeds is None:
        seeds = block.seeds
    if seeds is None:
        s = base.get("seed", 0)
        seeds = [s] if isinstance(s, int) and not isinstance(s, bool) else [0]
    else:
        seeds = parse_seeds(list(seeds))
    base.pop("seed", None)
    cells = []
    names = set()
    for combo in itertools.product(*full_grid.values()):
        ov = dict(zip(full_grid, combo))
        cid = cell_id(ov)
        if cid in names:
            cid = f"{cid}~{_short_hash(ov)}"
        names.add(cid)
        cells.append((cid, ov))
    found: dict[str, list[str]] = {}
    for cid, ov in cells:
        cell_raw = copy.deepcopy(base)
        for k, v in ov.items():
            _set_dotted(cell_raw, k, v)
        for seed in seeds:
            try:
                load_config(raw=copy.deepcopy(cell_raw), seed=seed, device=device)
            except ConfigError as exc:
                for e in exc.errors:
                    where = found.setdefault(e, [])
                    if cid not in where:
                        where.append(cid)
    for e, where in found.items():
        if len(cells) > 1:
            e = f"[{'every cell' if len(where) == len(cells) else 'cell ' + ', '.join(where)}] {e}"
        errors.append(e)
    kind_name = base.get("kind")
    if errors:
        raise ConfigError(errors)
    kind = get_kind(kind_name)
    return SweepPlan(file=str(file), name=str(base.get("name")), kind=kind_name, kind_module=kind.fn.__module__,
                     base=base, base_overrides=list(overrides or []), device=device, grid=full_grid, seeds=seeds,
                     keys=list(dict.fromkeys(block.keys + list(keys or []))), cells=cells)


def _merge_values(old: list, new: list) -> list:
    seen = {_canonical(v) for v in old}
    return old + [v for v in new if _canonical(v) not in seen]


def _claim(sweep_dir: Path, plan: SweepPlan, invocation: dict, *, retry_running: bool) -> tuple[list[str], list[str]]:
    """Create or extend the manifest and claim the entries to run; returns (claimed, busy)."""
    claimed: list[str] = []
    busy: list[str] = []

    def fn(m: dict | None) -> dict:
        if m is None:
            m = {"version": 1, "name": plan.name, "kind": plan.kind, "file": plan.file, "base": plan.base,
                 "base_hash": plan.base_hash, "device": plan.device, "grid": {}, "seeds": [], "keys": [],
                 "created": now(), "invocations": [], "cells": {}}
        elif m.get("base_hash") != plan.base_hash:
            raise SweepError(f"{sweep_dir} holds a sweep of another base configuration (file {m.get('file')}, "
                             f"hash {m.get('base_hash')} vs {plan.base_hash} now); use another --out")
        for k, values in plan.grid.items():
            m["grid"][k] = _merge_values(m["grid"].get(k, []), values)
        m["seeds"] = _merge_values(m["seeds"], plan.seeds)
        m["keys"] = _merge_values(m.get("keys", []), plan.keys)
        m["invocations"].append(invocation)
        for cid, ov in plan.cells:
            for seed in plan.seeds:
                key = f"{cid}/seed{seed}"
                e = m["cells"].setdefault(key, {"cell": cid, "overrides": ov, "seed": seed, "status": "pending",
                                                "run_dir": None, "attempts": 0, "owner": None, "error": None,
                                                "started": None, "ended": None, "runs": []})
                if run_completed(sweep_dir, e):
                    continue
                if held_by_live_owner(e, retry_running=retry_running):
                    busy.append(key)
                    continue
                e.update(status="queued", owner=this_process(), error=None)
                claimed.append(key)
        return m

    update_manifest(sweep_dir, fn)
    return claimed, busy


def run_sweep(
    plan: SweepPlan,
    out: str | Path,
    *,
    jobs: int = 1,
    launcher: str = "local",
    launcher_options: dict[str, Any] | None = None,
    retry_running: bool = False,
    argv: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run (or resume) a sweep into the directory ``out``.

    Parameters
    ----------
    plan : SweepPlan
        From :func:`plan_sweep`.
    out : path
        The sweep directory (created; may already hold this sweep, which is then resumed).
    jobs : int
        Cells run at once: local worker processes, or submitit jobs in flight.
    launcher : {"local", "slurm", "submitit-local"}
        ``local``: a fresh local process per cell, ``jobs`` at once; ``slurm``: a SLURM job array
        through ``submitit``; ``submitit-local``: the same submitit path with its local executor.
    launcher_options : dict
        Passed to ``executor.update_parameters`` (e.g. ``timeout_min``, ``slurm_partition``).
    retry_running : bool
        Also rerun entries claimed by a process on another host (which may be dead).

    Returns
    -------
    dict
        The manifest's entries after the sweep, by ``<cell>/seed<k>``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C or SIGTERM, after the running cells were marked interrupted and the unstarted ones
        released.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    sweep_dir = Path(out)
    invocation = {"time": now(), "argv": argv if argv is not None else sys.argv, "grid": plan.grid,
                  "seeds": plan.seeds, "launcher": launcher, "jobs": jobs, "host": socket.gethostname()}
    claimed, busy = _claim(sweep_dir, plan, invocation, retry_running=retry_running)
    tasks = plan.tasks()
    total = len(tasks)
    echo(f"sweep {sweep_dir}: {len(plan.cells)} cell(s) x {len(plan.seeds)} seed(s) = {total} run(s); "
         f"{len(claimed)} to run, {total - len(claimed) - len(busy)} already completed"
         + (f", {len(busy)} running elsewhere (skipped)" if busy else ""))
    done = 0

    def report(r: dict) -> None:
        nonlocal done
        done += 1
        tail = f" -> {r['run_dir']}" if r.get("run_dir") else ""
        err = f": {r['error']}" if r.get("error") else ""
        echo(f"[{done}/{len(claimed)}] {r['key']} {r['status']}{err}{tail}")

    old = None
    with contextlib.suppress(ValueError):  # not in the main thread: no handler
        old = signal.signal(signal.SIGTERM, sigterm_to_interrupt)
    try:
        launch(sweep_dir, [tasks[k] for k in claimed], launcher=launcher, jobs=jobs, report=report,
               options=launcher_options)
    except BaseException:  # interrupted, or the launcher could not start: hand back what did not start
        release_entries(sweep_dir, claimed)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    manifest = read_manifest(sweep_dir) or {"cells": {}}
    return {k: manifest["cells"][k] for k in tasks if k in manifest["cells"]}
