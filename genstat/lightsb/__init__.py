"""Light Schroedinger Bridge (Korotin, Gushchin & Burnaev, ICLR 2024) with exact Gaussian oracles
and the entropic OT benchmark construction of Gushchin et al. (NeurIPS 2023)."""
from __future__ import annotations

from .benchmark import AUTHORS_POTENTIAL_SCALE, EOTBenchmark, authors_potential_scale
from .metrics import CBW2UVPResult, cbw2_uvp
from .mixture import GaussianMixture
from .model import FitResult, LightSB
from .baselines import DiscreteConditional, SinkhornPlan
from .oracle import GaussianEOT, gaussian_eot, random_gaussian_eot

__all__ = [
    "AUTHORS_POTENTIAL_SCALE",
    "CBW2UVPResult",
    "DiscreteConditional",
    "EOTBenchmark",
    "FitResult",
    "GaussianEOT",
    "GaussianMixture",
    "LightSB",
    "SinkhornPlan",
    "authors_potential_scale",
    "cbw2_uvp",
    "gaussian_eot",
    "random_gaussian_eot",
]
