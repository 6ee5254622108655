"""Interpolant coefficients: boundary values, closed-form derivatives vs autograd, targets vs d/dt x_t."""
import math

import pytest
import torch

import genstat.interpolants as gi
from genstat.interpolants import GAMMAS, PATHS, Interpolant
from genstat.interpolants.paths import _autograd_derivative

F64 = torch.float64


def _valid(path, gamma):
    return not (path == "mirror" and gamma == "none")


CASES = [(p, g) for p in PATHS for g in GAMMAS if _valid(p, g)]


def test_all_names_resolve():
    for name in gi.__all__:
        assert getattr(gi, name, None) is not None, name


@pytest.mark.parametrize("path,gamma", CASES)
def test_boundary_values(path, gamma):
    I = Interpolant(path, gamma, a=2.0 if gamma == "scaled_brownian" else 1.0)
    t0, t1 = torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)
    one, zero = torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64)
    torch.testing.assert_close(I.alpha(t0), one)
    torch.testing.assert_close(I.beta(t1), one)
    torch.testing.assert_close(I.alpha(t1), zero, atol=1e-15, rtol=0)
    torch.testing.assert_close(I.beta(t0), zero, atol=1e-15, rtol=0)
    torch.testing.assert_close(I.gamma(t0), zero, atol=1e-15, rtol=0)
    torch.testing.assert_close(I.gamma(t1), zero, atol=1e-15, rtol=0)
    inner = torch.linspace(0.05, 0.95, 7, dtype=F64)
    if gamma != "none":
        assert bool((I.gamma(inner) > 0).all())


@pytest.mark.parametrize("path,gamma", CASES)
def test_derivatives_match_autograd(path, gamma):
    I = Interpolant(path, gamma, a=0.7 if gamma == "scaled_brownian" else 1.0)
    t = torch.linspace(0.013, 0.987, 41, dtype=F64)
    for f, df in ((I.alpha, I.dalpha), (I.beta, I.dbeta), (I.gamma, I.dgamma)):
        torch.testing.assert_close(df(t), _autograd_derivative(f, t), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(I.gamma_dgamma(t), I.gamma(t) * I.dgamma(t), rtol=1e-10, atol=1e-12)


def test_gamma_dgamma_finite_at_ends():
    for g in ("brownian", "scaled_brownian"):
        I = Interpolant("linear", g, a=3.0 if g == "scaled_brownian" else 1.0)
        v = I.gamma_dgamma(torch.tensor([0.0, 1.0], dtype=F64))
        torch.testing.assert_close(v, torch.tensor([0.5, -0.5], dtype=F64) * (3.0 if g == "scaled_brownian" else 1.0))


def test_custom_callables_autograd_derivatives():
    I = Interpolant(alpha=lambda t: (1 - t) ** 2, beta=lambda t: 1 - (1 - t) ** 2, gamma=lambda t: t * (1 - t) ** 2)
    t = torch.linspace(0.1, 0.9, 9, dtype=F64)
    torch.testing.assert_close(I.dalpha(t), -2 * (1 - t))
    torch.testing.assert_close(I.dbeta(t), 2 * (1 - t))
    torch.testing.assert_close(I.dgamma(t), (1 - t) ** 2 - 2 * t * (1 - t))
    assert I.path == "custom" and I.has_noise


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_velocity_target_is_time_derivative(path, dtype):
    """The b target alpha' x0 + beta' x1 + gamma' z equals d/dt x_t at fixed (x0, x1, z)."""
    I = Interpolant(path)
    g = torch.Generator().manual_seed(0)
    x0, x1, z = (torch.randn(6, 3, generator=g, dtype=F64) for _ in range(3))
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    h = 1e-6
    xp = I.interpolate(x0, x1, t + h, z)
    xm = I.interpolate(x0, x1, t - h, z)
    _, target = I.sample_pair_target(x0.to(dtype), x1.to(dtype), t.to(dtype), z.to(dtype), field="b")
    assert target.dtype == dtype
    x0e = x1 if path == "mirror" else x0
    torch.testing.assert_close(target.double(), (xp - xm) / (2 * h), rtol=1e-4 if dtype == F64 else 1e-4,
                               atol=1e-6 if dtype == F64 else 1e-5)
    torch.testing.assert_close(I.interpolate(x0e, x1, torch.zeros(6, dtype=F64), z), x0e)
    torch.testing.assert_close(I.interpolate(x0e, x1, torch.ones(6, dtype=F64), z), x1)


def test_eta_target_and_one_sided():
    g = torch.Generator().manual_seed(1)
    x0, x1, z = (torch.randn(4, 2, generator=g) for _ in range(3))
    t = torch.full((4,), 0.3)
    assert torch.equal(Interpolant("linear").sample_pair_target(x0, x1, t, z, field="eta")[1], z)
    assert torch.equal(Interpolant("one_sided_linear").sample_pair_target(x0, x1, t, field="eta")[1], x0)
    assert torch.equal(Interpolant("trig").sample_pair_target(x0, x1, t, z, field="x1")[1], x1)
    with pytest.raises(ValueError, match="eta"):
        Interpolant("linear", "none").sample_pair_target(x0, x1, t, field="eta")


def test_bad_inputs():
    I = Interpolant("linear")
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="path"):
        Interpolant("nope")
    with pytest.raises(ValueError, match="gamma"):
        Interpolant("linear", "nope")
    with pytest.raises(ValueError, match="a must"):
        Interpolant("linear", "scaled_brownian", a=-1.0)
    with pytest.raises(ValueError, match="mirror"):
        Interpolant("mirror", "none")
    with pytest.raises(ValueError, match="alpha and beta"):
        Interpolant(alpha=lambda t: 1 - t)
    with pytest.raises(ValueError, match="x0 must have the shape"):
        I.interpolate(torch.zeros(3, 3), x, 0.5, x)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        I.interpolate(x, x, torch.tensor([0.1, 1.5, 0.2]), x)
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        I.interpolate(x, x, torch.zeros(4), x)
    with pytest.raises(ValueError, match="z must have the shape"):
        I.interpolate(x, x, 0.5, None)
    with pytest.raises(ValueError, match="field"):
        I.sample_pair_target(x, x, 0.5, x, field="velocity")
    assert math.isfinite(float(I.dgamma(torch.tensor(0.0))))


def test_a_is_refused_where_it_would_be_ignored():
    # the first version took a=3 with gamma="brownian" and silently used a=1
    for g in ("brownian", "quadratic", "none", None):
        with pytest.raises(ValueError, match="scaled_brownian"):
            Interpolant("linear", g, a=3.0)
    torch.testing.assert_close(Interpolant("linear", "scaled_brownian", a=4.0).gamma(torch.tensor([0.5], dtype=F64)),
                               torch.tensor([1.0], dtype=F64))
