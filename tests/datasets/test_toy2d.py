"""Toy 2-D samplers and Gaussian mixtures: exact log-density (scipy), moments, reproducibility."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import genstat.datasets.toy2d as toy
from genstat.datasets import TOY2D_NAMES, GaussianMixture, eight_gaussians_mixture, toy2d_sampler


def test_all_names_resolve():
    for name in toy.__all__:
        assert getattr(toy, name, None) is not None, name


def mixture(dtype=torch.float64):
    return GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=dtype),
                           torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 2.0]], dtype=dtype),
                           torch.tensor([[[1.0, 0.4], [0.4, 0.8]], [[0.3, 0.0], [0.0, 0.2]],
                                         [[0.5, -0.2], [-0.2, 1.5]]], dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_matches_scipy(dtype):
    gm = mixture(dtype)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=dtype) * 2
    xn = x.double().numpy()
    ref = np.log(sum(float(w) * stats.multivariate_normal(m.double().numpy(), c.double().numpy()).pdf(xn)
                     for w, m, c in zip(gm.weights, gm.means, gm.covariances)))
    out = gm.log_prob(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), torch.as_tensor(ref), rtol=1e-5 if dtype == torch.float32 else 1e-10,
                               atol=1e-5 if dtype == torch.float32 else 1e-10)
    xr = x.double().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mixture().log_prob(xr).sum(), xr)
    torch.testing.assert_close(mixture().score(x.double()), g)


def test_sample_moments_within_stderr():
    gm = mixture()
    x = gm.sample(40_000, torch.Generator().manual_seed(1))
    se = x.std(0) / math.sqrt(x.shape[0])
    assert bool(((x.mean(0) - gm.mean).abs() < 5 * se).all())
    c = x - x.mean(0)
    prods = c[:, :, None] * c[:, None, :]
    assert bool(((prods.mean(0) - gm.covariance).abs() < 5 * prods.std(0) / math.sqrt(x.shape[0])).all())


def test_eight_gaussians_mixture_matches_sampler():
    gm = eight_gaussians_mixture()
    torch.testing.assert_close(gm.mean, torch.zeros(2), atol=1e-6, rtol=0)
    # covariance: radius^2 / 2 + variance on each axis
    torch.testing.assert_close(gm.covariance, (12.5 + math.sqrt(0.1)) * torch.eye(2), atol=1e-5, rtol=0)
    x = toy.eight_gaussians(20_000, torch.Generator().manual_seed(2))
    assert float(gm.log_prob(x).mean()) == pytest.approx(-0.5 * 2 * math.log(2 * math.pi * math.e * math.sqrt(0.1))
                                                         - math.log(8), abs=0.05)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_samplers_seeded_and_shaped(name):
    s = toy2d_sampler(name)
    a = s(500, torch.Generator().manual_seed(3))
    b = s(500, torch.Generator().manual_seed(3))
    c = s(500, torch.Generator().manual_seed(4))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(torch.isfinite(a).all()) and float(a.abs().max()) < 15
    assert toy2d_sampler(name, dtype=torch.float64)(3, torch.Generator()).dtype == torch.float64


def test_checkerboard_and_moons_supports():
    x = toy.checkerboard(4000, torch.Generator().manual_seed(5))
    cells = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2
    assert bool((cells == 0).all())  # only one colour of the board
    m = toy.moons(4000, torch.Generator().manual_seed(6), noise=0.0, scale=1.0, shift=0.0, style="sklearn")
    d_outer = ((m**2).sum(1).sqrt() - 1).abs()
    d_inner = (((m - torch.tensor([1.0, 0.5])) ** 2).sum(1).sqrt() - 1).abs()
    assert float(torch.minimum(d_outer, d_inner).max()) < 1e-5  # points lie on the two unit half circles


def test_moons_styles_and_floor():
    from genstat.metrics import wasserstein2

    g = torch.Generator().manual_seed(7)
    for style in toy.MOONS_STYLES:
        x = toy.moons(1000, g, style=style)
        assert x.shape == (1000, 2)
    # torchdyn layout: shift along (1, 1) only, so x - y is noise-free given the angle
    a = toy.moons(1000, g, noise=0.2, scale=1.0, shift=0.0)
    b = toy.moons(1000, g, noise=0.2, scale=1.0, shift=0.0)
    assert wasserstein2(a, b).estimate < 0.05
    with pytest.raises(ValueError, match="style"):
        toy.moons(3, g, style="nope")


def test_bad_inputs():
    with pytest.raises(ValueError, match="name"):
        toy2d_sampler("swissroll")
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.ones(2), torch.zeros(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -torch.ones(1))
    with pytest.raises(ValueError, match="covariances must have shape"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.ones(1, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        mixture().log_prob(torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="n must be"):
        toy.moons(-1, torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        toy.moons(3, None)


def test_eight_gaussians_sampler_draws_from_the_mixture_exactly():
    for kw in ({}, {"radius": 2.0, "variance": 0.5, "dtype": torch.float64}):
        for _ in range(2):  # the second call uses the cached mixture
            x = toy.eight_gaussians(50, torch.Generator().manual_seed(4), **kw)
            y = eight_gaussians_mixture(**kw).sample(50, torch.Generator().manual_seed(4))
            assert torch.equal(x, y)


def test_noised_mixture_is_the_law_of_alpha_x_plus_noise():
    gm = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                         torch.tensor([[-1.0, 2.0], [2.0, 0.0]], dtype=torch.float64),
                         torch.tensor([[0.5, 0.2], [0.1, 1.0]], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    n = 200_000
    y = 0.6 * gm.sample(n, g) + 0.8 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    q = gm.noised(0.6, 0.8)
    # moments within 5 standard errors
    assert float(((y.mean(0) - q.mean) / (y.std(0) / n**0.5)).abs().max()) < 5
    torch.testing.assert_close(q.covariance, 0.36 * gm.covariance + 0.64 * torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise_sd >= 0"):
        gm.noised(1.0, -0.1)
