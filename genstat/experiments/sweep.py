"""Sweeps: one ordinary run per (grid cell, seed) under a sweep directory with a manifest.

Layout of a sweep directory::

    sweep.json                              manifest: base config, grid, seeds, one entry per (cell, seed)
    .sweep.lock                             flock'ed around every read-modify-write of the manifest
    cells/<cell-id>/seed<k>/<name>/<stamp>_<sha>/   the run directory of each attempt (``genstat run`` layout)
    submitit/                               job files of the ``slurm`` and ``submitit-local`` launchers

Every manifest update re-reads ``sweep.json`` under an exclusive ``fcntl.flock`` on ``.sweep.lock``
and replaces it atomically, so several sweep processes (or SLURM jobs) can share one directory.
A cell is claimed (``queued``, with the claiming process as owner) before it is run; a second sweep
into the same directory skips cells whose owner is alive and redoes those whose owner died.
Re-running a sweep resumes it: completed cells are skipped, failed, interrupted or stale ones rerun.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import fcntl
import hashlib
import importlib
import itertools
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from pydantic import ValidationError

from .config import ConfigError, SweepBlock, apply_overrides, format_errors, load_config, parse_seeds
from .registry import KIND_MODULES, get_kind
from .runner import atomic_write_text, run_experiment

__all__ = ["MANIFEST", "LAUNCHERS", "SweepError", "SweepPlan", "parse_grid", "plan_sweep", "read_manifest",
           "update_manifest", "run_sweep", "cell_id"]

MANIFEST = "sweep.json"
LOCK = ".sweep.lock"
LAUNCHERS = ("local", "slurm", "submitit-local")
#: statuses of a manifest entry; queued/running carry an ``owner`` (host, pid)
STATUSES = ("pending", "queued", "running", "completed", "failed", "interrupted")


class SweepError(RuntimeError):
    """A sweep that cannot start (e.g. its directory holds a sweep of another base configuration)."""


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


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


# -- manifest ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_manifest(sweep_dir: str | Path) -> dict | None:
    """The manifest of a sweep directory (None if there is none). Safe without the lock: it is
    always replaced atomically."""
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def update_manifest(sweep_dir: str | Path, fn: Callable[[dict | None], dict | None]) -> dict | None:
    """Read the manifest under the lock, apply ``fn`` (which mutates or returns it) and write it back
    atomically. ``fn`` returning None leaves the file as it was."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        manifest = fn(read_manifest(sweep_dir))
        if manifest is not None:
            manifest["updated"] = _now()
            atomic_write_text(sweep_dir / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")
        return manifest


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(owner: dict | None, *, other_hosts: bool = True) -> bool:
    """Whether the process that claimed an entry still runs. On another host we cannot tell:
    ``other_hosts`` is the answer then."""
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return other_hosts
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_completed(sweep_dir: Path, entry: dict) -> bool:
    if entry.get("status") != "completed" or not entry.get("run_dir"):
        return False
    meta = sweep_dir / entry["run_dir"] / "meta.json"
    try:
        return json.loads(meta.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


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
                 "created": _now(), "invocations": [], "cells": {}}
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
                if _run_completed(sweep_dir, e):
                    continue
                if e["status"] in ("queued", "running") and _alive(e.get("owner"), other_hosts=not retry_running):
                    busy.append(key)
                    continue
                e.update(status="queued", owner=_me(), error=None)
                claimed.append(key)
        return m

    update_manifest(sweep_dir, fn)
    return claimed, busy


def _release(sweep_dir: Path, keys: list[str]) -> None:
    """Hand back entries this process claimed but did not start (after an interruption)."""
    me = _me()

    def fn(m: dict | None) -> dict | None:
        if m is None:
            return None
        for key in keys:
            e = m["cells"].get(key)
            if e and e["status"] == "queued" and e.get("owner") == me:
                e.update(status="pending", owner=None)
        return m

    update_manifest(sweep_dir, fn)


def _mark(sweep_dir: Path, key: str, **changes: Any) -> None:
    def fn(m: dict | None) -> dict | None:
        if m is None or key not in m["cells"]:
            return None
        e = m["cells"][key]
        if changes.get("status") == "running":
            e["attempts"] = e.get("attempts", 0) + 1
        if changes.get("run_dir") and changes["run_dir"] not in e.setdefault("runs", []):
            e["runs"].append(changes["run_dir"])
        e.update(changes)
        return m

    update_manifest(sweep_dir, fn)


# -- running one entry (in this process, a pool worker or a submitit job) ----------------------------------------

class _Terminated(KeyboardInterrupt):
    pass


def _raise_interrupt(signum, frame):
    raise _Terminated()


def _attempt_dirs(out: Path) -> set[Path]:
    return {p for p in out.glob("*/*") if (p / "meta.json").is_file()}


def run_task(sweep_dir: str, task: dict, quiet: bool = True) -> dict:
    """Run one (cell, seed) as an ordinary run under ``<sweep>/cells/...`` and record it in the manifest.

    Importable by reference (pickled by the process pool and by submitit). Returns
    ``{"key", "status", "run_dir", "error", "seconds"}``; ``KeyboardInterrupt`` (Ctrl-C, SIGTERM)
    is recorded as ``interrupted`` and re-raised.
    """
    if task["kind_module"] not in sys.modules:
        importlib.import_module(task["kind_module"])
    sweep = Path(sweep_dir)
    out = sweep / task["out"]
    before = _attempt_dirs(out)
    key = task["key"]
    t0 = time.perf_counter()
    _mark(sweep, key, status="running", owner=_me(), started=_now(), ended=None, error=None)
    result = {"key": key, "status": "failed", "run_dir": None, "error": None}
    path = None
    try:
        cfg, params = load_config(raw=copy.deepcopy(task["raw"]), seed=task["seed"], device=task["device"])
        path = run_experiment(cfg, params, out=out, overrides=task["overrides"], quiet=quiet)
        result["status"] = "completed"
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        raise
    except Exception as exc:  # a failed cell is a result: record it, let the sweep go on
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if path is None:
            new = sorted(_attempt_dirs(out) - before, key=lambda p: p.stat().st_mtime)
            path = new[-1] if new else None
        result["run_dir"] = None if path is None else str(Path(path).relative_to(sweep))
        result["seconds"] = time.perf_counter() - t0
        _mark(sweep, key, status=result["status"], run_dir=result["run_dir"], error=result["error"],
              owner=None, ended=_now())
    return result


def _pool_init() -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it and stops the workers
    # with SIGTERM, which run_experiment turns into an 'interrupted' run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_task(args: tuple[str, dict, dict]) -> dict:
    sweep_dir, task, env = args
    if env != dict(os.environ):  # the fork server keeps the environment it started with
        os.environ.clear()
        os.environ.update(env)
        threads = env.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:  # torch read it at import
            sys.modules["torch"].set_num_threads(int(threads))
    # SIGTERM (from Pool.terminate) interrupts the task, so that the entry is marked as such; while the
    # worker waits for work it keeps the default (a quiet exit).
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run_task(sweep_dir, task)
    finally:
        signal.signal(signal.SIGTERM, old)


# -- launchers --------------------------------------------------------------------------------------------------

def _local(sweep_dir: Path, tasks: list[dict], jobs: int, report: Callable[[dict], None]) -> None:
    # A fresh process per cell, as `genstat run` would be: nothing a run leaves in a process (caches,
    # thread settings, CUDA state) reaches the next one, so a resumed sweep equals an uninterrupted one.
    # A fork server that has imported the runner and the kind's module forks each worker: a fresh
    # process without paying the imports (seconds for torch) per cell. Spawn where there is none.
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        modules = {t["kind_module"] for t in tasks} - {"__main__", "__mp_main__"}
        modules |= {f"genstat.experiments.{m}" for m in KIND_MODULES}  # get_kind imports them all
        ctx.set_forkserver_preload(["__main__", "torch", "genstat.mc.distributed", "genstat.experiments.runner",
                                    *sorted(modules)])
    else:  # pragma: no cover
        ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=_pool_init, maxtasksperchild=1) as pool:  # leaving it terminates the workers
        env = dict(os.environ)
        for r in pool.imap_unordered(_pool_task, [(str(sweep_dir), t, env) for t in tasks]):
            report(r)


def _submitit(sweep_dir: Path, tasks: list[dict], jobs: int, report: Callable[[dict], None], launcher: str,
              options: dict[str, Any]) -> None:
    try:
        import submitit
    except ImportError:
        raise SweepError("the slurm launchers need submitit: pip install 'genstat[sweep]'") from None
    folder = sweep_dir / "submitit" / "%j"
    if launcher == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(slurm_array_parallelism=jobs)
    else:
        ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(**{"timeout_min": 60, **options})
    pending = list(tasks)
    running: list = []
    try:
        if launcher == "slurm":  # one job array, at most `jobs` at a time
            with ex.batch():
                running = [(t, ex.submit(run_task, str(sweep_dir), t)) for t in pending]
            pending = []
        while pending or running:
            while pending and len(running) < jobs:
                t = pending.pop(0)
                running.append((t, ex.submit(run_task, str(sweep_dir), t)))
            done = [(t, j) for t, j in running if j.done()]
            for t, j in done:
                running.remove((t, j))
                try:
                    report(j.result())
                except Exception as exc:  # the job died outside run_task (killed, out of memory, ...)
                    report({"key": t["key"], "status": "failed", "run_dir": None,
                            "error": f"job {j.job_id}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"})
            if not done:
                time.sleep(0.5)
    except KeyboardInterrupt:
        for _, j in running:
            with contextlib.suppress(Exception):
                j.cancel(check=False)
        raise


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
    invocation = {"time": _now(), "argv": argv if argv is not None else sys.argv, "grid": plan.grid,
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
        old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        todo = [tasks[k] for k in claimed]
        if launcher == "local":
            _local(sweep_dir, todo, jobs, report)
        else:
            _submitit(sweep_dir, todo, jobs, report, launcher, launcher_options or {})
    except KeyboardInterrupt:
        _release(sweep_dir, claimed)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    manifest = read_manifest(sweep_dir) or {"cells": {}}
    return {k: manifest["cells"][k] for k in tasks if k in manifest["cells"]}
