"""Cumulant estimators: exact values, stderr-based checks, invariances, batching, bad input."""
import math

import numpy as np
import pytest
import torch

import estimators.cumulants as ec
from estimators.cumulants import cumulants, signals
from genstat.mc import replicate


def test_all_names_resolve():
    for name in ec.__all__:
        assert getattr(ec, name) is not None
    for name in signals.__all__:
        assert getattr(signals, name) is not None


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.to(torch.float64)
    return v.mean().item(), v.std().item() / math.sqrt(v.numel())


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_gaussian_cumulants_zero_within_stderr(dtype):
    # 400 seeded records of white CN(0, 2): C~40, C~41 have mean 0, C~42 has mean -4/(N+1)
    n = 512

    def fn(m, g, d):
        x = (2.0**0.5 * torch.randn(m, n, generator=g, dtype=torch.complex128)).to(dtype)
        c = cumulants(x)
        return torch.stack([c.c40_norm.real, c.c40_norm.imag, c.c41_norm.real, c.c41_norm.imag,
                            c.c42_norm, c.c21], 1).to(torch.float64)

    out = replicate(fn, 400, block_size=100, seed=3)
    truth = [0.0, 0.0, 0.0, 0.0, -4.0 / (n + 1), 2.0]
    for k in range(6):
        m, se = _mean_se(out[:, k])
        assert abs(m - truth[k]) < 5 * se, (k, m, se)
    # the H0 standard deviations match the white variances 12, 12, 3, 3, 4 (over N)
    sd = out[:, :5].std(0) * math.sqrt(n)
    torch.testing.assert_close(sd, torch.tensor([12, 12, 3, 3, 4], dtype=torch.float64).sqrt(), rtol=0.12, atol=0)


@pytest.mark.parametrize("modulation,c40,c42", [("qpsk", 1.0, -1.0), ("16qam", 0.68, -0.68), ("bpsk", 2.0, -2.0)])
def test_noise_free_constellations_match_theory(modulation, c40, c42):
    # theory (Swami & Sadler 2000, Table 1): |C~40| and C~42 of the symbol alphabets
    g = torch.Generator().manual_seed(0)
    x = signals.single_carrier(200, 2048, modulation=modulation, pulse="rect", sps=1, generator=g)
    x = signals.phase_offset(x, None, generator=g)
    c = cumulants(x)
    for est, truth in ((c.c40_norm.abs(), c40), (c.c42_norm, c42)):
        m, se = _mean_se(est)
        assert abs(m - truth) < 5 * se + 2e-3 * abs(truth), (m, se, truth)  # + O(1/N) bias of |.|


def test_qpsk_exact_single_record():
    qpsk = torch.tensor([1 + 1j, 1 - 1j, -1 + 1j, -1 - 1j] * 64, dtype=torch.complex128) / 2**0.5
    c = cumulants(qpsk)
    torch.testing.assert_close(c.c42_norm, torch.tensor(-1.0, dtype=torch.float64))
    torch.testing.assert_close(c.c40_norm, torch.tensor(-1.0 + 0j, dtype=torch.complex128))  # x^4 = e^{j pi}
    torch.testing.assert_close(c.c41_norm, torch.tensor(0j, dtype=torch.complex128))
    torch.testing.assert_close(c.c21, torch.tensor(1.0, dtype=torch.float64))


def test_matches_direct_formula_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 100)) + 1j * rng.standard_normal((3, 5, 100)) ** 3
    c = cumulants(x)
    m = lambda p, q: np.mean(x ** (p - q) * np.conj(x) ** q, axis=-1)  # noqa: E731
    np.testing.assert_allclose(c.c40, m(4, 0) - 3 * m(2, 0) ** 2, rtol=1e-12)
    np.testing.assert_allclose(c.c41, m(4, 1) - 3 * m(2, 0) * m(2, 1), rtol=1e-12)
    np.testing.assert_allclose(c.c42, (m(4, 2) - abs(m(2, 0)) ** 2 - 2 * m(2, 1) ** 2).real, rtol=1e-12)
    assert isinstance(c.c42, np.ndarray) and c.c42.shape == (3, 5)
    frame = c.to_frame()
    assert len(frame) == 15 and "c42n" in frame


def test_axis_and_batching_consistent():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 300, 3, dtype=torch.complex128, generator=g)
    a = cumulants(x, axis=1)
    b = cumulants(x.movedim(1, -1))
    torch.testing.assert_close(a.c42, b.c42)
    one = cumulants(x[2, :, 1])
    torch.testing.assert_close(one.c40, a.c40[2, 1])


def test_invariances():
    g = torch.Generator().manual_seed(4)
    x = signals.single_carrier(50, 1024, modulation="16qam", generator=g)
    c = cumulants(x)
    rot = cumulants(signals.phase_offset(x, 0.7))
    # phase: C40 -> e^{j4 phi} C40, |C40|, C42, C21 unchanged
    torch.testing.assert_close(rot.c40, c.c40 * torch.polar(torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.8, dtype=torch.float64)))
    torch.testing.assert_close(rot.c42, c.c42)
    fo = cumulants(signals.frequency_offset(x, 1e-3))
    # frequency offset: M42 and M21 exactly invariant; C42 changes only through |M20|^2 (O(1/N))
    torch.testing.assert_close(fo.c21, c.c21)
    torch.testing.assert_close(fo.c42 + fo.c20.abs().square(), c.c42 + c.c20.abs().square())
    assert (fo.c42_norm - c.c42_norm).abs().mean() < 0.01
    # ... while it smears C40 (4 * 1e-3 * 1024 ~ 4 turns)
    assert fo.c40_norm.abs().mean() < 0.3 * c.c40_norm.abs().mean()


def test_real_records_give_excess_kurtosis():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 200))
    c = cumulants(x)
    k = np.mean(x**4, -1) / np.mean(x**2, -1) ** 2 - 3
    np.testing.assert_allclose(c.c42_norm, k, rtol=1e-12)
    np.testing.assert_allclose(c.c40_norm.real, k, rtol=1e-12)


@pytest.mark.parametrize("bad,exc,match", [
    ("abc", TypeError, "x must be"),
    (np.array([True, False]), TypeError, "real or complex"),
    (np.float64(1.0), ValueError, "at least one dimension"),
])
def test_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        cumulants(bad)


def test_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        cumulants(np.zeros((2, 3)), axis=2)
    with pytest.raises(TypeError, match="axis"):
        cumulants(np.zeros((2, 3)), axis=1.0)
