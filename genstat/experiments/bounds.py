"""Size limits shared by the experiment schemas.

Every number in a kind's ``params`` has a lower and an upper bound, every list and mapping a
maximum length, and floats refuse nan and inf (``allow_inf_nan=False`` in each model's config):
a typo such as ``n_samples: 1e21`` is a configuration error (exit 2) instead of a 15 GB list.
The limits are far above what any experiment here uses; ``tests/experiments/test_schema_bounds.py``
checks every registered schema against them.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .config import MAX_SEED

__all__ = ["MAX_SAMPLES", "MAX_BATCH", "MAX_STEPS", "MAX_REPEATS", "MAX_WIDTH", "MAX_DEPTH", "MAX_LIST",
           "MAX_SEED", "MAX_THREADS", "MAX_LR", "MAX_SCALE", "MAX_DB", "Seed", "Dim", "Size", "Epsilon", "Db"]

#: Monte Carlo draws, records or data points in total
MAX_SAMPLES = 2**40
#: samples per batch or per in-memory pool
MAX_BATCH = 2**30
#: optimiser, sampler or environment steps
MAX_STEPS = 10**9
#: replications, repeats, trials, bootstrap resamples
MAX_REPEATS = 10**7
#: dimensions, hidden units, mixture components, probes
MAX_WIDTH = 2**16
#: network depth
MAX_DEPTH = 1000
#: entries of any list or mapping in a schema
MAX_LIST = 1000
#: torch threads
MAX_THREADS = 4096
#: learning rates
MAX_LR = 10.0
#: scales, variances, noise levels, step sizes (in the problem's units)
MAX_SCALE = 1e6
#: signal-to-noise ratios in dB
MAX_DB = 300.0

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Dim = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Size = Annotated[int, Field(ge=1, le=MAX_SAMPLES)]
Epsilon = Annotated[float, Field(gt=0, le=MAX_SCALE)]
Db = Annotated[float, Field(ge=-MAX_DB, le=MAX_DB)]
