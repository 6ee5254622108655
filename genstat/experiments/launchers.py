"""Running the entries of a sweep: one entry in a worker (:func:`run_task`), and the launchers that
start workers (a local process pool, or submitit jobs on SLURM or on this machine)."""
from __future__ import annotations

import contextlib
import copy
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .config import load_config
from .manifest import mark_entry, now, this_process, update_manifest
from .registry import KIND_MODULES
from .runner import run_experiment

__all__ = ["LAUNCHERS", "LauncherError", "run_task", "launch", "sigterm_to_interrupt"]

LAUNCHERS = ("local", "slurm", "submitit-local")


class LauncherError(RuntimeError):
    """A launcher that cannot start (e.g. submitit is not installed)."""


class _Terminated(KeyboardInterrupt):
    pass


def sigterm_to_interrupt(signum, frame):
    """A signal handler that raises KeyboardInterrupt (install it for SIGTERM)."""
    raise _Terminated()


def _attempt_dirs(out: Path) -> set[Path]:
    return {p for p in out.glob("*/*") if (p / "meta.json").is_file()}


def run_task(sweep_dir: str, task: dict, quiet: bool = True) -> dict:
    """Run one (cell, seed) as an ordinary run under ``<sweep>/cells/...`` and record it in the manifest.

    Importable by reference (pickled by the process pool and by submitit). Returns
    ``{"key", "status", "run_dir", "error", "seconds"}``; ``KeyboardInterrupt`` (Ctrl-C, SIGTERM)
    is recorded as ``interrupted`` and re-raised.
    """
    sweep = Path(sweep_dir)
    out = sweep / task["out"]
    before = _attempt_dirs(out)
    key = task["key"]
    t0 = time.perf_counter()
    mark_entry(sweep, key, status="running", owner=this_process(), started=now(), ended=None, error=None)
    result = {"key": key, "status": "failed", "run_dir": None, "error": None}
    path = None
    try:
        if task["kind_module"] not in sys.modules:  # the module that registers the kind
            importlib.import_module(task["kind_module"])
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
        mark_entry(sweep, key, status=result["status"], run_dir=result["run_dir"], error=result["error"],
                   owner=None, ended=now())
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
    old = signal.signal(signal.SIGTERM, sigterm_to_interrupt)
    try:
        return run_task(sweep_dir, task)
    finally:
        signal.signal(signal.SIGTERM, old)


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


def _job_failed(sweep_dir: Path, key: str, error: str) -> None:
    """Record a job that died before run_task could (unless the run itself finished)."""
    def fn(m: dict | None) -> dict | None:
        e = (m or {}).get("cells", {}).get(key)
        if e is None or e["status"] == "completed":
            return None
        e.update(status="failed", error=error, owner=None, ended=now())
        return m

    update_manifest(sweep_dir, fn)


def _submitit(sweep_dir: Path, tasks: list[dict], jobs: int, report: Callable[[dict], None], launcher: str,
              options: dict[str, Any]) -> None:
    try:
        import submitit
    except ImportError:
        raise LauncherError("the slurm launchers need submitit: pip install 'genstat[sweep]'") from None
    folder = sweep_dir / "submitit" / "%j"
    try:
        if launcher == "slurm":
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
            ex.update_parameters(slurm_array_parallelism=jobs)
        else:
            ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(**{"timeout_min": 60, **options})
    except (RuntimeError, ValueError, TypeError) as exc:  # no SLURM here, or an unknown --launcher-opt
        raise LauncherError(f"cannot start the {launcher} launcher: {exc}") from None
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
                    error = f"job {j.job_id}: {type(exc).__name__}: {' '.join(str(exc).split())[-300:]}"
                    _job_failed(sweep_dir, t["key"], error)
                    report({"key": t["key"], "status": "failed", "run_dir": None, "error": error})
            if not done:
                time.sleep(0.5)
    except KeyboardInterrupt:
        for _, j in running:
            with contextlib.suppress(Exception):
                j.cancel(check=False)
        raise


def launch(sweep_dir: Path, tasks: list[dict], *, launcher: str, jobs: int, report: Callable[[dict], None],
           options: dict[str, Any] | None = None) -> None:
    """Run ``tasks`` with ``launcher`` (one of :data:`LAUNCHERS`), ``jobs`` at a time, calling ``report``
    with each result as it arrives. ``KeyboardInterrupt`` stops the workers (they mark their entries)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "local":
        _local(sweep_dir, tasks, jobs, report)
    else:
        _submitit(sweep_dir, tasks, jobs, report, launcher, options or {})
