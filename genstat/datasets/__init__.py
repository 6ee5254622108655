"""Seeded toy datasets: 2-D samplers and Gaussian mixtures (``toy2d``), manifolds with exact
noised scores (``manifolds``). Every sampler takes an explicit ``generator``."""
from __future__ import annotations

from . import manifolds as _manifolds
from . import toy2d as _toy2d
from .manifolds import *  # noqa: F401,F403
from .toy2d import *  # noqa: F401,F403

__all__ = list(_toy2d.__all__) + list(_manifolds.__all__)
