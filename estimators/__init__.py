"""estimators: statistical estimators and tests built on the genstat Monte Carlo engine.

Subpackages: :mod:`estimators.importance` (adaptive importance sampling with control variates,
Sobol' indices), :mod:`estimators.cumulants` (fourth-order cumulant Gaussianity test),
:mod:`estimators.td` (generalized-Gaussian TD-error weighting). Imported lazily.
"""
from __future__ import annotations

import importlib

__all__ = ["importance", "cumulants", "td"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"estimators.{name}")
    raise AttributeError(f"module 'estimators' has no attribute {name!r}")
