"""BIV weights (exact xi by bisection) and the BIEV variance with its kurtosis correction."""
import math

import numpy as np
import pytest
import torch

from estimators.td import (GeneralizedGaussian, biev_variance, biv_weights, biv_xi, effective_batch_size,
                           ensemble_excess_kurtosis, ggd_excess_kurtosis)
from genstat.mc import replicate

F64 = torch.float64


def _variances(seed=0, b=64):
    return torch.rand(b, dtype=F64, generator=torch.Generator().manual_seed(seed)) ** 4 + 1e-4


@pytest.mark.parametrize("target", [8.0, 16.0, 40.5, 63.0])
def test_biv_reaches_target_ebs_exactly(target):
    v = _variances()
    assert float(effective_batch_size(1 / v)) < target  # 6.69: plain inverse-variance weights miss it
    w = biv_weights(v, min_ebs=target)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    ebs = float(effective_batch_size(w))
    assert ebs >= target * (1 - 1e-12)
    assert ebs == pytest.approx(target, rel=1e-10)
    xi = biv_xi(v, min_ebs=target)
    assert xi > 0
    # xi is the smallest: slightly less misses the target
    assert float(effective_batch_size(1 / (v + xi * (1 - 1e-6)))) < target


def test_ebs_is_monotone_in_xi():
    v = _variances(1)
    ebs = [float(effective_batch_size(1 / (v + xi))) for xi in np.geomspace(1e-6, 1e3, 40)]
    assert np.all(np.diff(ebs) > 0) and ebs[-1] < 64


def test_xi_zero_when_target_already_met():
    v = torch.tensor([1.0, 1.1, 0.9, 1.05], dtype=F64)
    assert biv_xi(v, min_ebs=3.0) == 0.0
    w = biv_weights(v, min_ebs=3.0)
    torch.testing.assert_close(w, (1 / v) / (1 / v).sum())
    assert biv_xi(torch.ones(5, dtype=F64), min_ebs=5.0) == 0.0  # equal variances: uniform, EBS = B


def test_target_equal_to_batch_gives_uniform_weights():
    v = _variances(2, 8)
    assert math.isinf(biv_xi(v, min_ebs=8.0))
    torch.testing.assert_close(biv_weights(v, min_ebs=8.0), torch.full((8,), 1 / 8, dtype=F64))


def test_default_target_and_zero_variances():
    v = _variances(3, 32)
    assert float(effective_batch_size(biv_weights(v))) == pytest.approx(16.0, rel=1e-10)  # min(B-1, 16)
    v0 = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0], dtype=F64)
    torch.testing.assert_close(biv_weights(v0, min_ebs=2.0), torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0], dtype=F64))
    assert float(effective_batch_size(biv_weights(v0, min_ebs=4.0))) == pytest.approx(4.0, rel=1e-9)


def test_weights_keep_dtype():
    w = biv_weights(_variances().float(), min_ebs=10.0)
    assert w.dtype == torch.float32 and w.requires_grad is False


@pytest.mark.parametrize("v, kw, match", [
    (torch.ones(4), {"min_ebs": 5.0}, "min_ebs"),
    (torch.ones(4), {"min_ebs": 0.5}, "min_ebs"),
    (torch.tensor([1.0, -1.0, 2.0]), {}, "non-negative"),
    (torch.tensor([1.0, math.nan, 2.0]), {}, "NaN"),
    (torch.ones(2, 2), {}, "shape"),
])
def test_biv_bad_input(v, kw, match):
    with pytest.raises(ValueError, match=match):
        biv_weights(v, **kw)


def test_biev_formula_by_hand():
    d = torch.tensor([[0.0, 1.0, -3.0], [2.0, 1.0, 0.5], [4.0, 1.0, 0.2], [1.0, 1.0, 9.0]], dtype=F64)
    K = 4
    x = d.numpy()
    s2 = x.var(0, ddof=1)
    m = x - x.mean(0)
    m2, m4 = (m**2).mean(0), (m**4).mean(0)
    kappa = np.where(m2 > 0, m4 / np.where(m2 > 0, m2, 1) ** 2 - 3, 0.0)
    expected = s2 / ((K + 1) / (K - 1) + kappa / K)
    torch.testing.assert_close(biev_variance(d), torch.from_numpy(expected))
    torch.testing.assert_close(ensemble_excess_kurtosis(d), torch.from_numpy(kappa))
    torch.testing.assert_close(biev_variance(d.T, dim=1), biev_variance(d))


def _ggd_members(beta, K):
    d = GeneralizedGaussian(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64),
                            torch.tensor(beta, dtype=F64))

    def fn(n, generator, device):
        x = d.sample((n, K), generator=generator)
        var = float(d.variance)
        s2 = x.var(1, unbiased=True)
        return torch.stack([(s2 - var) ** 2, (biev_variance(x, dim=1) - var) ** 2, s2**2 / var**2], -1)
    return fn


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 4.0])
def test_biev_beats_sample_variance_in_mse_for_k5(beta):
    K = 5
    out = replicate(_ggd_members(beta, K), 40_000, block_size=10_000, seed=1)  # (reps, 3)
    mse_s2, mse_biev, s4 = out.mean(0)
    se = out.std(0) / math.sqrt(out.shape[0])
    diff = out[:, 0] - out[:, 1]
    assert float(mse_biev) < float(mse_s2)
    assert float(diff.mean()) > 3 * float(diff.std() / math.sqrt(len(diff)))
    # the identity behind the factor: E[s^4] / sigma^4 = (K+1)/(K-1) + kappa/K
    kappa = float(ggd_excess_kurtosis(torch.tensor(beta, dtype=F64)))
    assert abs(float(s4) - ((K + 1) / (K - 1) + kappa / K)) < 5 * float(se[2])


def test_biev_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        biev_variance(torch.ones(1, 4))
    with pytest.raises(ValueError, match="NaN"):
        biev_variance(torch.tensor([[1.0, math.nan], [0.0, 1.0]]))
