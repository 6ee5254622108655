"""Signal generators: seeding, power, constellations, pulses, impairments."""
import math

import pytest
import torch

from estimators.cumulants import SignalConfig, cumulants, signals


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name,size", [("bpsk", 2), ("qpsk", 4), ("8psk", 8), ("16qam", 16), ("64qam", 64)])
def test_constellations_unit_power(name, size):
    pts = signals.constellation(name)
    assert pts.numel() == size and torch.view_as_real(pts).unique(dim=0).shape[0] == size
    torch.testing.assert_close(pts.abs().square().mean(), torch.tensor(1.0, dtype=torch.float64))


def test_seeded_and_reproducible():
    cfg = SignalConfig("ofdm", "16qam", multipath_taps=3, freq_offset=1e-4, timing_offset=0.3)
    a = cfg.generate(4, 500, 5.0, generator=g(1))
    b = cfg.generate(4, 500, 5.0, generator=g(1))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, cfg.generate(4, 500, 5.0, generator=g(2)))
    assert a.shape == (4, 500) and a.dtype == torch.complex128


def test_ofdm_is_cp_ofdm():
    x = signals.ofdm(3, 800, n_fft=64, cp_length=16, random_start=False, generator=g())
    sym = x[:, :80]
    torch.testing.assert_close(sym[:, :16], sym[:, 64:80])  # prefix = last 16 samples of the body
    torch.testing.assert_close(x.abs().square().mean(), torch.tensor(1.0, dtype=torch.float64), atol=0.02, rtol=0)
    # subcarriers carry QPSK symbols
    spec = torch.fft.fft(sym[:, 16:], norm="ortho")
    torch.testing.assert_close(spec.abs(), torch.ones_like(spec.abs()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rrc_is_nyquist(dtype):
    sps = 4
    h = signals.rrc_pulse(sps, 0.35, span=16, dtype=dtype).double()
    rc = torch.nn.functional.conv1d(h.reshape(1, 1, -1), h.flip(0).reshape(1, 1, -1), padding=h.numel() - 1).flatten()
    mid = rc.numel() // 2
    taps = rc[mid % sps :: sps]
    peak = taps.abs().argmax()
    assert abs(taps[peak].item() - 1) < 1e-3 and (taps.abs().sum() - taps[peak].abs()).item() < 0.02


def test_single_carrier_power_and_cumulants():
    x = signals.single_carrier(100, 4096, modulation="qpsk", pulse="rrc", sps=4, generator=g())
    torch.testing.assert_close(x.abs().square().mean(), torch.tensor(1.0, dtype=torch.float64), atol=0.01, rtol=0)
    c = cumulants(x)
    # REFERENCE.md section 5: RRC(0.35) QPSK |C~40| ~ 0.84, C~42 ~ -0.79
    assert abs(c.c40_norm.abs().mean() - 0.84) < 0.02 and abs(c.c42_norm.mean() + 0.79) < 0.02


def test_awgn_power():
    y = signals.awgn(torch.zeros(10, 10000, dtype=torch.complex128), 10.0, generator=g())
    assert abs(y.abs().square().mean().item() - 0.1) < 0.003


def test_multipath_shrinks_c42_by_tap_moments():
    x = signals.single_carrier(1, 2**16, modulation="qpsk", pulse="rect", sps=1, generator=g(3))
    gen = g(4)
    y = signals.rayleigh_multipath(x, n_taps=4, generator=gen)
    h = torch.randn((1, 4), generator=g(4), dtype=torch.complex128)  # same draw as inside
    prof = torch.exp(-torch.arange(4.0, dtype=torch.float64))
    h = h * (prof / prof.sum()).sqrt()
    shrink = (h.abs() ** 4).sum() / (h.abs() ** 2).sum() ** 2
    assert abs(cumulants(y).c42_norm.item() - (-1.0) * shrink.item()) < 0.03


def test_multipath_every_output_sample_sees_all_taps():
    # a record is a window of a stream: its first samples must get the earlier taps from samples
    # before the window too, so every output sample has the same power (here E|y_n|^2 = 1)
    x = signals.complex_noise(4000, 16, generator=g(5))
    y = signals.rayleigh_multipath(x, n_taps=4, generator=g(6))
    assert y.shape == (4000, 13)  # the samples whose 4 taps all lie in the record
    power = y.abs().square().mean(0)
    se = y.abs().square().std(0) / 4000**0.5
    assert bool(((power - 1).abs() < 5 * se).all()), power
    cfg = SignalConfig("single_carrier", "qpsk", pulse="rect", sps=1, random_phase=False, multipath_taps=4)
    z = cfg.generate(4000, 16, None, generator=g(7))
    assert z.shape == (4000, 16)
    power = z.abs().square().mean(0)
    se = z.abs().square().std(0) / 4000**0.5
    assert bool(((power - 1).abs() < 5 * se).all()), power


def test_fractional_delay_integer_and_half():
    x = torch.zeros(1, 64, dtype=torch.complex128)
    x[0, 20] = 1
    y = signals.fractional_delay(x, 2.0)
    assert int(y.abs().argmax()) == 22 and abs(y[0, 22].real.item() - 1) < 1e-9
    y = signals.fractional_delay(x, 0.5)
    torch.testing.assert_close(y[0, 20], y[0, 21])


def test_phase_and_frequency_offsets():
    x = torch.ones(2, 4, dtype=torch.complex128)
    y = signals.phase_offset(x, torch.tensor([0.0, math.pi / 2]))
    torch.testing.assert_close(y[1, 0], torch.tensor(1j, dtype=torch.complex128))
    z = signals.frequency_offset(x, torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(z[1, 1], torch.tensor(-1 + 0j, dtype=torch.complex128))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: signals.constellation("32qam"), ValueError, "modulation"),
    (lambda: signals.ofdm(2, 10, cp_length=80, generator=g()), ValueError, "cp_length"),
    (lambda: signals.ofdm(2, 10, generator=None), TypeError, "generator"),
    (lambda: signals.single_carrier(2, 10, pulse="gauss", generator=g()), ValueError, "pulse"),
    (lambda: signals.single_carrier(0, 10, generator=g()), ValueError, "n_records"),
    (lambda: signals.rrc_pulse(4, rolloff=0.0), ValueError, "rolloff"),
    (lambda: signals.phase_offset(torch.ones(2, 3, dtype=torch.complex128)), ValueError, "generator"),
    (lambda: signals.frequency_offset(torch.ones(2, 3, dtype=torch.complex128), torch.zeros(3)), ValueError, "f0"),
    (lambda: SignalConfig("fm"), ValueError, "kind"),
    (lambda: signals.awgn(torch.ones(1, 2, dtype=torch.complex128), float("nan"), generator=g()), ValueError, "snr_db"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
