"""Bures-Wasserstein distance and BW-UVP between Gaussians (genstat.metrics.gaussian)."""
import numpy as np
import pytest
import scipy.linalg
import torch

import genstat.metrics
from genstat.metrics import gaussian
from genstat.metrics.gaussian import bures_trace, bures_wasserstein, bw_uvp, sqrtm_psd


def _spd(d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=dtype)
    return m @ m.T / d + 0.3 * torch.eye(d, dtype=dtype)


def _scipy_w2(m1, c1, m2, c2):
    # textbook formula with scipy's general matrix square root (Dowson & Landau 1982)
    r1 = scipy.linalg.sqrtm(c1)
    cross = np.real(scipy.linalg.sqrtm(r1 @ c2 @ r1))
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross))


def test_all_names_resolve():
    for name in gaussian.__all__:
        assert getattr(genstat.metrics, name) is getattr(gaussian, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sqrtm_squares_back(dtype):
    c = _spd(5, 0, dtype)
    r = sqrtm_psd(c)
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(r @ r, c, rtol=tol, atol=tol)
    assert r.dtype == dtype


@pytest.mark.parametrize("d", [1, 3, 16])
def test_w2_matches_scipy(d):
    g = torch.Generator().manual_seed(d)
    m1, m2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    c1, c2 = _spd(d, 1), _spd(d, 2)
    ref = _scipy_w2(m1.numpy(), c1.numpy(), m2.numpy(), c2.numpy())
    torch.testing.assert_close(bures_wasserstein(m1, c1, m2, c2).item(), ref, rtol=1e-9, atol=1e-12)
    # symmetric in its arguments
    torch.testing.assert_close(bures_wasserstein(m2, c2, m1, c1).item(), ref, rtol=1e-9, atol=1e-12)


def test_commuting_closed_form_and_batching():
    a = torch.tensor([[1.0, 4.0], [2.0, 0.5]], dtype=torch.float64)
    b = torch.tensor([[9.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    zero = torch.zeros(2, 2, dtype=torch.float64)
    out = bures_wasserstein(zero, torch.diag_embed(a), zero, torch.diag_embed(b))
    expected = ((a.sqrt() - b.sqrt()) ** 2).sum(-1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bures_trace(torch.diag_embed(a), torch.diag_embed(b)), (a * b).sqrt().sum(-1))


def test_zero_on_identical_and_uvp_normalisation():
    c = _spd(8, 3)
    m = torch.ones(8, dtype=torch.float64)
    assert bures_wasserstein(m, c, m, c).item() < 1e-12
    # a pure mean shift: UVP = 100 |dm|^2 / tr C
    shifted = bw_uvp(m + 0.1, c, m, c)
    torch.testing.assert_close(shifted.item(), 100 * 8 * 0.01 / torch.trace(c).item(), rtol=1e-9, atol=0)
    torch.testing.assert_close(bw_uvp(m + 0.1, c, m, c, variance=2.0).item(), 100 * 0.08 / 2, rtol=1e-9, atol=0)


def test_bad_inputs():
    c = torch.eye(2)
    with pytest.raises(ValueError, match="cov"):
        sqrtm_psd(torch.ones(2, 3))
    with pytest.raises(ValueError, match="cov1 and cov2"):
        bures_trace(torch.eye(2), torch.eye(3))
    with pytest.raises(ValueError, match="means and covariances"):
        bures_wasserstein(torch.zeros(3), c, torch.zeros(2), c)
    with pytest.raises(ValueError, match="finite"):
        bures_wasserstein(torch.zeros(2), torch.full((2, 2), float("nan")), torch.zeros(2), c)
    with pytest.raises(ValueError, match="variance"):
        bw_uvp(torch.zeros(2), c, torch.zeros(2), c, variance=0.0)
    with pytest.raises(TypeError, match="mean1"):
        bures_wasserstein([0.0, 0.0], c, torch.zeros(2), c)
