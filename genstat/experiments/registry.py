"""Registry of experiment kinds.

A kind is a function ``fn(params, run)`` with a pydantic model for its ``params`` block, registered
with :func:`experiment`. Kinds live in ``genstat/experiments/<module>.py`` (one file per library
module, listed in :data:`KIND_MODULES`) and are imported on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel

__all__ = ["KIND_MODULES", "Kind", "experiment", "get_kind", "list_kinds"]

#: modules under genstat.experiments that register kinds (missing ones are skipped)
KIND_MODULES = ("mc", "interpolants", "interpolants_nfe", "lightsb", "gauge", "importance", "cumulants", "td", "quickstart")


@dataclass(frozen=True)
class Kind:
    """A registered experiment kind; ``shards`` says whether its heavy work goes through
    :func:`genstat.mc.estimate` / :func:`genstat.mc.replicate` and so is split over torchrun ranks."""

    name: str
    params: type[BaseModel]
    fn: Callable
    help: str
    shards: bool = False


_KINDS: dict[str, Kind] = {}
_loaded = False


def experiment(name: str, params: type[BaseModel], help: str, *, shards: bool = False) -> Callable:
    """Decorator registering ``fn(params, run)`` as experiment kind ``name``.

    Parameters
    ----------
    name : str
        Kind name used in YAML (``kind: lightsb.benchmark``).
    params : pydantic model class
        Schema of the ``params`` block (use ``model_config = ConfigDict(extra="forbid")``).
    help : str
        One line shown by ``genstat list``.
    shards : bool
        True when the kind's heavy work goes through the engine (``estimate``/``replicate``), which
        splits it over the ranks of a torchrun job: the kind then runs on every rank, each rank
        calling the engine in the same order, and only rank 0 writes. False (a training loop, a
        single-process benchmark): under torchrun it runs on rank 0 only, with the engine as one
        process, while the other ranks wait.
    """
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(f"params must be a pydantic BaseModel subclass, got {params!r}")
    if not isinstance(shards, bool):
        raise TypeError(f"shards must be a bool, got {shards!r}")

    def deco(fn: Callable) -> Callable:
        if name in _KINDS and _KINDS[name].fn is not fn:
            raise ValueError(f"experiment kind {name!r} registered twice")
        _KINDS[name] = Kind(name, params, fn, help, shards)
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in KIND_MODULES:
        full = f"genstat.experiments.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
    _loaded = True


def list_kinds() -> dict[str, Kind]:
    """All registered kinds, by name."""
    _load_all()
    return dict(sorted(_KINDS.items()))


def get_kind(name: str) -> Kind:
    """The kind called ``name``; ``KeyError`` listing the known kinds otherwise."""
    kinds = list_kinds()
    if name not in kinds:
        raise KeyError(f"unknown experiment kind {name!r}; known kinds: {', '.join(kinds) or '(none)'}")
    return kinds[name]
