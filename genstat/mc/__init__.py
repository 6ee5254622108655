"""genstat.mc: the batched, block-seeded Monte Carlo engine every genstat module samples through."""
from .engine import DEFAULT_BLOCK_SIZE, estimate
from .moments import RunningMoments
from .replicate import replicate
from .result import MCResult, normal_interval
from .rng import as_device, block_generator, block_seed, child_generator, sample_distribution

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "MCResult",
    "RunningMoments",
    "as_device",
    "block_generator",
    "block_seed",
    "child_generator",
    "estimate",
    "normal_interval",
    "replicate",
    "sample_distribution",
]
