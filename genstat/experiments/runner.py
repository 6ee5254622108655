"""Run directories and the :class:`Run` handle given to experiment kinds.

Layout of ``<out>/<name>/<YYYYmmdd-HHMMSS>_<sha7>/``: ``config.yaml`` (resolved), ``overrides.txt``,
``meta.json`` (status, pid, host, heartbeat), ``metrics.jsonl`` (streamed), ``results.csv`` (tidy,
rewritten atomically after every ``add_results``), extra ``*.csv`` tables, ``figures/*.png``,
``log.txt`` (streamed). A run stopped by Ctrl-C or SIGTERM keeps what it finished and is marked
``interrupted`` in ``meta.json``; a killed one stays ``running`` with a heartbeat that stops moving
(:func:`run_is_dead`).

Under ``torchrun`` every rank gets a :class:`Run` for the same directory; only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel

from .config import ExperimentConfig, resolved_config
from .registry import get_kind

__all__ = ["Run", "run_experiment", "atomic_write_text", "markdown_table", "run_is_dead", "RunDirectoryError",
           "ChecksFailed", "HEARTBEAT_S"]

#: seconds between heartbeats of a running run in meta.json (environment: GENSTAT_HEARTBEAT_S)
HEARTBEAT_S = 30.0


class RunDirectoryError(OSError):
    """The run directory could not be created under ``out`` (not a directory, read-only, ...)."""


class ChecksFailed(RuntimeError):
    """Raised by :func:`run_experiment` after a completed run whose kind reported failed checks
    through :meth:`Run.fail`; everything was written and ``meta.json`` says ``failed``."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename), with the usual mode
    (0666 minus the umask; ``tempfile.mkstemp`` would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_is_dead(meta: dict, *, now: float | None = None, stale_after: float = 3.0) -> bool:
    """Whether a run whose ``meta.json`` says ``running`` has in fact died (killed, machine lost).

    It is dead when its heartbeat is older than ``stale_after`` heartbeat intervals, or when it ran
    on this host and its pid no longer exists. Runs in any other status are not dead.

    Parameters
    ----------
    meta : dict
        The parsed ``meta.json``.
    now : float, optional
        Unix time to judge at (default: now).
    stale_after : float
        Heartbeat intervals without a beat after which the run counts as dead.
    """
    if meta.get("status") != "running":
        return False
    now = time.time() if now is None else now
    beat, interval = meta.get("heartbeat"), meta.get("heartbeat_interval_s") or HEARTBEAT_S
    if beat is not None and now - float(beat) > stale_after * float(interval):
        return True
    if meta.get("hostname") == socket.gethostname() and meta.get("pid"):
        try:
            os.kill(int(meta["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            return False
    return False


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g", *, index: bool = False) -> str:
    """A pipe (markdown) table of ``df``; floats formatted with ``floatfmt``, None/NaN left blank.

    Written here because ``DataFrame.to_markdown`` needs the optional ``tabulate`` package.
    """
    if index:
        df = df.reset_index()

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        if isinstance(v, (float, np.floating)):
            return format(v, floatfmt)
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "POT", "scipy", "numpy", "pandas", "statsmodels", "pydantic", "genstat"):
        try:
            out[pkg.lower()] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg.lower()] = None
    return out


class Run:
    """What an experiment kind gets to record its work: paths, log, metrics, results, figures.

    Attributes
    ----------
    dir : Path
        The run directory (the same on every rank of a torchrun job).
    config : ExperimentConfig
        The resolved top-level config; ``params`` is passed to the kind separately.
    seed : int
    device : torch.device
        Where the kind computes (``cuda:LOCAL_RANK`` on each rank of a torchrun job on CUDA).
    rank : int
        The torch.distributed rank (0 in one process).
    is_main : bool
        Whether this process writes (rank 0). Other ranks keep results in memory only; a kind may
        skip work that only produces files (figures) when it is False.
    """

    def __init__(self, directory: Path, config: ExperimentConfig, *, quiet: bool = False,
                 device: str | None = None, rank: int = 0):
        import torch

        self.dir = Path(directory)
        self.config = config
        self.seed = config.seed
        self.device = torch.device(device if device is not None else config.device)
        self.rank = rank
        self.quiet = quiet or rank != 0
        self.failures: list[str] = []
        self._results: list[pd.DataFrame] = []
        self._step = -1
        self._log = self._metrics = None
        if self.is_main:
            (self.dir / "figures").mkdir(parents=True, exist_ok=True)
            self._log = open(self.dir / "log.txt", "a", buffering=1)
            self._metrics = open(self.dir / "metrics.jsonl", "a", buffering=1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- text
    def log(self, message: str) -> None:
        """Append a line to log.txt and print it (unless quiet)."""
        if self._log is not None:
            stamp = _dt.datetime.now().strftime("%H:%M:%S")
            for line in str(message).splitlines() or [""]:
                self._log.write(f"[{stamp}] {line}\n")
        if not self.quiet:
            print(message, flush=True)

    def metric(self, step: int | None = None, **values: Any) -> None:
        """Stream one JSON line of metrics (numbers, strings; tensors are converted).

        Every line carries ``step`` (the one given, else one more than the previous line's) and
        ``timestamp`` (unix seconds), so curves can be drawn against either across runs.
        """
        if "timestamp" in values:
            raise ValueError("metric: 'timestamp' is set by the runner; use another key")
        self._step = self._step + 1 if step is None else int(_jsonable(step))
        clean = {"step": self._step, "timestamp": round(time.time(), 3)}
        clean.update({k: _jsonable(v) for k, v in values.items()})
        if self._metrics is not None:
            self._metrics.write(json.dumps(clean) + "\n")

    def fail(self, message: str) -> None:
        """Record a failed check: the run goes on, then is marked ``failed`` (exit code 1)."""
        self.failures.append(str(message))
        self.log(f"CHECK FAILED: {message}")

    # -- results
    def add_results(self, rows: pd.DataFrame | dict | list[dict]) -> None:
        """Append rows to the tidy results table and rewrite results.csv atomically."""
        if isinstance(rows, dict):
            rows = pd.DataFrame([{k: _jsonable(v) for k, v in rows.items()}])
        elif isinstance(rows, list):
            rows = pd.DataFrame([{k: _jsonable(v) for k, v in r.items()} for r in rows])
        elif not isinstance(rows, pd.DataFrame):
            raise TypeError(f"rows must be a DataFrame, dict or list of dicts, got {type(rows).__name__}")
        self._results.append(rows)
        if self.is_main:
            atomic_write_text(self.dir / "results.csv", self.results.to_csv(index=False))

    @property
    def results(self) -> pd.DataFrame:
        return pd.concat(self._results, ignore_index=True) if self._results else pd.DataFrame()

    def save_table(self, df: pd.DataFrame, name: str) -> Path:
        """Write an extra table ``<name>.csv`` (atomically) and return its path."""
        path = self.dir / f"{name}.csv"
        if self.is_main:
            atomic_write_text(path, df.to_csv(index=False))
        return path

    def save_text(self, text: str, name: str) -> Path:
        """Write an extra text file (e.g. a markdown table) atomically."""
        path = self.dir / name
        if self.is_main:
            atomic_write_text(path, text)
        return path

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically) and close it."""
        import matplotlib.pyplot as plt

        path = self.dir / "figures" / f"{name}.png"
        if self.is_main:
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
            os.replace(tmp, path)
        plt.close(fig)
        return path

    # -- helpers
    def progress(self, iterable: Iterable | None = None, **kwargs):
        """A tqdm progress bar, silent when stderr is not a terminal."""
        from tqdm.auto import tqdm

        kwargs.setdefault("leave", False)
        return tqdm(iterable, disable=not sys.stderr.isatty() or self.quiet, **kwargs)

    def generator(self, stream: int = 0):
        """A torch.Generator on the run's device seeded from (seed, stream)."""
        from genstat.mc import block_generator

        return block_generator(self.seed, 0, self.device, stream=stream)

    def close(self) -> None:
        for f in (self._log, self._metrics):
            if f is not None:
                f.close()


def _jsonable(v: Any) -> Any:
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.item() if v.numel() == 1 else v.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, TypeError):
            pass
    return v


def _new_run_dir(out: Path, name: str) -> tuple[Path, str | None, bool | None]:
    sha = _git("rev-parse", "HEAD")
    dirty = None
    if sha is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = out / name / f"{stamp}_{(sha or 'nogit')[:7]}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    path.mkdir(parents=True)
    return path, sha, dirty


class _Terminated(KeyboardInterrupt):
    pass


class _Heartbeat(threading.Thread):
    """Rewrites meta.json every ``interval`` seconds with a fresh ``heartbeat`` (daemon thread)."""

    def __init__(self, interval: float, beat):
        super().__init__(name="genstat-heartbeat", daemon=True)
        self.interval, self.beat, self.stopped = interval, beat, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(OSError):
                self.beat()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt once; later SIGTERMs are ignored so that the cleanup
    (meta.json, the exit code 130) cannot be cut short. The old handler comes back afterwards
    unless a SIGTERM arrived: then the process is on its way out and stays deaf to SIGTERM."""
    got = []

    def on_term(signum, frame):
        if not got:
            got.append(signum)
            raise _Terminated()

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if got else old)


def run_experiment(
    config: ExperimentConfig,
    params: BaseModel,
    *,
    out: str | Path = "runs",
    overrides: list[str] | None = None,
    quiet: bool = False,
    heartbeat_s: float | None = None,
    session=None,
) -> Path:
    """Create the run directory, call the kind, and record status in meta.json.

    Parameters
    ----------
    config, params
        From :func:`~genstat.experiments.load_config`.
    out : path
        Root of the run directories.
    overrides : list of str
        The ``--set`` overrides, recorded in overrides.txt.
    quiet : bool
        Log to log.txt only.
    heartbeat_s : float, optional
        Seconds between heartbeats in meta.json (default ``GENSTAT_HEARTBEAT_S`` or 30).
    session : genstat.experiments.launch.Session, optional
        The process layout (default: one process on ``config.device``). Under torchrun, rank 0
        creates the directory and tells the others; a kind registered with ``shards=True`` runs on
        every rank (the engine shards its blocks), any other kind runs on rank 0 only, inside
        :func:`genstat.mc.distributed.no_sharding`, and the other ranks return at once.

    Returns
    -------
    Path
        The run directory.

    Raises
    ------
    RunDirectoryError
        The directory could not be created (nothing was written).
    KeyboardInterrupt
        Ctrl-C or SIGTERM: the run is marked ``interrupted`` and keeps what it finished.
    ChecksFailed
        The kind reported failed checks (:meth:`Run.fail`); the run is marked ``failed``.
    Exception
        Whatever the kind raised; the run is marked ``failed`` with the traceback in log.txt.
    """
    import torch

    from genstat.mc.distributed import no_sharding

    from .launch import Session

    kind = get_kind(config.kind)
    sess = session if session is not None else Session(device=config.device)
    main = sess.rank == 0
    directory = sha = dirty = err = None
    if main:
        try:
            directory, sha, dirty = _new_run_dir(Path(out), config.name)
        except OSError as exc:
            err = f"--out {out}: cannot create the run directory: {exc}"
    directory, err = sess.broadcast([None if directory is None else str(directory), err])
    if err is not None:
        raise RunDirectoryError(err)
    directory = Path(directory)
    active = main or kind.shards
    if not active:
        return directory
    beat = float(os.environ.get("GENSTAT_HEARTBEAT_S", HEARTBEAT_S)) if heartbeat_s is None else float(heartbeat_s)
    if not beat > 0:
        raise ValueError(f"heartbeat_s must be > 0, got {beat}")
    meta = {
        "name": config.name,
        "kind": config.kind,
        "status": "running",
        "seed": config.seed,
        "device": config.device,
        "world_size": sess.world_size,
        "backend": sess.backend,
        "sharded": bool(kind.shards and sess.distributed),
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "start_time": _dt.datetime.now().isoformat(timespec="seconds"),
        "end_time": None,
        "heartbeat": None,
        "heartbeat_interval_s": beat,
    }
    lock = threading.Lock()

    def write_meta() -> None:
        with lock:
            meta["heartbeat"] = round(time.time(), 3)
            atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2) + "\n")

    if main:
        atomic_write_text(directory / "config.yaml",
                          yaml.safe_dump(resolved_config(config, params), sort_keys=False))
        atomic_write_text(directory / "overrides.txt", "".join(f"{o}\n" for o in (overrides or [])))
        write_meta()
    run = Run(directory, config, quiet=quiet, device=sess.device, rank=sess.rank)
    heart = _Heartbeat(beat, write_meta) if main else None
    sharding = contextlib.nullcontext() if kind.shards or not sess.distributed else no_sharding()
    with _sigterm_as_interrupt():
        try:
            if heart is not None:
                heart.start()
            run.log(f"genstat run {config.name} (kind {config.kind}) -> {directory}")
            with sharding:
                kind.fn(params, run)
            if run.failures:
                meta["status"] = "failed"
                meta["error"] = f"{len(run.failures)} check(s) failed: " + "; ".join(run.failures)
                raise ChecksFailed(meta["error"])
            meta["status"] = "completed"
        except KeyboardInterrupt:
            meta["status"] = "interrupted"
            run.log("interrupted: results finished so far are kept")
            raise
        except ChecksFailed:
            raise
        except BaseException as exc:
            meta["status"] = "failed"
            meta["error"] = f"{type(exc).__name__}: {exc}"
            if run._log is not None:
                run._log.write(traceback.format_exc())
            raise
        finally:
            if heart is not None:
                heart.stopped.set()
                heart.join(timeout=10)
            meta["end_time"] = _dt.datetime.now().isoformat(timespec="seconds")
            if main:
                write_meta()
            run.close()
    return directory
