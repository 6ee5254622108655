"""Losses (plain vs antithetic), conversions between fields, couplings."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from genstat.datasets import GaussianMixture
from genstat.interpolants import (Interpolant, couple, eta_from_score, exact_fields, interpolant_loss,
                                  score_from_eta, velocity_from_predictions, x1_from_velocity)
from genstat.mc import replicate

F64 = torch.float64


def gaussians():
    src = GaussianMixture(torch.ones(1, dtype=F64), torch.tensor([[1.0, -1.0]], dtype=F64),
                          torch.tensor([[[1.0, 0.3], [0.3, 0.5]]], dtype=F64))
    tgt = GaussianMixture(torch.ones(1, dtype=F64), torch.tensor([[-2.0, 1.0]], dtype=F64),
                          torch.tensor([0.3], dtype=F64))
    return src, tgt


def test_antithetic_same_mean_smaller_variance():
    """Both losses estimate the same expectation; antithetic has a much smaller variance (t near 0)."""
    src, tgt = gaussians()
    I = Interpolant("linear", "brownian")
    F = exact_fields(I, src, tgt)

    def draws(antithetic):
        def fn(n, g, dev):
            out = []
            for _ in range(n):
                x0, x1 = src.sample(256, g), tgt.sample(256, g)
                t = 0.02 * torch.rand(256, generator=g, dtype=F64) + 1e-4
                z = torch.randn(256, 2, generator=g, dtype=F64)
                out.append(interpolant_loss(I, F.velocity, x0, x1, t, z, antithetic=antithetic))
            return torch.stack(out)
        return replicate(fn, 60, block_size=20, seed=1)

    plain, anti = draws(False), draws(True)
    se = (plain.var() / 60 + anti.var() / 60).sqrt()
    assert abs(float(plain.mean() - anti.mean())) < 5 * float(se)
    assert float(anti.var()) < 0.1 * float(plain.var())


@pytest.mark.parametrize("field", ["b", "eta", "x1"])
def test_exact_field_minimises_loss(field):
    src, tgt = gaussians()
    I = Interpolant("trig", "quadratic")
    F = exact_fields(I, src, tgt)
    g = torch.Generator().manual_seed(2)
    n = 20_000
    x0, x1 = src.sample(n, g), tgt.sample(n, g)
    t, z = torch.rand(n, generator=g, dtype=F64) * 0.9 + 0.05, torch.randn(n, 2, generator=g, dtype=F64)
    if field == "b":
        f = F.velocity
    elif field == "eta":
        f = F.eta
    else:
        f = lambda tt, x: x1_from_velocity(I, tt, x, F.velocity(tt, x), F.eta(tt, x))  # noqa: E731
    best = interpolant_loss(I, f, x0, x1, t, z, field=field, antithetic=True)
    worse = interpolant_loss(I, lambda tt, x: f(tt, x) + 0.1, x0, x1, t, z, field=field, antithetic=True)
    assert float(worse) > float(best) + 0.01  # quadratic gap 2 * 0.1^2 (mean over pairs of two copies)


def test_conversions_round_trip():
    src, tgt = gaussians()
    I = Interpolant("linear", "brownian")
    F = exact_fields(I, src, tgt)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 2, generator=g, dtype=F64)
    t = torch.full((10,), 0.35, dtype=F64)
    s, eta, b = F.score(t, x), F.eta(t, x), F.velocity(t, x)
    torch.testing.assert_close(score_from_eta(I, t, eta), s)
    torch.testing.assert_close(eta_from_score(I, t, s), eta)
    x1hat = x1_from_velocity(I, t, x, b, eta)
    torch.testing.assert_close(velocity_from_predictions(I, t, x, x1_pred=x1hat, eta=eta), b)
    x0hat = (x - I.beta(t)[:, None] * x1hat - I.gamma(t)[:, None] * eta) / I.alpha(t)[:, None]
    torch.testing.assert_close(velocity_from_predictions(I, t, x, x0_pred=x0hat, x1_pred=x1hat), b)
    # Gaussian check of E[x1 | x_t]: m1 + beta C1 C_t^{-1} (x - m_t)
    Ct = 0.65**2 * src.covariances[0] + 0.35**2 * tgt.covariances[0] + 0.35 * 0.65 * torch.eye(2, dtype=F64)
    mt = 0.65 * src.means[0] + 0.35 * tgt.means[0]
    expect = tgt.means[0] + 0.35 * (tgt.covariances[0] @ torch.linalg.solve(Ct, (x - mt).T)).T
    torch.testing.assert_close(x1hat, expect)


def test_one_sided_score_conversion():
    I = Interpolant("one_sided_linear")
    eta = torch.ones(2, 2)
    torch.testing.assert_close(score_from_eta(I, torch.full((2,), 0.5), eta), -2 * eta)


def test_ot_coupling_is_optimal_assignment():
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(30, 2, generator=g, dtype=F64), torch.randn(30, 2, generator=g, dtype=F64) + 1
    a, b = couple(x0, x1, "ot")
    cost = torch.cdist(x0, x1).pow(2).numpy()
    r, c = linear_sum_assignment(cost)
    torch.testing.assert_close(((a - b) ** 2).sum(), torch.tensor(cost[r, c].sum(), dtype=F64))
    assert sorted(map(tuple, b.tolist())) == sorted(map(tuple, x1.tolist()))
    a2, b2 = couple(x0, x1, "sinkhorn", generator=g, reg=0.05)
    assert a2.shape == b2.shape == (30, 2)
    assert float(((a2 - b2) ** 2).sum(1).mean()) < 2.0 * float(cost[r, c].mean())
    assert couple(x0, x1, "independent")[1] is x1
    with pytest.raises(ValueError, match="coupling"):
        couple(x0, x1, "emd")
    with pytest.raises(ValueError, match="generator"):
        couple(x0, x1, "sinkhorn")
    with pytest.raises(ValueError, match="same shape"):
        couple(x0, x1[:5], "ot")


def test_loss_bad_inputs():
    I = Interpolant("linear", "none")
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="model must return"):
        interpolant_loss(I, lambda t, x: x[:, :1], x, x, torch.rand(4))
    with pytest.raises(ValueError, match="antithetic"):
        interpolant_loss(I, lambda t, x: x, x, x, torch.rand(4), antithetic=True)
    with pytest.raises(ValueError, match="field"):
        interpolant_loss(I, lambda t, x: x, x, x, torch.rand(4), field="s")
    assert np.isfinite(float(interpolant_loss(I, lambda t, x: x, x, x, torch.rand(4))))


def test_sinkhorn_small_reg_is_a_coupling_not_a_collapse():
    # measured on the first version: reg=1e-3 underflowed in the plain iteration and the returned
    # "plan" put its mass on a few pairs (mean pair cost 0.024 < exact OT cost 9.38, 54 of 256
    # distinct targets). Any coupling costs at least the exact OT cost; with the n pairs drawn with
    # replacement from a near-permutation plan ~ n (1 - 1/e) = 162 targets are distinct.
    g = torch.Generator().manual_seed(0)
    n = 256
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    x1 = 0.5 * torch.randn(n, 2, generator=g, dtype=F64) + torch.tensor([3.0, 0.0], dtype=F64)
    cost = torch.cdist(x0, x1).pow(2).numpy()
    r, c = linear_sum_assignment(cost)
    exact = float(cost[r, c].mean())
    a, b = couple(x0, x1, "sinkhorn", generator=torch.Generator().manual_seed(1), reg=1e-3)
    pair_cost = float(((a - b) ** 2).sum(1).mean())
    # the sampled mean's sd over 256 pairs is ~ 3% of the cost here: 0.85 is > 5 sd below
    assert pair_cost > 0.85 * exact, (pair_cost, exact)
    distinct = len({tuple(v) for v in b.tolist()})
    assert distinct > 128, distinct


def test_sinkhorn_refuses_a_plan_that_misses_its_marginals(monkeypatch):
    import ot

    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(16, 2, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)
    monkeypatch.setattr(ot, "sinkhorn", lambda a, b, M, reg, **kw: np.eye(len(a))[:, ::-1] * 0.5 / len(a))
    with pytest.raises(ValueError, match="marginals"):
        couple(x0, x1, "sinkhorn", generator=g, reg=1e-3)
