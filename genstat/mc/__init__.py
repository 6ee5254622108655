"""genstat.mc: the batched, block-seeded Monte Carlo engine every genstat module samples through."""
from .diagnostics import gpd_fit, khat_threshold, pareto_khat
from .engine import DEFAULT_BLOCK_SIZE, ImportanceWeightWarning, estimate
from .moments import RunningMoments
from .replicate import replicate
from .result import MCResult, normal_interval
from .rng import as_device, block_generator, block_seed, block_seeds, child_generator, sample_distribution

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "ImportanceWeightWarning",
    "MCResult",
    "RunningMoments",
    "as_device",
    "block_generator",
    "block_seed",
    "block_seeds",
    "child_generator",
    "estimate",
    "gpd_fit",
    "khat_threshold",
    "pareto_khat",
    "normal_interval",
    "replicate",
    "sample_distribution",
]
