"""Seeded complex-baseband signal generators: OFDM, single-carrier PSK/QAM, noise, impairments.

Every generator returns ``(n_records, n_samples)`` complex tensors with unit average power and draws
only from the ``generator`` it is given. :class:`SignalConfig` bundles a whole scenario
(signal, SNR, impairments) for :func:`estimators.cumulants.size_power`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "CONSTELLATIONS",
    "SignalConfig",
    "awgn",
    "complex_noise",
    "constellation",
    "fractional_delay",
    "frequency_offset",
    "ofdm",
    "phase_offset",
    "rayleigh_multipath",
    "rrc_pulse",
    "single_carrier",
]

CONSTELLATIONS = ("bpsk", "qpsk", "8psk", "16qam", "64qam")


def _check_gen(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _check_pos(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def constellation(name: str, *, dtype: torch.dtype = torch.complex128, device=None) -> torch.Tensor:
    """Unit-power constellation points of ``name`` (one of :data:`CONSTELLATIONS`).

    Examples
    --------
    >>> from estimators.cumulants.signals import constellation
    >>> float(constellation("16qam").abs().square().mean())
    1.0
    """
    if name not in CONSTELLATIONS:
        raise ValueError(f"modulation must be one of {CONSTELLATIONS}, got {name!r}")
    if name.endswith("psk"):
        m = {"bpsk": 2, "qpsk": 4, "8psk": 8}[name]
        k = torch.arange(m, dtype=torch.float64)
        off = math.pi / 4 if m == 4 else 0.0
        pts = torch.polar(torch.ones(m, dtype=torch.float64), 2 * math.pi * k / m + off)
    else:
        m = int(name[:-3])
        side = int(math.isqrt(m))
        lv = torch.arange(-(side - 1), side, 2, dtype=torch.float64)
        pts = torch.complex(lv.repeat_interleave(side), lv.repeat(side))
    pts = pts / pts.abs().square().mean().sqrt()
    return pts.to(dtype=dtype, device=device)


def _symbols(n: int, m: int, modulation: str, generator, dtype, device) -> torch.Tensor:
    pts = constellation(modulation, dtype=dtype, device=device)
    idx = torch.randint(0, pts.numel(), (n, m), generator=generator, device=generator.device).to(device)
    return pts[idx]


def complex_noise(n_records: int, n_samples: int, *, generator: torch.Generator,
                  dtype: torch.dtype = torch.complex128, device=None) -> torch.Tensor:
    """White circular complex Gaussian records with unit power (the H0 of the Gaussianity test).

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import complex_noise
    >>> complex_noise(2, 8, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 8])
    """
    _check_gen(generator)
    _check_pos("n_records", n_records), _check_pos("n_samples", n_samples)
    out = torch.randn((n_records, n_samples), generator=generator, dtype=dtype, device=generator.device)
    return out.to(device) if device is not None else out


def ofdm(n_records: int, n_samples: int, *, n_fft: int = 64, cp_length: int = 16,
         modulation: str = "qpsk", n_active: int | None = None, generator: torch.Generator,
         random_start: bool = True, dtype: torch.dtype = torch.complex128, device=None) -> torch.Tensor:
    """CP-OFDM records: IFFT of random subcarrier symbols with the last ``cp_length`` samples prepended.

    Parameters
    ----------
    n_records, n_samples : int
        Output shape.
    n_fft, cp_length : int
        FFT size and cyclic-prefix length (``0 <= cp_length <= n_fft``).
    modulation : str
        Subcarrier constellation (:data:`CONSTELLATIONS`).
    n_active : int, optional
        Number of used subcarriers (centred, DC kept); default all ``n_fft``.
    generator : torch.Generator
    random_start : bool
        Start each record at a uniformly random sample of its first OFDM symbol (unknown timing).

    Returns
    -------
    Tensor, shape (n_records, n_samples), unit average power.

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import ofdm
    >>> x = ofdm(4, 1024, generator=torch.Generator().manual_seed(0))
    >>> x.shape, round(float(x.abs().square().mean()), 1)
    (torch.Size([4, 1024]), 1.0)
    """
    _check_gen(generator)
    _check_pos("n_records", n_records), _check_pos("n_samples", n_samples), _check_pos("n_fft", n_fft)
    if isinstance(cp_length, bool) or not isinstance(cp_length, int) or not 0 <= cp_length <= n_fft:
        raise ValueError(f"cp_length must be an int in [0, n_fft={n_fft}], got {cp_length!r}")
    n_active = n_fft if n_active is None else _check_pos("n_active", n_active)
    if n_active > n_fft:
        raise ValueError(f"n_active must be <= n_fft ({n_fft}), got {n_active}")
    gdev = generator.device
    sym_len = n_fft + cp_length
    n_sym = n_samples // sym_len + 2
    data = _symbols(n_records, n_sym * n_active, modulation, generator, dtype, gdev).reshape(n_records, n_sym, n_active)
    grid = torch.zeros((n_records, n_sym, n_fft), dtype=dtype, device=gdev)
    bins = (torch.arange(n_active, device=gdev) - n_active // 2) % n_fft
    grid[..., bins] = data
    body = torch.fft.ifft(grid, dim=-1, norm="ortho") * math.sqrt(n_fft / n_active)
    frame = torch.cat([body[..., n_fft - cp_length:], body], -1).reshape(n_records, -1)
    if random_start:
        start = torch.randint(0, sym_len, (n_records, 1), generator=generator, device=gdev)
    else:
        start = torch.zeros((n_records, 1), dtype=torch.long, device=gdev)
    idx = start + torch.arange(n_samples, device=gdev)
    out = frame.gather(1, idx)
    return out.to(device) if device is not None else out


def rrc_pulse(sps: int, rolloff: float = 0.35, span: int = 8, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Root-raised-cosine taps (``span`` symbols, ``sps`` samples per symbol), unit energy.

    Examples
    --------
    >>> from estimators.cumulants.signals import rrc_pulse
    >>> h = rrc_pulse(4)
    >>> h.numel(), round(float(h.square().sum()), 6)
    (33, 1.0)
    """
    _check_pos("sps", sps), _check_pos("span", span)
    if not 0.0 < float(rolloff) <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    b = float(rolloff)
    t = torch.arange(-span * sps // 2, span * sps // 2 + 1, dtype=torch.float64) / sps
    num = torch.sin(math.pi * t * (1 - b)) + 4 * b * t * torch.cos(math.pi * t * (1 + b))
    den = math.pi * t * (1 - (4 * b * t) ** 2)
    h = num / den
    h[t == 0] = 1 - b + 4 * b / math.pi
    sing = (4 * b * t).abs().sub(1).abs() < 1e-9
    h[sing] = b / math.sqrt(2) * ((1 + 2 / math.pi) * math.sin(math.pi / (4 * b)) + (1 - 2 / math.pi) * math.cos(math.pi / (4 * b)))
    return (h / h.square().sum().sqrt()).to(dtype)


def single_carrier(n_records: int, n_samples: int, *, modulation: str = "qpsk",
                   pulse: Literal["rrc", "rect"] = "rrc", sps: int = 4, rolloff: float = 0.35, span: int = 8,
                   generator: torch.Generator, dtype: torch.dtype = torch.complex128, device=None) -> torch.Tensor:
    """Single-carrier linearly modulated records ``sum_k a_k p(n - k sps)`` with unit average power.

    Parameters
    ----------
    modulation : str
        Symbol constellation (:data:`CONSTELLATIONS`).
    pulse : {"rrc", "rect"}
        Root-raised-cosine (``rolloff``, ``span`` symbols) or rectangular (``sps`` samples).
    sps : int
        Samples per symbol (``sps = 1`` with ``rect``: the symbols themselves).
    generator : torch.Generator
        The symbol stream and a random start sample within the first symbol come from it.

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import single_carrier
    >>> x = single_carrier(8, 4096, modulation="qpsk", generator=torch.Generator().manual_seed(0))
    >>> round(float(x.abs().square().mean()), 1)
    1.0
    """
    _check_gen(generator)
    _check_pos("n_records", n_records), _check_pos("n_samples", n_samples), _check_pos("sps", sps)
    if pulse == "rrc":
        taps = rrc_pulse(sps, rolloff, span)
    elif pulse == "rect":
        taps = torch.ones(sps, dtype=torch.float64) / math.sqrt(sps)
    else:
        raise ValueError(f"pulse must be 'rrc' or 'rect', got {pulse!r}")
    gdev = generator.device
    n_sym = (n_samples + taps.numel()) // sps + 2
    a = _symbols(n_records, n_sym, modulation, generator, dtype, gdev)
    up = torch.zeros((n_records, n_sym * sps), dtype=dtype, device=gdev)
    up[:, ::sps] = a * math.sqrt(sps)  # unit-energy taps: power = E|a|^2
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    w = taps.flip(0).to(rdt).to(gdev).reshape(1, 1, -1)
    conv = lambda r: torch.nn.functional.conv1d(r.unsqueeze(1), w).squeeze(1)  # noqa: E731
    y = torch.complex(conv(up.real.contiguous()), conv(up.imag.contiguous()))
    start = torch.randint(0, sps, (n_records, 1), generator=generator, device=gdev)
    out = y.gather(1, start + torch.arange(n_samples, device=gdev))
    return out.to(device) if device is not None else out


def awgn(x: torch.Tensor, snr_db: float, *, generator: torch.Generator, signal_power: float = 1.0) -> torch.Tensor:
    """Add circular complex white Gaussian noise of power ``signal_power / 10^(snr_db/10)``.

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import awgn
    >>> y = awgn(torch.zeros(2, 4096, dtype=torch.complex128), 0.0, generator=torch.Generator().manual_seed(0))
    >>> round(float(y.abs().square().mean()), 1)
    1.0
    """
    _check_gen(generator)
    if not math.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    sigma = math.sqrt(signal_power / 10.0 ** (float(snr_db) / 10.0))
    w = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    return x + sigma * w


def _per_record(v, n: int, x: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64, device=x.device)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    return t.unsqueeze(-1)


def phase_offset(x: torch.Tensor, phase: float | torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each record by ``exp(j phase)``; ``phase=None`` draws it uniformly per record.

    Examples
    --------
    >>> import torch, math
    >>> from estimators.cumulants.signals import phase_offset
    >>> phase_offset(torch.ones(1, 2, dtype=torch.complex128), math.pi)[0, 0].real.item()
    -1.0
    """
    n = x.shape[0]
    if phase is None:
        if generator is None:
            raise ValueError("phase=None (random phase) needs a generator")
        _check_gen(generator)
        phase = (2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)).to(x.device)
    ph = _per_record(phase, n, x, "phase")
    return x * torch.polar(torch.ones_like(ph), ph).to(x.dtype)


def frequency_offset(x: torch.Tensor, f0: float | torch.Tensor) -> torch.Tensor:
    """Multiply by ``exp(j 2 pi f0 n)`` (``f0`` in cycles per sample, scalar or one per record).

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import frequency_offset
    >>> y = frequency_offset(torch.ones(1, 3, dtype=torch.complex128), 0.25)
    >>> round(y[0, 1].real.item(), 9), y[0, 1].imag.item()
    (0.0, 1.0)
    """
    f = _per_record(f0, x.shape[0], x, "f0")
    n = torch.arange(x.shape[-1], dtype=torch.float64, device=x.device)
    ang = 2 * math.pi * f * n
    return x * torch.polar(torch.ones_like(ang), ang).to(x.dtype)


def fractional_delay(x: torch.Tensor, delay: float, *, n_taps: int = 33) -> torch.Tensor:
    """Delay the records by ``delay`` samples (a sampling/timing offset) with a Hann-windowed sinc.

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import fractional_delay
    >>> x = torch.zeros(1, 64, dtype=torch.complex128); x[0, 20] = 1
    >>> int(fractional_delay(x, 3.0).abs().argmax())
    23
    """
    _check_pos("n_taps", n_taps)
    if not math.isfinite(float(delay)):
        raise ValueError(f"delay must be finite, got {delay}")
    half = n_taps // 2
    k = torch.arange(-half, half + 1, dtype=torch.float64)
    u = k - float(delay)
    win = torch.where(u.abs() < half + 1, 0.5 * (1 + torch.cos(math.pi * u / (half + 1))), torch.zeros_like(u))
    h = torch.sinc(u) * win  # the Hann window is centred on the delay, so the filter is symmetric about it
    h = h / h.sum()
    rdt = torch.float64 if x.dtype == torch.complex128 else torch.float32
    w = h.flip(0).to(rdt).to(x.device).reshape(1, 1, -1)
    conv = lambda r: torch.nn.functional.conv1d(r.unsqueeze(1), w, padding=half).squeeze(1)  # noqa: E731
    return torch.complex(conv(x.real.contiguous()), conv(x.imag.contiguous()))


def rayleigh_multipath(x: torch.Tensor, *, n_taps: int = 4, decay: float = 1.0,
                       generator: torch.Generator) -> torch.Tensor:
    """Pass each record through its own Rayleigh channel ``h_k ~ CN(0, e^{-k/decay}/Z)``.

    The power-delay profile is exponential, normalised so that ``E sum |h_k|^2 = 1``; a
    realisation shrinks ``|C~42|`` by ``sum|h|^4 / (sum|h|^2)^2``. A record is a window of a longer
    stream, so only the outputs whose ``n_taps`` inputs all lie in the record are returned
    (``numpy.convolve(..., mode="valid")``): ``y_m = sum_k h_k x_{m + n_taps - 1 - k}``, shape
    ``(records, N - n_taps + 1)``; draw ``n_taps - 1`` extra samples to keep ``N`` (as
    :meth:`SignalConfig.generate` does). Zero-padding the start instead would give the first
    ``n_taps - 1`` outputs fewer taps (less power, different cumulants).

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants.signals import rayleigh_multipath
    >>> y = rayleigh_multipath(torch.ones(3, 16, dtype=torch.complex128), generator=torch.Generator().manual_seed(0))
    >>> y.shape
    torch.Size([3, 13])
    """
    _check_gen(generator)
    _check_pos("n_taps", n_taps)
    if not float(decay) > 0:
        raise ValueError(f"decay must be > 0, got {decay}")
    N = x.shape[-1]
    if N < n_taps:
        raise ValueError(f"records must have at least n_taps = {n_taps} samples, got {N}")
    prof = torch.exp(-torch.arange(n_taps, dtype=torch.float64) / float(decay))
    prof = prof / prof.sum()
    h = torch.randn((x.shape[0], n_taps), generator=generator, dtype=torch.complex128, device=generator.device)
    h = (h * prof.sqrt().to(h.device)).to(x.device, x.dtype)
    M = N - n_taps + 1
    y = h[:, :1] * x[:, n_taps - 1:]
    for k in range(1, n_taps):
        y += h[:, k:k + 1] * x[:, n_taps - 1 - k:n_taps - 1 - k + M]
    return y


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """A scenario: which signal, which impairments. ``generate`` draws records at a given SNR.

    Attributes
    ----------
    kind : {"noise", "ofdm", "single_carrier"}
    modulation : str
        Symbol (or subcarrier) constellation.
    pulse, sps, rolloff : single-carrier pulse shaping.
    n_fft, cp_length, n_active : OFDM parameters.
    random_phase : bool
        Uniform random carrier phase per record.
    freq_offset : float
        Carrier frequency offset in cycles per sample.
    timing_offset : float
        Fractional sampling delay in samples.
    multipath_taps : int
        Rayleigh taps (0: none).
    """

    kind: Literal["noise", "ofdm", "single_carrier"] = "ofdm"
    modulation: str = "qpsk"
    pulse: Literal["rrc", "rect"] = "rrc"
    sps: int = 4
    rolloff: float = 0.35
    n_fft: int = 64
    cp_length: int = 16
    n_active: int | None = None
    random_phase: bool = True
    freq_offset: float = 0.0
    timing_offset: float = 0.0
    multipath_taps: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("noise", "ofdm", "single_carrier"):
            raise ValueError(f"kind must be 'noise', 'ofdm' or 'single_carrier', got {self.kind!r}")
        if self.modulation not in CONSTELLATIONS:
            raise ValueError(f"modulation must be one of {CONSTELLATIONS}, got {self.modulation!r}")

    @property
    def label(self) -> str:
        """A short name such as ``OFDM-QPSK`` or ``SC-16QAM-RRC``."""
        if self.kind == "noise":
            return "noise"
        if self.kind == "ofdm":
            return f"OFDM-{self.modulation.upper()}"
        return f"SC-{self.modulation.upper()}-{self.pulse.upper()}"

    def generate(self, n_records: int, n_samples: int, snr_db: float | None, *,
                 generator: torch.Generator, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
        """Draw ``(n_records, n_samples)`` records at ``snr_db`` (``None``: noise-free).

        Examples
        --------
        >>> import torch
        >>> from estimators.cumulants.signals import SignalConfig
        >>> SignalConfig("single_carrier", "16qam").generate(3, 256, 10.0, generator=torch.Generator()).shape
        torch.Size([3, 256])
        """
        kw = dict(generator=generator, dtype=dtype)
        if self.kind == "noise":
            return complex_noise(n_records, n_samples, **kw)
        pad = 40 if self.timing_offset else 0
        # the channel's memory: n_taps - 1 earlier samples feed the first output sample
        n_in = n_samples + max(self.multipath_taps - 1, 0)
        if self.kind == "ofdm":
            x = ofdm(n_records, n_in + pad, n_fft=self.n_fft, cp_length=self.cp_length,
                     modulation=self.modulation, n_active=self.n_active, **kw)
        else:
            x = single_carrier(n_records, n_in + pad, modulation=self.modulation, pulse=self.pulse,
                               sps=self.sps, rolloff=self.rolloff, **kw)
        if self.timing_offset:
            x = fractional_delay(x, self.timing_offset)[:, pad // 2 : pad // 2 + n_in]
        if self.multipath_taps:
            x = rayleigh_multipath(x, n_taps=self.multipath_taps, generator=generator)
        if self.random_phase:
            x = phase_offset(x, None, generator=generator)
        if self.freq_offset:
            x = frequency_offset(x, self.freq_offset)
        if snr_db is not None:
            x = awgn(x, snr_db, generator=generator)
        return x
