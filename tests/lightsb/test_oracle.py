"""Closed-form Gaussian EOT oracle (genstat.lightsb.oracle)."""
import math

import numpy as np
import ot
import pytest
import torch

from genstat.lightsb import LightSB, cbw2_uvp, gaussian_eot
from genstat.mc import block_generator

from lightsb_helpers import random_gaussians


@pytest.mark.parametrize("d", [1, 2, 16, 128])
@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0, 10.0])
def test_transport_matrix_equals_sigma_over_eps(d, eps):
    # the EOT identity C^T A^-1 = Sigma / eps (the plan's cross term is x^T y / eps)
    a, A, b, B = random_gaussians(d, d)
    e = gaussian_eot(a, A, b, B, eps)
    C = e.cross_covariance
    T = C.T @ torch.linalg.inv(A)
    sigma = B - C.T @ torch.linalg.solve(A, C)
    scale = float(sigma.abs().max() / eps)
    assert float((T - sigma / eps).abs().max()) < 1e-10 * max(1.0, scale)
    torch.testing.assert_close(e.transport_matrix, T, rtol=1e-9, atol=1e-10)
    assert float(torch.linalg.eigvalsh(e.conditional_covariance).min()) > 0


def test_scalar_closed_form():
    # d = 1: C = (sqrt(4 A B + eps^2) - eps) / 2
    e = gaussian_eot(torch.zeros(1, dtype=torch.float64), torch.full((1, 1), 2.0, dtype=torch.float64),
                     torch.ones(1, dtype=torch.float64), torch.full((1, 1), 3.0, dtype=torch.float64), 0.5)
    torch.testing.assert_close(float(e.cross_covariance), (math.sqrt(24 + 0.25) - 0.5) / 2)


def test_matches_pot_sinkhorn_on_a_grid():
    # entropic OT on a fine 1-D grid (log-domain Sinkhorn, cost |x-y|^2/2, reg eps) vs the closed form
    a_m, a_v, b_m, b_v, eps = -0.5, 0.8, 1.0, 1.5, 0.7
    x = np.linspace(-7, 7, 400)
    p = np.exp(-((x - a_m) ** 2) / (2 * a_v)); p /= p.sum()
    q = np.exp(-((x - b_m) ** 2) / (2 * b_v)); q /= q.sum()
    M = 0.5 * (x[:, None] - x[None, :]) ** 2
    plan = ot.sinkhorn(p, q, M, eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-12)
    mx, my = (plan.sum(1) * x).sum(), (plan.sum(0) * x).sum()
    cov = float((plan * np.outer(x - mx, x - my)).sum())
    e = gaussian_eot(torch.tensor([a_m]), torch.tensor([[a_v]]), torch.tensor([b_m]), torch.tensor([[b_v]]), eps)
    assert abs(cov - float(e.cross_covariance)) < 2e-3


def test_limits_in_epsilon():
    a, A, b, B = random_gaussians(4, 5)
    # eps -> 0: the OT cross-covariance A^1/2 (A^1/2 B A^1/2)^1/2 A^-1/2
    evals, evecs = torch.linalg.eigh(A)
    r = (evecs * evals.sqrt()) @ evecs.T
    ev2, ec2 = torch.linalg.eigh(r @ B @ r)
    ot_cross = r @ ((ec2 * ev2.sqrt()) @ ec2.T) @ torch.linalg.inv(r)
    torch.testing.assert_close(gaussian_eot(a, A, b, B, 1e-7).cross_covariance, ot_cross, rtol=0, atol=1e-6)
    # eps -> infinity: independence, Sigma -> B
    big = gaussian_eot(a, A, b, B, 1e7)
    assert float(big.cross_covariance.abs().max()) < 1e-5
    torch.testing.assert_close(big.conditional_covariance, B, rtol=0, atol=1e-5)


def test_bridge_marginal_endpoints_and_samples():
    a, A, b, B = random_gaussians(3, 7)
    e = gaussian_eot(a, A, b, B, 0.5)
    m0, c0 = e.bridge_marginal(0.0)
    m1, c1 = e.bridge_marginal(1.0)
    torch.testing.assert_close(m0, a); torch.testing.assert_close(c0, A)
    torch.testing.assert_close(m1, b); torch.testing.assert_close(c1, B)
    # exact bridge samples of the exact LightSB at t = 0.3 match the formula within stderr
    model = e.as_lightsb()
    g = block_generator(3, 0)
    n = 40_000
    path = model.sample_trajectory(e.sample_source(n, g), 10, generator=g)
    xt = path[3]
    mean, cov = e.bridge_marginal(0.3)
    se_mean = torch.diagonal(cov).sqrt() / math.sqrt(n)
    assert bool(((xt.mean(0) - mean).abs() < 5 * se_mean).all())
    emp = torch.cov(xt.T)
    se_cov = torch.sqrt((torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None, :] + cov**2) / n)
    assert bool(((emp - cov).abs() < 5 * se_cov).all())
    # and the endpoint of the path is a draw of P1
    torch.testing.assert_close(path[-1].mean(0), b, rtol=0, atol=float(5 * torch.diagonal(B).sqrt().max() / n**0.5))


@pytest.mark.parametrize("d", [2, 16])
@pytest.mark.parametrize("eps", [0.01, 1.0, 10.0])
def test_exact_lightsb_has_zero_cbw2_uvp(d, eps):
    a, A, b, B = random_gaussians(d, 11 + d)
    e = gaussian_eot(a, A, b, B, eps)
    S, r = e.lightsb_parameters()
    model = LightSB(d, 1, eps, dtype=torch.float64).set_parameters(r=r.unsqueeze(0), S=S.unsqueeze(0))
    res = cbw2_uvp(model, e, n_test=500)
    assert res.estimate < 1e-8
    assert res.covariance_error < 1e-8


def test_bad_inputs():
    a, A, b, B = random_gaussians(2, 0)
    with pytest.raises(ValueError, match="epsilon"):
        gaussian_eot(a, A, b, B, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        gaussian_eot(a, A, b, B, -1.0)
    with pytest.raises(ValueError, match="A must be positive definite"):
        gaussian_eot(a, torch.zeros(2, 2, dtype=torch.float64), b, B, 1.0)
    with pytest.raises(ValueError, match="B must be symmetric"):
        gaussian_eot(a, A, b, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match=r"B must have shape \(2, 2\)"):
        gaussian_eot(a, A, b, torch.eye(3, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="a and b"):
        gaussian_eot(a, A, torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="a must be finite"):
        gaussian_eot(torch.tensor([float("nan"), 0.0], dtype=torch.float64), A, b, B, 1.0)
    with pytest.raises(ValueError, match="t must"):
        gaussian_eot(a, A, b, B, 1.0).bridge_marginal(1.5)
