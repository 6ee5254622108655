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


def capture(fingerprint: dict, step: int, parts: dict, generator: torch.Generator, losses: torch.Tensor,
            pool, spent: tuple[float, float]) -> dict:
    """The state after ``step`` steps: ``parts`` (name -> module/optimiser/scheduler or None) by their
    ``state_dict``, the generator, the losses so far, the coupling pool and the time spent."""
    return {"fingerprint": fingerprint, "step": step,
            "parts": {k: None if v is None else v.state_dict() for k, v in parts.items()},
            "generator": generator.get_state(), "losses": losses[:step].clone(),
            "pool": None if pool is None else tuple(p.cpu() for p in pool), "spent": spent}


def restore(state: dict, parts: dict, generator: torch.Generator, losses: torch.Tensor, device: torch.device):
    """Load :func:`capture`'s ``state`` into ``parts``, ``generator`` and ``losses``; returns
    ``(steps done, pool, time spent)``."""
    for k, v in parts.items():
        if v is not None:
            v.load_state_dict(state["parts"][k])
    generator.set_state(state["generator"])
    start = int(state["step"])
    losses[:start] = state["losses"]
    pool = None if state["pool"] is None else tuple(p.to(device) for p in state["pool"])
    return start, pool, state["spent"]
