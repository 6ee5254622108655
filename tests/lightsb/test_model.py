"""LightSB model: plan, mixtures, drift, trajectories, training (genstat.lightsb.model)."""
import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

import genstat.lightsb as lsb
from genstat.lightsb import GaussianMixture, LightSB, cbw2_uvp, gaussian_eot, random_gaussian_eot
from genstat.mc import block_generator

from lightsb_helpers import random_gaussians


def random_model(d, k, eps, covariance="full", seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    m = LightSB(d, k, eps, covariance=covariance, dtype=dtype)
    with torch.no_grad():
        m.log_alpha.copy_(torch.randn(k, generator=g, dtype=dtype))
        m.r.copy_(2 * torch.randn(k, d, generator=g, dtype=dtype))
        m.log_s.copy_(0.5 * torch.randn(k, d, generator=g, dtype=dtype))
        if covariance == "full":
            m.lower.copy_(0.4 * torch.randn(k, d, d, generator=g, dtype=dtype))
    return m


def test_all_names_resolve():
    for name in lsb.__all__:
        assert getattr(lsb, name) is not None


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_plan_is_exp_xy_over_eps_times_v(covariance):
    # pi(y|x) = exp(x^T y / eps) v(y) / c(x): checks log_c, log_v and conditional() against each other
    m = random_model(3, 4, 0.7, covariance)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    lhs = m.conditional(x).log_prob(y)
    rhs = (x * y).sum(1) / m.epsilon + m.log_v(y) - m.log_c(x)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    # log_v against torch.distributions
    mix = MixtureSameFamily(Categorical(logits=m.log_alpha), MultivariateNormal(m.r, m.epsilon * m.S()))
    torch.testing.assert_close(m.log_v(y), mix.log_prob(y) + torch.logsumexp(m.log_alpha, 0), rtol=1e-10, atol=1e-10)


def test_mixture_moments_exact_and_sampled():
    m = random_model(2, 3, 0.5)
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    gm = m.conditional(x)
    assert gm.weights.shape == (2, 3) and gm.means.shape == (2, 3, 2) and gm.covariances.shape == (2, 3, 2, 2)
    torch.testing.assert_close(gm.weights.sum(1), torch.ones(2, dtype=torch.float64))
    # brute force second moment sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T
    w, mu, cov = gm.weights, gm.means, gm.covariances
    second = (w[..., None, None] * (cov + mu[..., :, None] * mu[..., None, :])).sum(1)
    mean = (w[..., None] * mu).sum(1)
    torch.testing.assert_close(gm.mean(), mean)
    torch.testing.assert_close(gm.covariance(), second - mean[:, :, None] * mean[:, None, :])
    n = 100_000
    ys = gm.sample(n, generator=block_generator(0, 0))
    assert ys.shape == (2, n, 2)
    se = torch.diagonal(gm.covariance(), dim1=-2, dim2=-1).sqrt() / math.sqrt(n)
    assert bool(((ys.mean(1) - gm.mean()).abs() < 5 * se).all())


def test_mixture_with_per_point_covariances_and_log_prob():
    g = torch.Generator().manual_seed(2)
    cov = torch.eye(2, dtype=torch.float64).repeat(3, 2, 1, 1) * torch.rand(3, 2, 1, 1, generator=g, dtype=torch.float64).add(0.5)
    means = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    logits = torch.randn(3, 2, generator=g, dtype=torch.float64)
    gm = GaussianMixture(logits, means, cov)
    ref = MixtureSameFamily(Categorical(logits=logits), MultivariateNormal(means, cov))
    y = torch.randn(3, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gm.log_prob(y), ref.log_prob(y))
    torch.testing.assert_close(gm.mean(), ref.mean)
    torch.testing.assert_close(torch.diagonal(gm.covariance(), dim1=-2, dim2=-1), ref.variance)
    assert gm.sample(4, generator=g).shape == (3, 4, 2)


def _log_h(m, x, t):
    # h(x, t) = int N(y | x, eps(1-t) I) exp(|y|^2/(2 eps)) v(y) dy, the paper's A_k(t), c_k with dense
    # matrices: log h = logsumexp_k [log alpha_k - log det(eps S_k)/2 - log det(eps(1-t) I)/2 - log det A_k/2
    #                                + c_k^T A_k^-1 c_k / 2 - r_k^T (eps S_k)^-1 r_k / 2] - |x|^2 / (2 eps (1-t))
    eps, d = m.epsilon, m.dim
    if t == 1.0:  # h(x, 1) = exp(|x|^2 / (2 eps)) v(x)
        return (x**2).sum(1) / (2 * eps) + m.log_v(x)
    tau = 1 - t
    eye = torch.eye(d, dtype=x.dtype)
    prec = torch.linalg.inv(eps * m.S())  # (K, d, d)
    A = t / (eps * tau) * eye + prec
    c = x.unsqueeze(1) / (eps * tau) + (prec @ m.r.unsqueeze(-1)).squeeze(-1)  # (n, K, d)
    quad_c = (c.unsqueeze(-2) @ torch.linalg.solve(A, c.unsqueeze(-1))).squeeze((-1, -2))
    quad_r = (m.r.unsqueeze(-2) @ prec @ m.r.unsqueeze(-1)).squeeze((-1, -2))
    ell = (m.log_alpha - 0.5 * torch.logdet(eps * m.S()) - 0.5 * d * math.log(eps * tau)
           - 0.5 * torch.logdet(A) + 0.5 * quad_c - 0.5 * quad_r)
    return torch.logsumexp(ell, dim=1) - (x**2).sum(1) / (2 * eps * tau)


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.9, 0.999, 1.0])
def test_drift_equals_autograd_of_log_potential(covariance, t):
    m = random_model(3, 4, 0.4, covariance, seed=3)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64).requires_grad_(True)
    grad, = torch.autograd.grad(_log_h(m, x, t).sum(), x)
    torch.testing.assert_close(m.drift(x.detach(), t), m.epsilon * grad, rtol=1e-8, atol=1e-8)


def test_drift_at_zero_is_conditional_mean_minus_x_and_vector_t():
    m = random_model(2, 3, 1.3, seed=5)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(m.drift(x, 0.0), m.conditional(x).mean() - x)
    t = torch.linspace(0, 0.9, 5, dtype=torch.float64)
    rows = torch.stack([m.drift(x[i:i + 1], float(t[i]))[0] for i in range(5)])
    torch.testing.assert_close(m.drift(x, t), rows)


def test_em_half_marginal_matches_bridge_within_stderr():
    m = random_model(2, 3, 0.5, seed=7)
    n = 20_000
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    bridge = m.sample_trajectory(x0, 2, method="bridge", generator=block_generator(1, 0))[1]
    em = m.sample_trajectory(x0, 200, method="em", generator=block_generator(2, 0))[100]
    for f in (lambda z: z, lambda z: z**2):
        a, b = f(bridge), f(em)
        se = torch.sqrt(a.var(0) / n + b.var(0) / n)
        assert bool(((a.mean(0) - b.mean(0)).abs() < 5 * se).all()), (a.mean(0), b.mean(0), se)


def test_trajectory_shapes_and_endpoints():
    m = random_model(2, 2, 0.2, seed=9)
    x0 = torch.zeros(7, 2, dtype=torch.float64)
    path = m.sample_trajectory(x0, 5, generator=block_generator(0, 0))
    assert path.shape == (6, 7, 2)
    torch.testing.assert_close(path[0], x0)
    assert m.sample(x0, 3, generator=block_generator(0, 0)).shape == (7, 3, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    m = LightSB(2, 2, 1.0, dtype=dtype)
    m.init_from(torch.randn(10, 2))
    x = torch.zeros(3, 2, dtype=dtype)
    assert m.drift(x, 0.5).dtype == dtype
    assert m.conditional(x).means.dtype == dtype
    assert m.sample_trajectory(x, 2, method="em", generator=torch.Generator()).dtype == dtype


def _cross_cov_error(model, e):
    C = e.A @ model.S()[0].detach().to(torch.float64)
    return float(torch.linalg.matrix_norm(C - e.cross_covariance) / torch.linalg.matrix_norm(e.cross_covariance))


def _fit_gaussian(d, eps, steps, seed=0, dtype=torch.float64):
    e = random_gaussian_eot(d, eps, seed=seed)  # rotated covariances, spectrum in [0.25, 4]
    m = LightSB(d, 1, eps, dtype=dtype)
    res = m.fit(e.sample_source, e.sample_target, steps=steps, batch_size=1024, generator=block_generator(seed, 0))
    return m, e, res


def test_fit_small_gaussian_fast():
    m, e, res = _fit_gaussian(2, 1.0, 300)
    assert res.losses.shape == (300,) and res.to_frame().shape == (300, 3)
    assert float(res.lrs.max()) == pytest.approx(1e-1)  # the K = 1 default
    out = cbw2_uvp(m, e)
    assert out.estimate < 0.3
    assert _cross_cov_error(m, e) < 0.06


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 16])
@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_fit_full_k1_gaussian(d, eps):
    m, e, _ = _fit_gaussian(d, eps, 1000)
    assert cbw2_uvp(m, e).estimate < 0.3
    assert _cross_cov_error(m, e) < 0.06


def test_fit_on_tensors_full_batch_and_diagonal_runs():
    e = gaussian_eot(*random_gaussians(2, 1), 1.0)
    g = block_generator(0, 0)
    x, y = e.sample_source(2000, g), e.sample_target(2000, g)
    m = LightSB(2, 4, 1.0, covariance="diagonal", dtype=torch.float64)
    res = m.fit(x, y, steps=100, lr=1e-2, generator=g)
    assert res.batch_size == 2000
    assert float(res.losses[-10:].mean()) < float(res.losses[:10].mean())


def test_bad_inputs():
    with pytest.raises(ValueError, match="epsilon"):
        LightSB(2, 1, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        LightSB(2, 1, float("inf"))
    with pytest.raises(ValueError, match="dim"):
        LightSB(0, 1, 1.0)
    with pytest.raises(ValueError, match="n_potentials"):
        LightSB(2, 0, 1.0)
    with pytest.raises(ValueError, match="covariance"):
        LightSB(2, 1, 1.0, covariance="banded")
    m = LightSB(2, 1, 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        m.conditional(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x must be finite"):
        m.drift(torch.tensor([[float("nan"), 0.0]]), 0.5)
    with pytest.raises(ValueError, match="t must lie"):
        m.drift(torch.zeros(1, 2), 1.5)
    with pytest.raises(ValueError, match="method"):
        m.sample_trajectory(torch.zeros(1, 2), 3, method="heun")
    with pytest.raises(ValueError, match="source must be finite"):
        m.fit(torch.full((5, 2), float("inf")), torch.zeros(5, 2), steps=1)
    with pytest.raises(ValueError, match=r"target must have shape \(n, 2\)"):
        m.fit(torch.zeros(5, 2), torch.zeros(5, 3), steps=1)
    with pytest.raises(TypeError, match="source"):
        m.fit([1, 2], torch.zeros(5, 2), steps=1)
    with pytest.raises(ValueError, match="steps"):
        m.fit(torch.zeros(5, 2), torch.zeros(5, 2), steps=0)
    with pytest.raises(ValueError, match="S must be symmetric positive definite"):
        m.set_parameters(S=-torch.eye(2).unsqueeze(0))


def test_epsilon_is_in_the_state_dict_and_checked_on_load():
    m = random_model(3, 2, 0.7)
    sd = m.state_dict()
    assert float(sd["_epsilon"]) == 0.7
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = LightSB(3, 2, 0.7, dtype=torch.float64)
    same.load_state_dict(sd)
    torch.testing.assert_close(same.conditional(x).mean(), m.conditional(x).mean())
    # another eps would silently give another plan from the same parameters: refused, naming both
    with pytest.raises(ValueError, match=r"saved with epsilon=0\.7 but this LightSB has epsilon=0\.5"):
        LightSB(3, 2, 0.5, dtype=torch.float64).load_state_dict(sd)
    # a float32 copy saves eps rounded to float32 (0.699999988) and still loads where eps = 0.7
    sd32 = random_model(3, 2, 0.7).float().state_dict()
    assert sd32["_epsilon"].dtype == torch.float32
    loaded = LightSB(3, 2, 0.7, dtype=torch.float64)
    loaded.load_state_dict(sd32)
    assert loaded.epsilon == 0.7 and float(loaded.state_dict()["_epsilon"]) == 0.7


def test_sampling_needs_a_generator():
    m = LightSB(2, 1, 1.0)
    x = torch.zeros(3, 2)
    with pytest.raises(TypeError, match="generator"):
        m.sample(x, generator=None)
    with pytest.raises(TypeError, match="generator"):
        m.conditional(x).sample(2, generator=None)
    for method in ("bridge", "em"):
        with pytest.raises(TypeError, match="generator"):
            m.sample_trajectory(x, 2, method=method)


def test_init_from_methods():
    y = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 1
    m = LightSB(3, 4, 0.5, dtype=torch.float64)
    m.init_from(y, generator=block_generator(0, 0))
    tau2 = 2.0 * float(y.var(0).mean())  # spread=2 default
    torch.testing.assert_close(m.S()[0], torch.eye(3, dtype=torch.float64) * tau2 / (tau2 + 0.5))
    # potential init: phi(y) = sum_k N(y | c_k, tau^2 I) / K, i.e. pi(.|x) has means S x + r with r = eps c / (tau^2 + eps)
    m.init_from(y, method="reference")
    torch.testing.assert_close(m.r, y[:4])
    torch.testing.assert_close(m.S(), torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    with pytest.raises(ValueError, match="method"):
        m.init_from(y, method="kmeans")
    with pytest.raises(ValueError, match="target_samples needs"):
        m.init_from(y[:2])
    # the learning-rate default scales with eps_s / sqrt(d) for mixtures, eps_s = eps / (s_x s_y) the
    # standardised eps: 3e-2 * 4 * eps_s / sqrt(16) = 3e-2 * eps_s at eps = 0.1
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(64, 16, generator=g), 3 * torch.randn(64, 16, generator=g)
    res = LightSB(16, 3, 0.1).fit(x, y, steps=4, warmup=0.0)
    sx, sy = float(x.var(0).mean().sqrt()), float(y.var(0).mean().sqrt())
    assert (res.source_scale, res.target_scale) == pytest.approx((sx, sy))
    assert float(res.lrs[0]) == pytest.approx(3e-2 * 0.1 / (sx * sy))


@pytest.mark.parametrize("eps", [0.01, 10.0])
@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_numerically_stable_at_extremes(eps, covariance):
    # d = 128, float32, points far out: every quantity stays finite (log-sum-exp throughout)
    d = 128
    g = torch.Generator().manual_seed(0)
    x = 5 * torch.randn(64, d, generator=g)
    y = 5 * torch.randn(64, d, generator=g)
    m = LightSB(d, 3, eps, covariance=covariance)
    m.init_from(y, generator=g)
    assert bool(torch.isfinite(m.loss(x, y)))
    gm = m.conditional(x)
    assert bool(torch.isfinite(gm.mean()).all() and torch.isfinite(gm.covariance()).all())
    for t in (0.0, 0.5, 1.0):
        assert bool(torch.isfinite(m.drift(x, t)).all())
    res = m.fit(x, y, steps=5, generator=g)
    assert bool(torch.isfinite(res.losses).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = random_model(4, 3, 0.5, seed=11)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mc = random_model(4, 3, 0.5, seed=11).to("cuda")
    torch.testing.assert_close(mc.drift(x.cuda(), 0.3).cpu(), m.drift(x, 0.3))
    torch.testing.assert_close(mc.conditional(x.cuda()).covariance().cpu(), m.conditional(x).covariance())
    gen = torch.Generator(device="cuda").manual_seed(0)
    assert mc.sample_trajectory(x.cuda(), 4, method="em", generator=gen).device.type == "cuda"
