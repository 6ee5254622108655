"""Exact Gaussian-mixture fields: they solve the transport equation and match the marginal law of x_t."""
import pytest
import torch

from genstat.datasets import GaussianMixture
from genstat.interpolants import Interpolant, exact_fields

F64 = torch.float64


def endpoints():
    src = GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[1.0, -1.0], [-1.0, 0.5]], dtype=F64),
                          torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.8]]], dtype=F64))
    tgt = GaussianMixture(torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([[3.0, 0.0], [-2.0, 1.0]], dtype=F64),
                          torch.tensor([0.5, 0.2], dtype=F64))
    return src, tgt


def std_normal():
    return GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.ones(1, dtype=F64))


PATHS = [("linear", "brownian"), ("linear", "none"), ("trig", "quadratic"), ("encdec", "sin2"),
         ("mirror", "brownian"), ("one_sided_trig", "none"), ("linear", "scaled_brownian")]


@pytest.mark.parametrize("path,gamma", PATHS)
def test_transport_equation(path, gamma):
    """d/dt log rho_t + div b + b . grad log rho_t = 0 (continuity equation, paper eq. 2.9)."""
    I = Interpolant(path, gamma, a=0.5 if gamma == "scaled_brownian" else 1.0)
    src, tgt = endpoints()
    F = exact_fields(I, std_normal() if I.one_sided else src, tgt)
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(12, 2, generator=g, dtype=F64)
    t = torch.linspace(0.07, 0.93, 12, dtype=F64)
    h = 1e-5
    dlogp = (F.log_prob(t + h, x) - F.log_prob(t - h, x)) / (2 * h)
    xr = x.clone().requires_grad_(True)
    b = F.velocity(t, xr)
    div = sum(torch.autograd.grad(b[:, i].sum(), xr, retain_graph=True)[0][:, i] for i in range(2))
    lp = F.log_prob(t, xr)
    (score_ad,) = torch.autograd.grad(lp.sum(), xr)
    torch.testing.assert_close(F.score(t, x), score_ad, rtol=1e-8, atol=1e-10)
    resid = dlogp + div.detach() + (b.detach() * F.score(t, x)).sum(1)
    torch.testing.assert_close(resid, torch.zeros_like(resid), atol=1e-6, rtol=0)


def test_marginal_matches_interpolated_samples():
    I = Interpolant("trig", "brownian")
    src, tgt = endpoints()
    F = exact_fields(I, src, tgt)
    g = torch.Generator().manual_seed(3)
    n = 40_000
    x0, x1 = src.sample(n, g), tgt.sample(n, g)
    z = torch.randn(n, 2, generator=g, dtype=F64)
    xt = I.interpolate(x0, x1, 0.4, z)
    m = F.marginal(0.4)
    se = xt.std(0) / n**0.5
    assert bool(((xt.mean(0) - m.mean).abs() < 5 * se).all())
    # log-density of x_t: the marginal mixture equals log_prob
    torch.testing.assert_close(m.log_prob(xt[:50]), F.log_prob(torch.full((50,), 0.4, dtype=F64), xt[:50]))


def test_endpoint_laws():
    src, tgt = endpoints()
    F = exact_fields(Interpolant("linear"), src, tgt)
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(F.log_prob(torch.zeros(5, dtype=F64), x), src.log_prob(x))
    torch.testing.assert_close(F.log_prob(torch.ones(5, dtype=F64), x), tgt.log_prob(x))
    torch.testing.assert_close(F.score(torch.ones(5, dtype=F64), x), tgt.score(x))


def test_gaussian_closed_form():
    """Single Gaussians: b = alpha' m0 + beta' m1 + (a a' C0 + b b' C1 + g g' I) C_t^{-1}(x - m_t)."""
    m0, m1 = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([-1.0, 0.0], dtype=F64)
    C0 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    C1 = torch.tensor([[0.3, 0.0], [0.0, 0.6]], dtype=F64)
    src = GaussianMixture(torch.ones(1, dtype=F64), m0[None], C0[None])
    tgt = GaussianMixture(torch.ones(1, dtype=F64), m1[None], C1[None])
    I = Interpolant("linear", "brownian")
    F = exact_fields(I, src, tgt)
    t, x = 0.3, torch.tensor([[0.5, -0.5]], dtype=F64)
    a, b, g2 = 0.7, 0.3, 0.21
    Ct = a * a * C0 + b * b * C1 + g2 * torch.eye(2, dtype=F64)
    K = -a * C0 + b * C1 + 0.5 * (1 - 2 * t) * torch.eye(2, dtype=F64)
    mt = a * m0 + b * m1
    expect = -m0 + m1 + K @ torch.linalg.solve(Ct, x[0] - mt)
    torch.testing.assert_close(F.velocity(torch.tensor([t], dtype=F64), x)[0], expect)
    torch.testing.assert_close(F.eta(torch.tensor([t], dtype=F64), x)[0],
                               g2**0.5 * torch.linalg.solve(Ct, x[0] - mt))


def test_bad_inputs():
    src, tgt = endpoints()
    with pytest.raises(TypeError, match="interpolant"):
        exact_fields("linear", src, tgt)
    with pytest.raises(TypeError, match="target"):
        exact_fields(Interpolant(), src, None)
    F = exact_fields(Interpolant(), src, tgt)
    with pytest.raises(ValueError, match="x must have shape"):
        F.velocity(torch.zeros(3, dtype=F64), torch.zeros(3, 3, dtype=F64))


@pytest.mark.parametrize("path", ["one_sided_linear", "one_sided_trig"])
def test_noise_free_one_sided_eta_is_the_latent_posterior_mean(path):
    # measured on the first version: eta was identically 0 on these paths (it used gamma = 0), and
    # score_from_eta(eta) missed the score by 2.05. Here x_t = alpha x0 + beta x1 with x0 ~ N(0, I),
    # x1 ~ N(m1, C1): E[x0 | x_t = x] = alpha C_t^{-1} (x - beta m1), C_t = alpha^2 I + beta^2 C1.
    from genstat.interpolants import score_from_eta

    m1 = torch.tensor([[1.0, -2.0]], dtype=F64)
    C1 = torch.tensor([[[0.5, 0.2], [0.2, 0.8]]], dtype=F64)
    src = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.ones(1, dtype=F64))
    tgt = GaussianMixture(torch.ones(1, dtype=F64), m1, C1)
    I = Interpolant(path)
    F = exact_fields(I, src, tgt)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g, dtype=F64) * 0.9 + 0.05
    x = torch.randn(64, 2, generator=g, dtype=F64)
    a, b = I.alpha(t)[:, None, None], I.beta(t)[:, None, None]
    Ct = a**2 * torch.eye(2, dtype=F64) + b**2 * C1
    want = (a * torch.linalg.solve(Ct, (x - b[..., 0] * m1)[..., None]))[..., 0]
    torch.testing.assert_close(F.eta(t, x), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(score_from_eta(I, t, F.eta(t, x)), F.score(t, x), rtol=1e-10, atol=1e-12)


def test_eta_with_noise_and_undefined_eta():
    from genstat.interpolants import score_from_eta

    g1 = GaussianMixture(torch.ones(2, dtype=F64) / 2, torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=F64),
                         torch.full((2,), 0.3, dtype=F64))
    I = Interpolant("linear", "brownian")
    F = exact_fields(I, g1, g1)
    t = torch.full((5,), 0.3, dtype=F64)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(score_from_eta(I, t, F.eta(t, x)), F.score(t, x), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="eta needs"):
        exact_fields(Interpolant("linear", "none"), g1, g1).eta(t, x)
