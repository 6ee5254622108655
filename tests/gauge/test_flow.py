"""Probability flow with non-conservative scores: a gauge term keeps likelihoods and samples exact, a plain
rotation does not (Horvat & Pfister 2024, section 3), on a non-Gaussian density, for VE and VP."""
import math

import pytest
import torch

from genstat.datasets import GaussianMixture
from genstat.gauge.flow import ProbabilityFlow

D64 = torch.float64
W = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D64)


def _p0():
    # three anisotropic, unequal components: far from Gaussian, and no symmetry that would make W x a gauge term
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], dtype=D64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.1]]), torch.tensor([[0.1, 0.0], [0.0, 0.5]]),
                        torch.tensor([[0.2, -0.05], [-0.05, 0.15]])]).to(D64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=D64), means, covs)


def _pt(flow: ProbabilityFlow, t: float) -> GaussianMixture:
    return _p0().noised(flow.alpha(t), flow.noise_sd(t))


def _fields(kind):
    flow = ProbabilityFlow(lambda x, t: x, kind)  # only for alpha / noise_sd
    exact = lambda x, t: _pt(flow, t).score(x)  # noqa: E731
    return {
        "exact": exact,
        "gauge": lambda x, t: exact(x, t) + exact(x, t) @ W.T,     # r = W grad log p_t: div(p_t r) = 0
        # r = W x / (alpha_t^2 + sd_t^2), scaled like the score: not a gauge term for this p_t
        "rotation": lambda x, t: exact(x, t) + x @ W.T / (flow.alpha(t) ** 2 + flow.noise_sd(t) ** 2),
    }


TIMES = {"ve": (0.01, 20.0), "vp": (1e-3, 1.0)}


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_log_likelihood_is_exact_with_a_gauge_term_and_not_with_a_rotation(kind):
    t0, t1 = TIMES[kind]
    x = _pt(ProbabilityFlow(lambda x, t: x, kind), t0).sample(32, torch.Generator().manual_seed(0))
    errs = {}
    for name, score in _fields(kind).items():
        flow = ProbabilityFlow(score, kind)
        res = flow.log_likelihood_path(x, t0, t1, n_steps=100)
        ll = _pt(flow, t1).log_prob(res.x) + res.delta_log_prob
        errs[name] = float((ll - _pt(flow, t0).log_prob(x)).abs().max())
    assert errs["exact"] < 1e-4 and errs["gauge"] < 1e-4, errs
    assert errs["rotation"] > 0.5, errs


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_reverse_sde_samples_with_a_gauge_term(kind):
    t0, t1 = TIMES[kind]
    base = ProbabilityFlow(lambda x, t: x, kind)
    target = _pt(base, t0)
    n = 3000
    x1 = _pt(base, t1).sample(n, torch.Generator().manual_seed(1))
    out = {}
    for name, score in _fields(kind).items():
        x = ProbabilityFlow(score, kind).sample_sde(x1, t1, t0, n_steps=250, generator=torch.Generator().manual_seed(2))
        # first and second moments against the exact ones, in units of their Monte Carlo standard error
        stats = torch.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], 1)
        m, C = target.mean, target.covariance + torch.outer(target.mean, target.mean)
        exact = torch.stack([m[0], m[1], C[0, 0], C[0, 1], C[1, 1]])
        z = (stats.mean(0) - exact) / (stats.std(0) / math.sqrt(n))
        out[name] = float(z.abs().max())
    assert out["exact"] < 5 and out["gauge"] < 5, out   # Euler-Maruyama bias is far below 5 se at 250 steps
    assert out["rotation"] > 10, out


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind must be"):
        ProbabilityFlow(lambda x, t: x, "sub-vp")
    flow = ProbabilityFlow(lambda x, t: x[:, :1], "ve")
    with pytest.raises(ValueError, match="score must map"):
        flow.log_likelihood_path(torch.zeros(2, 2, dtype=D64), 0.1, 1.0, n_steps=2)
    with pytest.raises(ValueError, match="distinct times"):
        ProbabilityFlow(lambda x, t: x, "ve").log_likelihood_path(torch.zeros(2, 2), 1.0, 1.0)
    with pytest.raises(TypeError, match="generator"):
        ProbabilityFlow(lambda x, t: x, "vp").sample_sde(torch.zeros(2, 2), 1.0, 0.0, generator=None)
