"""Manifold datasets: sampling and exact noised scores against independent computations."""
import math

import numpy as np
import pytest
import scipy.special as sp
import torch
from torch.testing import assert_close

import genstat.datasets as ds
from genstat.datasets import LinearSubspace, Sphere, SwissRoll, make_manifold, random_frame
from genstat.datasets.manifolds import bessel_ratio

D64 = torch.float64


def test_all_names_resolve():
    from genstat.datasets import manifolds

    for name in manifolds.__all__:
        assert getattr(ds, name) is getattr(manifolds, name)


def test_random_frame_is_orthonormal_and_seeded():
    U = random_frame(7, 3, generator=torch.Generator().manual_seed(0))
    assert_close(U.T @ U, torch.eye(3, dtype=D64), rtol=0, atol=1e-12)
    assert_close(U, random_frame(7, 3, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)
    assert_close(random_frame(4, 2), torch.eye(4, 2, dtype=D64))
    with pytest.raises(ValueError, match="dim"):
        random_frame(2, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_score_matches_gaussian_closed_form(dtype):
    m = LinearSubspace(3, 8, scale=1.5, generator=torch.Generator().manual_seed(0))
    x = m.sample(50, torch.Generator().manual_seed(1), noise=0.2, dtype=dtype)
    assert x.dtype == dtype
    for sigma in (0.05, 0.2, 1.0):
        cov = m.covariance(sigma)
        expected = -x.double() @ torch.linalg.inv(cov)  # score of N(0, tau^2 P_T + sigma^2 I)
        tol = 1e-10 if dtype == D64 else 2e-4
        assert_close(m.score(x, sigma).double(), expected, rtol=tol, atol=tol * float(expected.abs().max()))
        assert m.score(x, sigma).dtype == dtype
    # per-point sigma
    sig = torch.full((50,), 0.3, dtype=dtype)
    assert_close(m.score(x, sig), m.score(x, 0.3))


def test_linear_sample_in_subspace_and_seeded():
    m = LinearSubspace(2, 5, generator=torch.Generator().manual_seed(0))
    x = m.sample(100, torch.Generator().manual_seed(3))
    assert_close(x @ m.projection, x, rtol=0, atol=1e-12)
    assert_close(x, m.sample(100, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    # the sample covariance matches tau^2 P_T within Monte Carlo error
    big = m.sample(20000, torch.Generator().manual_seed(4))
    assert float((big.T @ big / 20000 - m.projection).abs().max()) < 0.05


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_bessel_ratio_matches_scipy(k):
    kappa = torch.logspace(-5, 7, 300, dtype=D64)
    nu = (k - 1) / 2
    ref = sp.ive(nu + 1, kappa.numpy()) / sp.ive(nu, kappa.numpy())
    np.testing.assert_allclose(bessel_ratio(k, kappa).numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [1, 2, 7, 50, 199, 400, 401, 1000])
def test_bessel_ratio_matches_scipy_for_every_order(k):
    # issue 16: at k = 400 the old upward recurrence lost all accuracy just above its switch-over
    # (relative error 2.55 in the Sphere(400, 401) score at sigma = 0.033). Reference: scipy's ive ratio
    # wherever both values are normal floats; the switch-over (nu + 2)^2 lies inside the grid.
    nu = (k - 1) / 2
    kappa = np.concatenate([np.logspace(-6, 8, 400), np.linspace(1.0, 5.0 * (nu + 2.0) ** 2, 400)])
    num, den = sp.ive(nu + 1, kappa), sp.ive(nu, kappa)
    ok = (num > 1e-300) & (den > 1e-300) & np.isfinite(num) & np.isfinite(den)
    assert ok.sum() > 300
    got = bessel_ratio(k, torch.tensor(kappa[ok], dtype=D64)).numpy()
    np.testing.assert_allclose(got, num[ok] / den[ok], rtol=1e-10, atol=0)


def test_bessel_ratio_matches_mpmath_where_scipy_underflows():
    # I_nu(kappa) underflows scipy's ive for kappa << nu; 30-digit mpmath is the reference there.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    for k, kappa in [(1000, 1e-6), (1000, 3.0), (400, 0.5), (401, 1067.0), (5, 1e7)]:
        nu = (k - 1) / 2
        ref = float(mpmath.besseli(nu + 1, kappa) / mpmath.besseli(nu, kappa))
        got = float(bessel_ratio(k, torch.tensor([kappa], dtype=D64))[0])
        assert abs(got - ref) <= 1e-13 * ref, (k, kappa, got, ref)


def test_sphere_score_is_exact_in_high_dimension():
    # the case: S^400 in R^401 at sigma = 0.033, score from scipy's Bessel ratio (Tweedie).
    m = Sphere(400, 401, generator=torch.Generator().manual_seed(0))
    sigma = 0.033
    x = m.sample(64, torch.Generator().manual_seed(1), noise=sigma)
    y = x @ m.basis
    r = y.norm(dim=1).numpy()
    kappa = m.radius * r / sigma**2
    ratio = sp.ive(200.5, kappa) / sp.ive(199.5, kappa)
    den = torch.tensor(m.radius * ratio / r, dtype=D64)[:, None] * y @ m.basis.T
    ref = (den - x) / sigma**2
    got = m.score(x, sigma)
    assert float(((got - ref).norm(dim=1) / ref.norm(dim=1)).max()) < 1e-9


def _sphere_log_density_quadrature(y: np.ndarray, k: int, sigma: float) -> float:
    """log of the N(0, sigma^2) smoothing of the uniform law on S^k (k = 1, 2), by a fine grid."""
    if k == 1:
        th = np.linspace(0, 2 * np.pi, 20001)[:-1]
        pts = np.stack([np.cos(th), np.sin(th)], 1)
        w = np.full(len(th), 1.0 / len(th))
    else:
        th = (np.arange(300) + 0.5) * np.pi / 300
        ph = np.arange(600) * 2 * np.pi / 600
        T, P = np.meshgrid(th, ph, indexing="ij")
        pts = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1).reshape(-1, 3)
        w = (np.sin(T) * (np.pi / 300) * (2 * np.pi / 600) / (4 * np.pi)).reshape(-1)
    d2 = ((y[None] - pts) ** 2).sum(1)
    return float(sp.logsumexp(-d2 / (2 * sigma**2), b=w))


@pytest.mark.parametrize("k", [1, 2])
def test_sphere_score_matches_quadrature_gradient(k):
    sigma, h = 0.4, 1e-4
    m = Sphere(k, k + 1)  # axis-aligned: coordinates are the sphere's own
    y = np.array([[0.9, 0.3, -0.2][: k + 1], [0.2, -1.3, 0.5][: k + 1], [0.05, 0.02, 0.1][: k + 1]])
    score = m.score(torch.tensor(y), sigma).numpy()
    for i in range(len(y)):
        fd = np.zeros(k + 1)
        for j in range(k + 1):
            e = np.zeros(k + 1)
            e[j] = h
            fd[j] = (_sphere_log_density_quadrature(y[i] + e, k, sigma)
                     - _sphere_log_density_quadrature(y[i] - e, k, sigma)) / (2 * h)
        np.testing.assert_allclose(score[i], fd, rtol=1e-5, atol=1e-5)


def test_sphere_sampling_rotation_and_normal_score():
    m = Sphere(2, 10, radius=2.0, generator=torch.Generator().manual_seed(0))
    x = m.sample(200, torch.Generator().manual_seed(1))
    assert_close(x.norm(dim=1), torch.full((200,), 2.0, dtype=D64))
    P = m.basis @ m.basis.T
    assert_close(x @ P, x, rtol=0, atol=1e-12)
    # off the sphere's plane the score is exactly -z / sigma^2 in the normal directions
    z = torch.randn(5, 10, dtype=D64, generator=torch.Generator().manual_seed(2))
    s = m.score(z, 0.3)
    assert_close(s - s @ P, -(z - z @ P) / 0.09)


def test_swiss_roll_score_matches_brute_force():
    sigma = 0.5
    m = SwissRoll(3, height=4.0)
    x = m.sample(6, torch.Generator().manual_seed(0), noise=sigma)
    # brute force: 2-D midpoint grid over (t, h) and autograd of the log-sum-exp
    t = m.t_low + (m.t_high - m.t_low) * (torch.arange(3000, dtype=D64) + 0.5) / 3000
    h = 4.0 * (torch.arange(100, dtype=D64) + 0.5) / 100
    T, H = torch.meshgrid(t, h, indexing="ij")
    pts = torch.stack([T * torch.cos(T), H, T * torch.sin(T)], -1).reshape(-1, 3)
    xr = x.clone().requires_grad_(True)
    lp = torch.logsumexp(-torch.cdist(xr, pts).pow(2) / (2 * sigma**2), 1).sum()
    ref = torch.autograd.grad(lp, xr)[0]
    assert_close(m.score(x, sigma), ref, rtol=1e-4, atol=1e-4)


def test_make_manifold_and_errors():
    assert isinstance(make_manifold("linear", 2, 4), LinearSubspace)
    assert isinstance(make_manifold("swiss_roll", 2, 5), SwissRoll)
    with pytest.raises(ValueError, match="name must be one of"):
        make_manifold("klein_bottle", 2, 4)
    m = Sphere(2, 4)
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        m.score(x, 0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 4\)"):
        m.score(torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match="ambient_dim"):
        Sphere(3, 3)
    with pytest.raises(TypeError, match="generator"):
        m.sample(3, None)
    assert not math.isnan(float(m.score(x, 0.1).sum()))  # the origin is handled


def test_anisotropic_subspace_score_is_the_gaussian_score():
    scales = [2.0, 1.0, 0.3, 0.1]
    m = LinearSubspace(4, 12, scale=scales, generator=torch.Generator().manual_seed(0))
    sigma = 0.05
    x = m.sample(200, torch.Generator().manual_seed(1), noise=sigma)
    assert_close(m.score(x, sigma), -x @ torch.linalg.inv(m.covariance(sigma)), rtol=1e-10, atol=1e-10)
    # the sample spread along each frame direction is its scale
    w = m.sample(40000, torch.Generator().manual_seed(2)) @ m.basis
    assert_close(w.std(0), torch.tensor(scales, dtype=D64), rtol=0.02, atol=0)
    with pytest.raises(ValueError, match="scale must be"):
        LinearSubspace(3, 5, scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="scale must be"):
        LinearSubspace(2, 5, scale=[1.0, -2.0])


def _torus_log_density(x: np.ndarray, m, sigma: float) -> np.ndarray:
    # p_sigma factorises: per circle of radius r in its plane (polar angle integrated in closed form),
    # (2 pi sigma^2)^-1 exp(-(rho^2 + r^2) / (2 sigma^2)) I_0(r rho / sigma^2); Gaussian off the 2k-plane.
    U = m.basis.numpy()
    y = x @ U
    perp = x - y @ U.T
    out = -(perp**2).sum(1) / (2 * sigma**2) - (m.ambient_dim - 2 * m.dim) / 2 * np.log(2 * np.pi * sigma**2)
    for i, r in enumerate(m.radii.numpy()):
        rho = np.linalg.norm(y[:, 2 * i: 2 * i + 2], axis=1)
        kap = r * rho / sigma**2
        out += -np.log(2 * np.pi * sigma**2) - (rho - r) ** 2 / (2 * sigma**2) + np.log(sp.i0e(kap))
    return out


@pytest.mark.parametrize("sigma", [0.02, 0.3, 2.0])
def test_flat_torus_score_matches_its_closed_form_density(sigma):
    from genstat.datasets import FlatTorus

    m = FlatTorus(2, 5, radii=[1.0, 0.4], generator=torch.Generator().manual_seed(0))
    x = m.sample(50, torch.Generator().manual_seed(1), noise=sigma)
    h = 1e-5 * max(sigma, 0.1)
    xn = x.numpy()
    fd = np.stack([(_torus_log_density(xn + h * e, m, sigma) - _torus_log_density(xn - h * e, m, sigma)) / (2 * h)
                   for e in np.eye(5)], 1)
    np.testing.assert_allclose(m.score(x, sigma).numpy(), fd, rtol=1e-6, atol=1e-6 / sigma)
    # the clean points lie on the torus: each circle's coordinates have their radius
    y = (m.sample(10, torch.Generator().manual_seed(2)) @ m.basis).reshape(10, 2, 2).norm(dim=2)
    assert_close(y, torch.tensor([1.0, 0.4], dtype=D64).expand(10, 2))


def test_clifford_torus_and_make_manifold():
    from genstat.datasets import FlatTorus

    m = make_manifold("torus", 2, 4)
    assert isinstance(m, FlatTorus) and m.dim == 2
    x = m.sample(100, torch.Generator().manual_seed(0))
    assert_close(x.norm(dim=1), torch.ones(100, dtype=D64))
    with pytest.raises(ValueError, match="ambient_dim >= 2"):
        FlatTorus(3, 5)
