"""The manifest of a sweep directory (``sweep.json``) and its locking.

Every update takes an exclusive ``fcntl.flock`` on ``<sweep>/.sweep.lock``, re-reads ``sweep.json``,
applies the change and replaces the file atomically (temporary file + rename), so any number of
processes (sweeps into the same directory, pool workers, SLURM jobs on a shared file system) can
update it; readers never see a half-written file. Entries (one per ``<cell>/seed<k>``) carry a
status and, while ``queued`` or ``running``, the ``owner`` (host, pid) that claimed them.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

from .runner import atomic_write_text

__all__ = ["MANIFEST", "LOCK", "STATUSES", "now", "read_manifest", "update_manifest", "this_process", "owner_alive",
           "held_by_live_owner",
           "run_completed", "mark_entry", "release_entries"]

MANIFEST = "sweep.json"
LOCK = ".sweep.lock"
#: statuses of a manifest entry; queued/running carry an ``owner`` (host, pid)
STATUSES = ("pending", "queued", "running", "completed", "failed", "interrupted")


def now() -> str:
    """Local time, to the second, ISO 8601."""
    return _dt.datetime.now().isoformat(timespec="seconds")


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
            manifest["updated"] = now()
            atomic_write_text(sweep_dir / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")
        return manifest


def this_process() -> dict:
    """The owner record of this process: host name and pid."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_alive(owner: dict | None, *, other_hosts: bool = True) -> bool:
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


def held_by_live_owner(entry: dict, *, retry_running: bool = False) -> bool:
    """The entry is claimed (queued or running) by a process that still runs (on another host:
    assumed to, unless ``retry_running``)."""
    return entry.get("status") in ("queued", "running") and owner_alive(entry.get("owner"),
                                                                        other_hosts=not retry_running)


def run_completed(sweep_dir: Path, entry: dict) -> bool:
    """The entry says completed and its run directory's meta.json agrees."""
    if entry.get("status") != "completed" or not entry.get("run_dir"):
        return False
    meta = sweep_dir / entry["run_dir"] / "meta.json"
    try:
        return json.loads(meta.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def release_entries(sweep_dir: Path, keys: list[str]) -> None:
    """Hand back entries this process claimed but did not start (after an interruption)."""
    me = this_process()

    def fn(m: dict | None) -> dict | None:
        if m is None:
            return None
        for key in keys:
            e = m["cells"].get(key)
            if e and e["status"] == "queued" and e.get("owner") == me:
                e.update(status="pending", owner=None)
        return m

    update_manifest(sweep_dir, fn)


def mark_entry(sweep_dir: Path, key: str, **changes: Any) -> None:
    """Update one entry (``status="running"`` counts an attempt; a ``run_dir`` is added to ``runs``)."""
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
