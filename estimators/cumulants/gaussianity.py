"""The chi-square CFAR Gaussianity test on fourth-order cumulants (Gorcin & Arslan 2015).

Under H0 (a circular complex Gaussian record) every fourth-order cumulant is zero and the vector
of normalised cumulant estimates ``c`` is asymptotically normal, ``sqrt(N) c -> N(0, Sigma)``, so

    D = N c^T Sigma^{-1} c  ~  chi^2_d          (reject when D > chi^2_{d, 1-alpha}).

For the white and cyclic-prefix covariances ``Sigma`` is diagonal and ``D`` is computed with the
exact finite-``N`` H0 mean and variance of each component (:func:`h0_moments`), which agree with
``Sigma / N`` to first order.

``Sigma`` is what the ``covariance`` option chooses:

* ``"white"``: i.i.d. circular Gaussian samples. With ``sigma^2 = C21`` the influence functions of
  ``C~40, C~41, C~42`` are the complex Hermite polynomials ``H_40 = x^4``,
  ``H_31 = x^2(|x|^2 - 3 sigma^2)``, ``H_22 = |x|^4 - 4 sigma^2 |x|^2 (+ 2 sigma^4)`` over
  ``sigma^4``, with ``E|H_pq|^2 = p! q! sigma^8``, zero pseudo-covariances and zero cross-covariances:
  ``N Var(Re C~40) = N Var(Im C~40) = 12``, ``N Var(Re/Im C~41) = 3``, ``N Var(C~42) = 4``.
* ``"cyclic_prefix"``: OFDM with FFT size ``N_fft`` and prefix ``L``. A fraction
  ``f = L / (N_fft + L)`` of the samples is repeated ``N_fft`` samples later, so the long-run
  variance of a sample mean of ``h(x_n)`` is ``Var h (1 + 2 f corr(h(x_n), h(x_{n+N_fft})))``.
  For a jointly circular Gaussian pair with correlation ``rho`` (the copy seen through noise:
  ``rho = SNR / (1 + SNR)``), ``E[H_pq(x) conj(H_pq(y))] = p! q! rho^{p-q} |rho|^{2q}``, hence the
  variance factors ``1 + 2 f Re(rho^4)`` (C40), ``1 + 2 f |rho|^2 Re(rho^2)`` (C41) and
  ``1 + 2 f |rho|^4`` (C42). ``rho`` is estimated from the lag-``N_fft`` autocorrelation of the
  record (a second-order, hence precise, estimate) unless given; ``rho = 1`` gives the classical
  factor ``1 + 2L/(N_fft + L)``.
* ``"hac"``: a Bartlett-window (Newey-West) long-run covariance of the empirical (delta-method)
  influence functions: data-driven, but built on eighth moments, so it is noisy for short records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .cumulants import (
    as_records,
    cumulants_from_moments,
    moment_means,
    moments_from_means,
    normalized_cumulants,
    real_dtype,
    to_output,
)

__all__ = ["GaussianityTestResult", "gaussianity_test", "STATISTICS", "WHITE_VARIANCES"]

#: real components of each statistic (the normalised cumulants' real / imaginary parts)
STATISTICS: dict[str, tuple[str, ...]] = {
    "c42": ("c42",),
    "c40_c42": ("c40_re", "c40_im", "c42"),
    "c40_c41_c42": ("c40_re", "c40_im", "c41_re", "c41_im", "c42"),
}
#: N * Var of each component under white circular Gaussian H0 (p! q! / 2 per real part)
WHITE_VARIANCES: dict[str, float] = {"c40_re": 12.0, "c40_im": 12.0, "c41_re": 3.0, "c41_im": 3.0, "c42": 4.0}
#: real records: C40 = C41 = C42 is the excess kurtosis, N Var = 4! = 24
_MIN_SAMPLES = 8


def h0_moments(n: int, comps: tuple[str, ...], real: bool = False) -> tuple[list[float], list[float]]:
    """Exact mean and variance of each component under white Gaussian H0 for ``n`` samples.

    With ``p_i = |x_i|^2`` i.i.d. exponential (complex) or ``sigma^2 chi^2_1`` (real) and the
    phases independent and uniform, ``w = p / sum(p)`` is Dirichlet(1, ..., 1) (resp. (1/2, ...))
    and independent of the scale, so the normalised cumulants are polynomials in ``w`` and phases
    whose moments are Dirichlet moments ``E prod w_i^{k_i} = Gamma(a0) / Gamma(a0 + K)
    prod Gamma(a_i + k_i) / Gamma(a_i)``. This gives, with ``P = (n+1)(n+2)(n+3)``,
    ``E|C~40|^2 = 24 (n^2 - 3n + 6) / P``, ``E|C~41|^2 = 6 (n^2 - 3n + 18) / P``,
    ``E C~42 = -4 / (n+1)``, ``Var C~42 = 4 (n-1)(n^2 - n + 2) / ((n+1) P)``; the real and
    imaginary parts are uncorrelated with half of ``E|.|^2`` each and all cross-covariances vanish.
    Real records: ``E k = -6 / (n+2)``, ``Var k = 24 n^2 (n-1) / ((n+2)^2 (n+4)(n+6))``.
    Each variance is ``v / n + O(n^-2)`` with ``v`` from :data:`WHITE_VARIANCES`.
    """
    if real:
        return [-6.0 / (n + 2)], [24.0 * n * n * (n - 1) / ((n + 2) ** 2 * (n + 4) * (n + 6))]
    p3 = (n + 1.0) * (n + 2.0) * (n + 3.0)
    table = {
        "c40": (0.0, 12.0 * (n * n - 3.0 * n + 6.0) / p3),
        "c41": (0.0, 3.0 * (n * n - 3.0 * n + 18.0) / p3),
        "c42": (-4.0 / (n + 1.0), 4.0 * (n - 1.0) * (n * n - n + 2.0) / ((n + 1.0) * p3)),
    }
    mus, vs = zip(*(table[c[:3]] for c in comps))
    return list(mus), list(vs)



@dataclass(frozen=True, slots=True)
class GaussianityTestResult:
    """Result of :func:`gaussianity_test`; unpacks as ``statistic, pvalue``.

    Attributes
    ----------
    statistic : array, batch shape
        ``D = N c^T Sigma^{-1} c`` per record (NaN for constant or non-finite records).
    pvalue : array, batch shape
        ``P(chi^2_df > D)``.
    df : int
        Degrees of freedom (1, 3 or 5).
    threshold : float
        ``chi^2_{df, 1-alpha}``.
    reject : array of bool, batch shape
        ``statistic > threshold`` (False where the statistic is NaN).
    alpha : float
    n_samples : int
        Samples per record.
    statistic_name, covariance : str
        The statistic computed (``"kurtosis"`` for real records, whatever ``statistic`` asked for)
        and the covariance option.
    """

    statistic: Any
    pvalue: Any
    df: int
    threshold: float
    reject: Any
    alpha: float
    n_samples: int
    statistic_name: str
    covariance: str

    def __iter__(self) -> Iterator[Any]:
        yield self.statistic
        yield self.pvalue

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per record (flattened batch index)."""
        def col(a: Any) -> np.ndarray:
            a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            return a.reshape(-1)

        s = col(self.statistic)
        return pd.DataFrame({
            "record": np.arange(s.size), "statistic": s, "pvalue": col(self.pvalue),
            "reject": col(self.reject), "df": self.df, "threshold": self.threshold, "alpha": self.alpha,
            "n_samples": self.n_samples, "statistic_name": self.statistic_name, "covariance": self.covariance,
        })


# ---------------------------------------------------------------------------------- validation
def _check_int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return int(v)


def _validate(alpha, statistic, covariance, n_fft, cp_length, bandwidth, cp_correlation, n):
    if isinstance(alpha, bool) or not isinstance(alpha, (float, int, np.floating)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
    if covariance not in ("white", "cyclic_prefix", "hac"):
        raise ValueError(f"covariance must be 'white', 'cyclic_prefix' or 'hac', got {covariance!r}")
    if n < _MIN_SAMPLES:
        raise ValueError(f"x must have at least {_MIN_SAMPLES} samples per record, got {n}")
    if covariance == "cyclic_prefix":
        if n_fft is None or cp_length is None:
            raise ValueError("covariance='cyclic_prefix' needs n_fft and cp_length")
        n_fft = _check_int("n_fft", n_fft, 2)
        cp_length = _check_int("cp_length", cp_length, 1)
        if cp_length > n_fft:
            raise ValueError(f"cp_length must be <= n_fft ({n_fft}), got {cp_length}")
        if n < n_fft + cp_length + 1:
            raise ValueError(
                f"records must be longer than one OFDM symbol (n_fft + cp_length = {n_fft + cp_length}) "
                f"for covariance='cyclic_prefix', got {n} samples"
            )
        if cp_correlation is not None and (
            isinstance(cp_correlation, bool) or not isinstance(cp_correlation, (int, float, np.floating))
            or not 0.0 <= float(cp_correlation) <= 1.0
        ):
            raise ValueError(f"cp_correlation must be None or a float in [0, 1], got {cp_correlation!r}")
    elif n_fft is not None or cp_length is not None or cp_correlation is not None:
        raise ValueError(
            f"n_fft, cp_length and cp_correlation are only used with covariance='cyclic_prefix', got covariance={covariance!r}"
        )
    if covariance == "hac":
        if bandwidth is None:
            bandwidth = int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))
        bandwidth = _check_int("bandwidth", bandwidth, 0)
        if 2 * (bandwidth + 1) > n:
            raise ValueError(f"bandwidth must be < n_samples / 2 - 1 = {n / 2 - 1:g}, got {bandwidth}")
    elif bandwidth is not None:
        raise ValueError(f"bandwidth is only used with covariance='hac', got covariance={covariance!r}")
    return float(alpha), n_fft, cp_length, bandwidth


# ------------------------------------------------------------------------------------ covariances
def _map_record_chunks(t: torch.Tensor, fn, dtype: torch.dtype, chunk_samples: int) -> torch.Tensor:
    """``fn`` (m records of shape (m, n) -> (m,)) applied to cache-sized chunks of the records of
    ``t`` (..., n); the per-record results, shape ``t.shape[:-1]``."""
    n = t.shape[-1]
    flat = t.reshape(-1, n)
    out = torch.empty(flat.shape[0], dtype=dtype, device=t.device)
    step = max(1, chunk_samples // n)
    for s in range(0, flat.shape[0], step):
        out[s : s + step] = fn(flat[s : s + step])
    return out.reshape(t.shape[:-1])


def _components(norm: dict[str, torch.Tensor], comps: tuple[str, ...]) -> torch.Tensor:
    parts = {
        "c40_re": lambda: norm["40"].real, "c40_im": lambda: norm["40"].imag,
        "c41_re": lambda: norm["41"].real, "c41_im": lambda: norm["41"].imag,
        "c42": lambda: norm["42"].real if norm["42"].is_complex() else norm["42"],
    }
    return torch.stack([parts[c]() for c in comps], -1)


def _lag_correlation(t: torch.Tensor, lag: int) -> torch.Tensor:
    """``mean_n x_{n+lag} conj(x_n)`` per record (complex128), in cache-sized chunks of records."""
    n = t.shape[-1]

    def chunk(xc: torch.Tensor) -> torch.Tensor:
        if xc.is_complex():
            a, b = xc.real.to(torch.float64), xc.imag.to(torch.float64)
            re = (a[:, lag:] * a[:, :-lag]).sum(-1) + (b[:, lag:] * b[:, :-lag]).sum(-1)
            im = (b[:, lag:] * a[:, :-lag]).sum(-1) - (a[:, lag:] * b[:, :-lag]).sum(-1)
        else:
            a = xc.to(torch.float64)
            re, im = (a[:, lag:] * a[:, :-lag]).sum(-1), torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
        return torch.complex(re, im) / (n - lag)

    return _map_record_chunks(t, chunk, torch.complex128, 1 << 16)


def _cp_factors(t: torch.Tensor, c21: torch.Tensor, n_fft: int, cp_length: int,
                rho: float | None, comps: tuple[str, ...]) -> torch.Tensor:
    """Variance factors ``1 + 2 f w(rho)`` per component, shape (..., d)."""
    f = cp_length / (n_fft + cp_length)
    if rho is None:
        r = _lag_correlation(t, n_fft) / (f * c21)
        r = torch.where(r.abs() > 1.0, r / r.abs(), r)  # a correlation: clip the modulus to 1
        r = r.to(torch.complex128)
    else:
        r = torch.full_like(c21, float(rho)).to(torch.complex128)
    a2 = r.abs().square()
    w = {
        "c40_re": (r**4).real, "c40_im": (r**4).real,
        "c41_re": a2 * (r**2).real, "c41_im": a2 * (r**2).real,
        "c42": a2.square(),
    }
    return torch.stack([1.0 + 2.0 * f * w[c] for c in comps], -1)


def _influences(x: torch.Tensor, mo: dict[str, torch.Tensor], norm: dict[str, torch.Tensor],
                comps: tuple[str, ...]) -> torch.Tensor:
    """Delta-method influence functions of the components, shape (m, N, d), float64."""
    x = x.to(torch.complex128)
    x2 = x * x
    p = x.real.square() + x.imag.square()
    e = lambda k: mo[k].unsqueeze(-1)  # noqa: E731
    s = e("M21")
    d20, d21 = x2 - e("M20"), p - s
    out = {}
    if any(c.startswith("c40") for c in comps):
        g = (x2 * x2 - e("M40") - 6.0 * e("M20") * d20) / s**2 - 2.0 * norm["40"].unsqueeze(-1) * d21 / s
        out["c40_re"], out["c40_im"] = g.real, g.imag
    if any(c.startswith("c41") for c in comps):
        g = (x2 * p - e("M41") - 3.0 * s * d20 - 3.0 * e("M20") * d21) / s**2 - 2.0 * norm["41"].unsqueeze(-1) * d21 / s
        out["c41_re"], out["c41_im"] = g.real, g.imag
    g = (p * p - e("M42") - 2.0 * (e("M20").conj() * d20).real - 4.0 * s * d21) / s**2
    out["c42"] = g - 2.0 * norm["42"].real.unsqueeze(-1) * d21 / s
    return torch.stack([out[c] for c in comps], -1)


def _hac_statistic(t: torch.Tensor, comps: tuple[str, ...], bandwidth: int) -> torch.Tensor:
    """``c^T Sigma_HAC^{-1} c`` per record (without the factor N)."""
    n = t.shape[-1]

    def chunk(xc: torch.Tensor) -> torch.Tensor:
        mo = moments_from_means(moment_means(xc))
        c = cumulants_from_moments(mo)
        norm = {k: c[f"C{k}"] / mo["M21"] ** 2 for k in ("40", "41", "42")}
        g = _influences(xc, mo, norm, comps)  # (m, N, d)
        g = g - g.mean(1, keepdim=True)
        sigma = g.transpose(1, 2) @ g / n
        for k in range(1, bandwidth + 1):
            gk = g[:, k:].transpose(1, 2) @ g[:, :-k] / n
            sigma = sigma + (1.0 - k / (bandwidth + 1.0)) * (gk + gk.transpose(1, 2))
        cv = _components(norm, comps)
        sol = torch.linalg.lstsq(sigma, cv.unsqueeze(-1)).solution.squeeze(-1)
        return (cv * sol).sum(-1)

    return _map_record_chunks(t, chunk, torch.float64, 1 << 15)


# ------------------------------------------------------------------------------------------- test
def gaussianity_test(
    x: Any,
    *,
    alpha: float = 0.05,
    statistic: Literal["c40_c42", "c42", "c40_c41_c42"] = "c40_c42",
    covariance: Literal["white", "cyclic_prefix", "hac"] = "white",
    n_fft: int | None = None,
    cp_length: int | None = None,
    bandwidth: int | None = None,
    cp_correlation: float | None = None,
    axis: int = -1,
) -> GaussianityTestResult:
    """Chi-square CFAR test of complex Gaussianity on fourth-order cumulants, one per record.

    Parameters
    ----------
    x : Tensor or ndarray, shape (..., N, ...)
        Zero-mean complex baseband records (the record runs along ``axis``; other axes are batch
        axes). For real records ``C40 = C41 = C42`` is the excess kurtosis and every ``statistic``
        reduces to the one-degree-of-freedom kurtosis test ``N k^2 / 24`` (reported as
        ``statistic_name="kurtosis"``, ``df = 1``).
    alpha : float
        Level: ``threshold = chi^2_{df, 1 - alpha}``.
    statistic : {"c40_c42", "c42", "c40_c41_c42"}
        Which normalised cumulants enter ``D``: ``(Re, Im C~40, C~42)`` (df = 3), ``C~42`` alone
        (df = 1; invariant to phase and frequency offsets) or all five real parts (df = 5).
    covariance : {"white", "cyclic_prefix", "hac"}
        H0 covariance of the cumulant estimates (see the module docstring): i.i.d. samples;
        OFDM samples with a cyclic prefix (needs ``n_fft`` and ``cp_length``); Bartlett HAC.
    n_fft, cp_length : int, optional
        OFDM FFT size and cyclic-prefix length, for ``covariance="cyclic_prefix"``.
    bandwidth : int, optional
        Bartlett bandwidth (number of lags) for ``covariance="hac"``; default
        ``floor(4 (N/100)^(2/9))`` (Newey & West 1994).
    cp_correlation : float, optional
        Correlation ``rho`` between a prefix sample and its copy; default: estimated per record
        from the lag-``n_fft`` autocorrelation. ``1.0`` gives the factor ``1 + 2L/(N_fft + L)``.
    axis : int
        The sample axis.

    Returns
    -------
    GaussianityTestResult
        ``statistic``, ``pvalue``, ``reject`` with the batch shape (numpy for numpy input, torch
        on ``x``'s device otherwise), ``df``, ``threshold``. Unpacks as ``statistic, pvalue``.

    References
    ----------
    A. Gorcin and H. Arslan, "An OFDM signal identification method for wireless communications
    systems", IEEE Trans. Veh. Technol. 64(12), 2015, Sec. III (the chi-square CFAR test).
    G. B. Giannakis and M. K. Tsatsanis, "Time-domain tests for Gaussianity and time-reversibility",
    IEEE Trans. Signal Process. 42(12), 1994. W. K. Newey and K. D. West, "Automatic lag selection
    in covariance matrix estimation", Rev. Econ. Stud. 61(4), 1994.

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants import gaussianity_test
    >>> g = torch.Generator().manual_seed(0)
    >>> noise = torch.randn(1000, 1024, dtype=torch.complex128, generator=g)
    >>> res = gaussianity_test(noise)
    >>> res.df, round(res.threshold, 3)
    (3, 7.815)
    >>> 0.03 < res.reject.double().mean().item() < 0.07
    True
    >>> stat, p = gaussianity_test(noise[0])
    """
    t, from_numpy = as_records(x, axis)
    n = int(t.shape[-1])
    alpha, n_fft, cp_length, bandwidth = _validate(
        alpha, statistic, covariance, n_fft, cp_length, bandwidth, cp_correlation, n
    )
    real = not t.is_complex()
    comps = ("c42",) if real else STATISTICS[statistic]
    df = len(comps)
    norm, c21 = normalized_cumulants(t)
    if covariance == "hac":
        q = n * _hac_statistic(t, comps, bandwidth)
        q = torch.where(torch.isnan(c21), c21, q)
    else:
        mu, var = (torch.tensor(v, dtype=torch.float64, device=t.device) for v in h0_moments(n, comps, real))
        if covariance == "cyclic_prefix":
            var = var * _cp_factors(t, c21, n_fft, cp_length, cp_correlation, comps)
        q = ((_components(norm, comps) - mu).square() / var).sum(-1)
    stat = q
    pval = torch.special.gammaincc(torch.full_like(stat, df / 2.0), stat / 2.0)
    thr = float(stats.chi2.isf(alpha, df))
    rdt = real_dtype(t.dtype)
    return GaussianityTestResult(
        statistic=to_output(stat.to(rdt), from_numpy),
        pvalue=to_output(pval.to(rdt), from_numpy),
        df=df,
        threshold=thr,
        reject=to_output(stat > thr, from_numpy),
        alpha=alpha,
        n_samples=n,
        statistic_name="kurtosis" if real else statistic,
        covariance=covariance,
    )
