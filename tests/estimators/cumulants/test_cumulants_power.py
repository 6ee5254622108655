"""Power of the test on single-carrier signals, baselines, size_power and binomial intervals."""
import numpy as np
import pytest
import torch
from scipy import stats
from statsmodels.stats.stattools import jarque_bera

from estimators.cumulants import (
    SignalConfig,
    c42_threshold_test,
    clopper_pearson,
    gaussianity_test,
    jarque_bera_test,
    normaltest_test,
    signals,
    size_power,
)
from genstat.mc import replicate


def _power(modulation, n_rec=1000):
    # the same records with and without the frequency offset: identical symbols, phases and noise
    base = SignalConfig("single_carrier", modulation, pulse="rrc")

    def fn(m, g, d):
        x = base.generate(m, 1024, 0.0, generator=g)
        xf = signals.frequency_offset(x, 1e-3)
        return torch.stack([gaussianity_test(y, statistic=s).reject
                            for s in ("c40_c42", "c42") for y in (x, xf)], 1).double()

    r = replicate(fn, n_rec, block_size=250, seed=31).mean(0)
    return r[:2], r[2:]


@pytest.mark.parametrize("modulation,floor", [("qpsk", 0.9), ("16qam", 0.45)])
def test_power_at_0db(modulation, floor):
    # REFERENCE.md section 5: chi2_3 0.942 (QPSK) and 0.482 (16QAM); chi2_1 (C42) 0.968 and 0.606
    p3, p1 = _power(modulation)
    assert p3[0] >= floor and p1[0] >= floor, (p3, p1)
    # C42 is invariant to the offset: the C42-only test keeps its power (same records)
    assert p1[1] >= floor and abs(p1[1] - p1[0]) < 0.01, p1
    # the offset smears C40 (4 f0 N ~ 4 turns): the 3-df test loses power but keeps C42's share
    assert p3[1] < p3[0] and p3[1] > 0.5 * p3[0], p3


def test_size_power_structure_and_determinism():
    cfg = SignalConfig("single_carrier", "qpsk")
    a = size_power("c42", cfg, snr_db=[-5.0, 10.0], n_samples=256, n_trials=200, block_size=100, seed=4)
    b = size_power("c42", cfg, snr_db=[-5.0, 10.0], n_samples=256, n_trials=200, block_size=100, seed=4)
    np.testing.assert_array_equal(a.rejections, b.rejections)
    assert a.rate[1] > 0.95 and a.rate[0] < a.rate[1]
    df = a.to_frame()
    assert list(df["snr_db"]) == [-5.0, 10.0] and (df["ci_low"] <= df["rate"]).all() and (df["rate"] <= df["ci_high"]).all()
    assert df["signal"].iloc[0] == "SC-QPSK-RRC"


def test_size_power_noise_h0_and_options():
    res = size_power("c40_c42", SignalConfig("ofdm"), snr_db=20.0, n_samples=1024, n_trials=500, block_size=250,
                     test_options=dict(covariance="cyclic_prefix", n_fft=64, cp_length=16))
    lo, hi = res.confidence_interval(0.999)
    assert lo[0] <= 0.05 <= hi[0]
    with pytest.raises(ValueError, match="test must be"):
        size_power("nope", SignalConfig("noise"), snr_db=None)
    with pytest.raises(TypeError, match="signal must be a SignalConfig"):
        size_power("c42", "ofdm", snr_db=None)


def test_clopper_pearson_matches_scipy():
    lo, hi = clopper_pearson(np.array([0, 37, 500]), 500, 0.9)
    for k, a, b in zip([0, 37, 500], lo, hi):
        ci = stats.binomtest(k, 500).proportion_ci(0.9, method="exact")
        assert abs(a - ci.low) < 1e-10 and abs(b - ci.high) < 1e-10


def test_baselines_match_reference_implementations():
    x = signals.complex_noise(6, 300, generator=torch.Generator().manual_seed(0)).numpy()
    res = normaltest_test(x)
    for i in range(6):
        pr = stats.normaltest(x[i].real).pvalue
        pi = stats.normaltest(x[i].imag).pvalue
        np.testing.assert_allclose(res.pvalue[i], min(1.0, 2 * min(pr, pi)), rtol=1e-10)
    jb = jarque_bera_test(x)
    pr = jarque_bera(x[2].real)[1]
    pi = jarque_bera(x[2].imag)[1]
    np.testing.assert_allclose(jb.pvalue[2], min(1.0, 2 * min(pr, pi)), rtol=1e-10)
    thr = c42_threshold_test(torch.from_numpy(x), threshold=0.1)
    assert thr.reject.dtype == torch.bool and torch.isnan(thr.pvalue).all()


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_baselines_threshold_is_the_bonferroni_chi2_quantile(alpha):
    # each of Re and Im gives a chi^2_2 statistic (K^2, JB); the Bonferroni decision p < alpha is
    # max(statistic) > chi^2_{2, 1 - alpha/2}: df 2 and that threshold, consistent with reject
    x = signals.complex_noise(400, 256, generator=torch.Generator().manual_seed(1)).numpy()
    x[:200] = x[:200] ** 3  # some clearly non-Gaussian records
    for test in (normaltest_test, jarque_bera_test):
        res = test(x, alpha=alpha)
        assert res.df == 2
        assert res.threshold == pytest.approx(stats.chi2.isf(alpha / 2, 2), rel=1e-12)
        np.testing.assert_array_equal(res.reject, res.statistic > res.threshold)
        np.testing.assert_allclose(res.pvalue, np.minimum(1.0, 2 * stats.chi2.sf(res.statistic, 2)), rtol=1e-9)
        assert 0 < res.reject.sum() < 400


def test_baseline_bad_input():
    with pytest.raises(TypeError, match="must be complex"):
        normaltest_test(np.zeros((2, 100)))
    with pytest.raises(ValueError, match="alpha"):
        jarque_bera_test(np.ones((2, 100), dtype=complex), alpha=0.0)
    with pytest.raises(ValueError, match="threshold"):
        c42_threshold_test(np.ones((2, 100), dtype=complex), threshold=-1.0)
