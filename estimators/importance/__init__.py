"""estimators.importance: adaptive importance sampling with control variates (aISCV) for many
expectations at once, its baselines, and Sobol' indices (Demange-Chryst, Bachoc & Morio),
and rare-event probabilities by multilevel cross-entropy importance sampling."""
from .aiscv import FrozenProposal, aiscv
from .baselines import is_separate, mc_multi, mixture_reweighting
from .rare_event import cross_entropy_rare_event
from .problems import (
    CantileverInputs,
    Problem,
    cantilever_beam,
    cantilever_deflection,
    gaussian_moments,
    ishigami,
    ishigami_indices,
    linear_gaussian,
)
from .results import AdaptationStep, MultiExpectationResult, RareEventResult, zero_hit_upper_bound
from .simplex import SimplexSolution, minimize_on_simplex
from .sobol import SobolResult, sobol_indices, target_sobol_indices

__all__ = [
    "AdaptationStep",
    "CantileverInputs",
    "FrozenProposal",
    "MultiExpectationResult",
    "Problem",
    "RareEventResult",
    "SimplexSolution",
    "SobolResult",
    "aiscv",
    "cantilever_beam",
    "cantilever_deflection",
    "cross_entropy_rare_event",
    "gaussian_moments",
    "is_separate",
    "ishigami",
    "ishigami_indices",
    "linear_gaussian",
    "mc_multi",
    "minimize_on_simplex",
    "mixture_reweighting",
    "sobol_indices",
    "target_sobol_indices",
    "zero_hit_upper_bound",
]
