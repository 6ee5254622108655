"""Checkpoints of :func:`genstat.interpolants.fit`: everything a resumed run needs to continue bit for bit."""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__: list[str] = []


def save(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file in the same directory, then a rename),
    so an interruption during the write leaves the previous checkpoint whole."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, fingerprint: dict) -> dict | None:
    """The checkpoint at ``path`` (None if there is none), checked against the run's ``fingerprint``."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    old = state.get("fingerprint", {})
    diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in diff[:6])
        raise ValueError(f"checkpoint {path} was written by a fit with other settings ({shown}); "
                         "use another checkpoint path or the same settings")
    return state
