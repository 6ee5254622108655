"""Run directories and the :class:`Run` handle given to experiment kinds.

Layout of ``<out>/<name>/<YYYYmmdd-HHMMSS>_<sha7>/``: ``config.yaml`` (resolved), ``overrides.txt``,
``meta.json``, ``metrics.jsonl`` (streamed), ``results.csv`` (tidy, rewritten atomically after every
``add_results``), extra ``*.csv`` tables, ``figures/*.png``, ``log.txt``. A run stopped by Ctrl-C
or SIGTERM keeps what it finished and is marked ``interrupted`` in ``meta.json``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel

from .config import ExperimentConfig
from .registry import get_kind

__all__ = ["Run", "run_experiment", "atomic_write_text", "markdown_table"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        The run directory.
    config : ExperimentConfig
        The resolved top-level config; ``params`` is passed to the kind separately.
    seed : int
    device : torch.device
    """

    def __init__(self, directory: Path, config: ExperimentConfig, *, quiet: bool = False):
        import torch

        self.dir = Path(directory)
        self.config = config
        self.seed = config.seed
        self.device = torch.device(config.device)
        self.quiet = quiet
        self._results: list[pd.DataFrame] = []
        (self.dir / "figures").mkdir(parents=True, exist_ok=True)
        self._log = open(self.dir / "log.txt", "a", buffering=1)
        self._metrics = open(self.dir / "metrics.jsonl", "a", buffering=1)

    # -- text
    def log(self, message: str) -> None:
        """Append a line to log.txt and print it (unless quiet)."""
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self._log.write(f"[{stamp}] {line}\n")
        if not self.quiet:
            print(message, flush=True)

    def metric(self, **values: Any) -> None:
        """Stream one JSON line of metrics (numbers, strings; tensors are converted)."""
        clean = {k: _jsonable(v) for k, v in values.items()}
        self._metrics.write(json.dumps(clean) + "\n")

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
        atomic_write_text(self.dir / "results.csv", self.results.to_csv(index=False))

    @property
    def results(self) -> pd.DataFrame:
        return pd.concat(self._results, ignore_index=True) if self._results else pd.DataFrame()

    def save_table(self, df: pd.DataFrame, name: str) -> Path:
        """Write an extra table ``<name>.csv`` (atomically) and return its path."""
        path = self.dir / f"{name}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        return path

    def save_text(self, text: str, name: str) -> Path:
        """Write an extra text file (e.g. a markdown table) atomically."""
        path = self.dir / name
        atomic_write_text(path, text)
        return path

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically) and close it."""
        import matplotlib.pyplot as plt

        path = self.dir / "figures" / f"{name}.png"
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
        self._log.close()
        self._metrics.close()


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


def run_experiment(
    config: ExperimentConfig,
    params: BaseModel,
    *,
    out: str | Path = "runs",
    overrides: list[str] | None = None,
    quiet: bool = False,
) -> Path:
    """Create the run directory, call the kind, and record status in meta.json.

    Returns the run directory. ``KeyboardInterrupt`` (Ctrl-C or SIGTERM) marks the run
    ``interrupted`` and is re-raised; any other exception marks it ``failed`` and is re-raised.
    """
    import torch

    from genstat.mc.distributed import world

    kind = get_kind(config.kind)
    directory, sha, dirty = _new_run_dir(Path(out), config.name)
    resolved = config.model_dump(mode="json")
    resolved["params"] = params.model_dump(mode="json")
    atomic_write_text(directory / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(directory / "overrides.txt", "".join(f"{o}\n" for o in (overrides or [])))
    meta = {
        "name": config.name,
        "kind": config.kind,
        "status": "running",
        "seed": config.seed,
        "device": config.device,
        "world_size": world()[1],
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
        "start_time": _dt.datetime.now().isoformat(timespec="seconds"),
        "end_time": None,
    }

    def write_meta() -> None:
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2) + "\n")

    write_meta()
    run = Run(directory, config, quiet=quiet)

    def on_term(signum, frame):
        raise _Terminated()

    old = None
    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not in the main thread
        old = None
    try:
        run.log(f"genstat run {config.name} (kind {config.kind}) -> {directory}")
        kind.fn(params, run)
        meta["status"] = "completed"
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        run.log("interrupted: results finished so far are kept")
        raise
    except BaseException as exc:
        meta["status"] = "failed"
        meta["error"] = f"{type(exc).__name__}: {exc}"
        run._log.write(traceback.format_exc())
        raise
    finally:
        meta["end_time"] = _dt.datetime.now().isoformat(timespec="seconds")
        write_meta()
        run.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    return directory
