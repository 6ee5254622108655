"""genstat: generative modelling built on statistical estimators.

Subpackages: :mod:`genstat.mc` (Monte Carlo engine), :mod:`genstat.interpolants`,
:mod:`genstat.lightsb`, :mod:`genstat.gauge`; experiments run with ``genstat run FILE.yaml``.
Subpackages are imported lazily (nothing heavy happens at ``import genstat``).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["__version__", "mc", "nn", "datasets", "metrics", "interpolants", "lightsb", "gauge"]


def __getattr__(name: str):
    if name in __all__ and name != "__version__":
        return importlib.import_module(f"genstat.{name}")
    raise AttributeError(f"module 'genstat' has no attribute {name!r}")
