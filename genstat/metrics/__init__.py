"""Distances between samples and distributions: optimal transport / kernel metrics (``transport``)
and Gaussian (Bures-Wasserstein) metrics (``gaussian``)."""
from __future__ import annotations

from . import gaussian as _gaussian
from . import transport as _transport
from .gaussian import *  # noqa: F401,F403
from .transport import *  # noqa: F401,F403

__all__ = list(_transport.__all__) + list(_gaussian.__all__)
