"""GeneralizedGaussian against scipy.stats.gennorm (float64, 1e-10) and sampling checks."""
import math

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as st
import torch

from estimators.td import GeneralizedGaussian, gammaincinv, ggd_excess_kurtosis
from genstat.mc import sample_distribution

BETAS = [0.5, 1.0, 2.0, 4.0]
F64 = torch.float64


def _dist(beta, loc=0.3, scale=1.7, dtype=F64):
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    return GeneralizedGaussian(t(loc), t(scale), t(beta))


@pytest.mark.parametrize("beta", BETAS)
def test_matches_scipy_gennorm(beta):
    d, ref = _dist(beta), st.gennorm(beta, loc=0.3, scale=1.7)
    x = torch.linspace(-25, 25, 801, dtype=F64)
    xn = x.numpy()
    # log densities grow like |x|^beta: compare relative to their size
    torch.testing.assert_close(d.log_prob(x), torch.from_numpy(ref.logpdf(xn)), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(d.cdf(x), torch.from_numpy(ref.cdf(xn)), rtol=1e-10, atol=1e-14)
    q = torch.tensor([1e-12, 1e-6, 0.01, 0.25, 0.5, 0.75, 0.99, 1 - 1e-9], dtype=F64)
    torch.testing.assert_close(d.icdf(q), torch.from_numpy(ref.ppf(q.numpy())), rtol=1e-10, atol=1e-10)
    mean, var, _, kurt = ref.stats(moments="mvsk")
    assert abs(float(d.mean) - mean) < 1e-12
    assert abs(float(d.variance) - var) < 1e-10 * var
    assert abs(float(d.excess_kurtosis) - kurt) < 1e-10
    assert abs(float(d.entropy()) - ref.entropy()) < 1e-10


@pytest.mark.parametrize("beta, var, kurt", [(0.5, 120.0, 22.2), (1.0, 2.0, 3.0), (2.0, 0.5, 0.0), (4.0, 0.338, -0.81)])
def test_reference_moments(beta, var, kurt):
    # REFERENCE.md §6 for alpha = 1 (rounded there to 3 digits)
    d = _dist(beta, 0.0, 1.0)
    assert float(d.variance) == pytest.approx(var, rel=2e-3)
    assert float(ggd_excess_kurtosis(torch.tensor(beta, dtype=F64))) == pytest.approx(kurt, abs=6e-3)


@pytest.mark.parametrize("beta", BETAS)
def test_sampling_passes_ks(beta):
    d = _dist(beta)
    x = d.sample((20000,), generator=torch.Generator().manual_seed(11))
    assert x.dtype == F64 and x.shape == (20000,)
    assert st.kstest(x.numpy(), st.gennorm(beta, loc=0.3, scale=1.7).cdf).pvalue > 1e-3
    # through the engine's helper (uses icdf)
    y = sample_distribution(d, 5000, torch.Generator().manual_seed(3))
    assert st.kstest(y.numpy(), st.gennorm(beta, loc=0.3, scale=1.7).cdf).pvalue > 1e-3


def test_sampling_reproducible_and_batched():
    d = GeneralizedGaussian(torch.zeros(3), torch.ones(3), torch.tensor([0.5, 1.0, 4.0]))
    a = d.sample((7,), generator=torch.Generator().manual_seed(0))
    b = d.sample((7,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (7, 3) and a.dtype == torch.float32
    assert d.expand((2, 3)).sample(generator=torch.Generator().manual_seed(0)).shape == (2, 3)


def test_sampling_rejects_a_non_generator():
    d = GeneralizedGaussian(torch.zeros(3), torch.ones(3), torch.tensor([0.5, 1.0, 4.0]))
    with pytest.raises(TypeError, match="generator"):
        d.sample((7,), generator=torch.zeros(1))


def test_float32_log_prob_close_to_float64():
    x = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(_dist(1.5, dtype=torch.float32).log_prob(x),
                               _dist(1.5).log_prob(x.double()).float(), rtol=1e-5, atol=1e-5)


def test_gammaincinv_matches_scipy():
    a = torch.tensor([0.25, 0.5, 1.0, 2.0, 7.0], dtype=F64).repeat_interleave(4)
    p = torch.tensor([1e-8, 0.1, 0.5, 0.99], dtype=F64).repeat(5)
    torch.testing.assert_close(gammaincinv(a, p), torch.from_numpy(sps.gammaincinv(a.numpy(), p.numpy())),
                               rtol=1e-10, atol=0)
    torch.testing.assert_close(gammaincinv(a, p, upper=True),
                               torch.from_numpy(sps.gammainccinv(a.numpy(), p.numpy())), rtol=1e-10, atol=0)


@pytest.mark.parametrize("kw, name", [(dict(scale=0.0), "scale"), (dict(beta=-1.0), "beta"),
                                      (dict(beta=math.nan), "beta")])
def test_bad_parameters(kw, name):
    args = dict(loc=0.0, scale=1.0, beta=2.0) | kw
    with pytest.raises(ValueError, match=name):
        GeneralizedGaussian(**args)


# ------------------------------------------------------------------------------------------------
# icdf/cdf near the median and for large beta (issue 15): no floor on the quantile, |2q - 1| exact

ICDF_BETAS = [0.5, 1.0, 2.0, 8.0, 20.0, 50.0]
#: q = 0.5 +- eps for eps from 1e-12 to 1e-1 (and a few tail points)
_EPS = np.concatenate([np.geomspace(1e-12, 1e-1, 67), [0.2, 0.3, 0.4, 0.45, 0.49]])
Q_GRID = np.concatenate([0.5 - _EPS, 0.5 + _EPS, [1e-300, 1e-100, 1e-12, 1e-3, 0.999, 1 - 1e-12]])


def _icdf_reference(q: float, beta: float) -> float:
    """The GGD(0, 1, beta) quantile with mpmath at 50 digits: ``z = sign(q - 1/2) u^(1/beta)`` where
    ``P(1/beta, u) = |2q - 1|`` (regularised lower incomplete gamma; scipy.stats.gennorm's definition),
    solved for ``w = log u`` by the secant method on ``log P`` (``log Q(1/beta, u) = log(2 min(q, 1 - q))``
    in the tails, where ``|2q - 1|`` rounds to 1)."""
    import mpmath as mp

    with mp.workdps(50):
        a, qq = mp.mpf(1) / mp.mpf(beta), mp.mpf(q)
        tail = 2 * min(qq, 1 - qq)
        if tail == 1:
            return 0.0
        if tail < mp.mpf("0.5"):
            f = lambda w: mp.log(mp.gammainc(a, mp.exp(w), mp.inf, regularized=True)) - mp.log(tail)  # noqa: E731
            w0 = mp.log(-mp.log(tail) + 1)
        else:
            p = 1 - tail
            f = lambda w: mp.log(mp.gammainc(a, 0, mp.exp(w), regularized=True)) - mp.log(p)  # noqa: E731
            w0 = (mp.log(p) + mp.loggamma(a + 1)) / a
        w = mp.findroot(f, (w0, w0 + mp.mpf("0.01")), solver="secant", tol=mp.mpf(10) ** -40, maxsteps=200)
        z = mp.exp(w / beta)
        return float(z if qq > 0.5 else -z)


@pytest.mark.parametrize("beta", ICDF_BETAS)
def test_icdf_matches_high_precision_reference(beta):
    d = _dist(beta, 0.0, 1.0)
    q = torch.tensor(Q_GRID, dtype=F64)
    ref = torch.tensor([_icdf_reference(float(v), beta) for v in Q_GRID], dtype=F64)
    torch.testing.assert_close(d.icdf(q), ref, rtol=1e-13, atol=0)


@pytest.mark.parametrize("beta", ICDF_BETAS)
def test_cdf_icdf_roundtrip_near_the_median(beta):
    # the quantile's condition number is small near the median: cdf(icdf(q)) == q to 1e-14 relative
    near = _EPS[_EPS <= 0.1]
    q = torch.tensor(np.concatenate([0.5 - near, 0.5 + near]), dtype=F64)
    for d in (_dist(beta, 0.0, 1.0), _dist(beta, 0.3, 1.7)):
        torch.testing.assert_close(d.cdf(d.icdf(q)), q, rtol=1e-14, atol=0)
    # further out the roundtrip is limited by the quantile's condition number z p(z) / q (~50 at
    # q = 0.01 for beta = 50): rounding z to a double moves q by that many ulps; in the far tail the
    # cdf is exp(log Q), whose relative error is ~|log q| ulps
    q = torch.tensor(np.concatenate([0.5 - _EPS, 0.5 + _EPS, [1e-300, 1e-100, 1e-12, 1e-3, 0.999]]), dtype=F64)
    d = _dist(beta, 0.0, 1.0)
    z = d.icdf(q)
    tail = torch.minimum(q, 1 - q)
    bound = 1 + (z * d.log_prob(z).exp()).abs() / tail + tail.log().abs()
    err = (d.cdf(z) - q).abs() / q
    assert bool((err <= 4 * 2.2e-16 * bound).all()), float((err / bound).max())


@pytest.mark.parametrize("beta", ICDF_BETAS)
def test_icdf_matches_scipy_ppf(beta):
    # scipy inverts Q(1/beta, 1 - |2q - 1|), which is accurate while |2q - 1| is not tiny
    # (its ppf(0.5 + 1e-12) is 0.0 at beta = 50); compare where it is
    q = np.concatenate([0.5 - _EPS[_EPS >= 1e-6], 0.5 + _EPS[_EPS >= 1e-6], [1e-12, 1e-3, 0.999]])
    d = _dist(beta, 0.3, 1.7)
    ref = st.gennorm(beta, loc=0.3, scale=1.7).ppf(q)
    torch.testing.assert_close(d.icdf(torch.tensor(q, dtype=F64)), torch.from_numpy(ref), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("beta", [2.0, 20.0, 50.0])
def test_icdf_float32_has_no_plateau(beta):
    # float32: every q in (0.5, 0.6) maps to a different quantile, equal to the float64 one to float32 precision
    q = torch.linspace(0.5, 0.6, 2001, dtype=torch.float32)[1:]
    z = _dist(beta, 0.0, 1.0, dtype=torch.float32).icdf(q)
    assert z.dtype == torch.float32
    assert bool((z[1:] > z[:-1]).all()), "icdf must be strictly increasing"
    ref = _dist(beta, 0.0, 1.0).icdf(q.double())
    torch.testing.assert_close(z.double(), ref, rtol=3e-7, atol=0)
    # and the float32 cdf inverts it
    torch.testing.assert_close(_dist(beta, 0.0, 1.0, dtype=torch.float32).cdf(z), q, rtol=2e-6, atol=0)


def test_cdf_near_the_median_has_no_floor():
    # |z|^beta underflows for beta = 50 and z = 1e-12; the cdf must still be 0.5 + z / (2 Gamma(1 + 1/beta))
    d = _dist(50.0, 0.0, 1.0)
    z = torch.tensor([1e-12, -1e-12, 1e-300], dtype=F64)
    expected = torch.tensor([0.5 + 1e-12 / (2 * math.gamma(1.02)), 0.5 - 1e-12 / (2 * math.gamma(1.02)), 0.5],
                            dtype=F64)
    torch.testing.assert_close(d.cdf(z), expected, rtol=1e-15, atol=0)


def test_sample_without_generator_uses_the_default_generator():
    # the torch.distributions contract: sample() with no generator draws from torch's default generator
    d = GeneralizedGaussian(torch.zeros(3), torch.ones(3), torch.tensor([0.5, 1.0, 4.0]))
    torch.manual_seed(0)
    a = d.sample((7,))
    torch.manual_seed(0)
    b = d.sample((7,))
    assert a.shape == (7, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(TypeError, match="generator"):
        d.sample((7,), generator=0)


def test_validate_args_false_skips_validation():
    # torch.distributions: validate_args=False turns the parameter checks off
    d = GeneralizedGaussian(0.0, -1.0, 2.0, validate_args=False)
    assert float(d.scale) == -1.0
    with pytest.raises(ValueError, match="scale"):
        GeneralizedGaussian(0.0, -1.0, 2.0, validate_args=True)
    # the default follows torch.distributions.Distribution's global switch (on by default)
    with pytest.raises(ValueError, match="scale"):
        GeneralizedGaussian(0.0, -1.0, 2.0)
