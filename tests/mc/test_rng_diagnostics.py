"""Vectorised block seeds against numpy's SeedSequence; the Pareto k-hat against scipy and known shapes."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from genstat.mc import block_seed, block_seeds, gpd_fit, khat_threshold, pareto_khat


def _reference(seed: int, block: int, stream: int) -> int:
    st = np.random.SeedSequence(seed, spawn_key=(block, stream)).generate_state(2, dtype=np.uint32)
    return ((int(st[0]) << 31) ^ int(st[1])) & ((1 << 63) - 1)


@pytest.mark.parametrize("seed", [0, 1, 17, 2**31, 2**32 + 5, 2**64 + 3, 2**130 + 7, 2**200])
@pytest.mark.parametrize("stream", [0, 1, 2, 2**33])
def test_block_seeds_equal_seedsequence(seed, stream):
    rng = np.random.default_rng(seed % 1000)
    blocks = np.concatenate([np.arange(40), rng.integers(0, 2**31, 30), [2**32 - 1, 2**32, 2**40]])
    want = [_reference(seed, int(b), stream) for b in blocks]
    assert [int(v) for v in block_seeds(seed, blocks, stream)] == want          # vectorised path
    assert [int(v) for v in block_seeds(seed, blocks[:5], stream)] == want[:5]  # scalar path
    assert [block_seed(seed, int(b), stream) for b in blocks[:8]] == want[:8]


def test_block_seeds_bad_input():
    with pytest.raises(ValueError, match="block"):
        block_seeds(0, [-1])
    with pytest.raises(TypeError, match="seed"):
        block_seeds(1.5, [0])
    with pytest.raises(ValueError, match="seed"):
        block_seed(-1, 0)


@pytest.mark.parametrize("xi", [0.1, 0.5, 0.8, 1.2])
def test_gpd_fit_agrees_with_scipy_mle(xi):
    x = stats.genpareto.rvs(xi, scale=2.0, size=4000, random_state=np.random.default_rng(int(10 * xi)))
    k, sigma = gpd_fit(x, prior=False)
    k_mle, _, s_mle = stats.genpareto.fit(x, floc=0)
    # both estimators are efficient: they differ by much less than the sampling sd of k (~(1+k)/sqrt(n))
    assert abs(k - k_mle) < (1 + xi) / math.sqrt(len(x))
    assert abs(k - xi) < 5 * (1 + xi) / math.sqrt(len(x))
    assert abs(sigma / s_mle - 1) < 0.05


def test_pareto_khat_of_known_weight_tails():
    g = torch.Generator().manual_seed(1)
    n = 40_000
    # weights exactly Pareto with shape xi: w = U^(-xi) (tail index 1/xi)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    for xi in (0.3, 0.8):
        k = pareto_khat(-xi * torch.log(u))
        assert abs(k - xi) < 0.12, (xi, k)
    assert khat_threshold(n) == 0.7
    assert math.isnan(pareto_khat(torch.zeros(10, dtype=torch.float64)))
    with pytest.raises(ValueError, match="NaN"):
        pareto_khat(torch.tensor([0.0, float("nan")] * 20))
