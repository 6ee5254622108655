"""Monte Carlo size and power curves of Gaussianity tests, through :func:`genstat.mc.replicate`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from genstat.mc import replicate

from .baselines import c42_threshold_test, jarque_bera_test, normaltest_test
from .gaussianity import STATISTICS, gaussianity_test
from .signals import SignalConfig

__all__ = ["SizePowerResult", "TESTS", "clopper_pearson", "resolve_test", "size_power"]

#: named tests accepted by :func:`size_power` (the chi-square statistics and the baselines)
TESTS = tuple(STATISTICS) + ("normaltest", "jarque_bera", "c42_threshold")


def clopper_pearson(k: np.ndarray, n: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) binomial confidence interval for ``k`` successes out of ``n``.

    Examples
    --------
    >>> from estimators.cumulants import clopper_pearson
    >>> lo, hi = clopper_pearson(50, 1000)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.0373, 0.0654)
    """
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    k = np.asarray(k, dtype=float)
    a = 1.0 - float(level)
    lo = np.where(k > 0, stats.beta.ppf(a / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - a / 2, k + 1, n - k), 1.0)
    return lo, hi


def resolve_test(test: str | Callable, alpha: float = 0.05, **options: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Turn a test name of :data:`TESTS` (or a callable ``x -> result``) into ``x -> reject (n,)``."""
    if callable(test):
        fn = test
    elif test in STATISTICS:
        fn = lambda x: gaussianity_test(x, alpha=alpha, statistic=test, **options)  # noqa: E731
    elif test == "normaltest":
        fn = lambda x: normaltest_test(x, alpha=alpha, **options)  # noqa: E731
    elif test == "jarque_bera":
        fn = lambda x: jarque_bera_test(x, alpha=alpha, **options)  # noqa: E731
    elif test == "c42_threshold":
        fn = lambda x: c42_threshold_test(x, **options)  # noqa: E731
    else:
        raise ValueError(f"test must be a callable or one of {TESTS}, got {test!r}")

    def reject(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)
        r = out.reject if hasattr(out, "reject") else out
        return torch.as_tensor(np.asarray(r.cpu() if isinstance(r, torch.Tensor) else r)).to(torch.float64)

    return reject


@dataclass(frozen=True, slots=True)
class SizePowerResult:
    """Rejection rates of a test over seeded Monte Carlo trials, one per SNR.

    Attributes
    ----------
    snr_db : ndarray, shape (k,)
        SNRs (NaN for noise-free records).
    rejections : ndarray of int, shape (k,)
        Number of rejections out of ``n_trials``.
    n_trials, n_samples : int
    test, signal : str
        Labels of the test and of the scenario.
    alpha : float
        Nominal level of the test.
    """

    snr_db: np.ndarray
    rejections: np.ndarray
    n_trials: int
    n_samples: int
    test: str
    signal: str
    alpha: float

    @property
    def rate(self) -> np.ndarray:
        """Empirical rejection rate (size under H0, power otherwise)."""
        return self.rejections / self.n_trials

    @property
    def stderr(self) -> np.ndarray:
        """Binomial standard error ``sqrt(r (1 - r) / n)``."""
        r = self.rate
        return np.sqrt(r * (1 - r) / self.n_trials)

    def confidence_interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Clopper-Pearson interval of each rate."""
        return clopper_pearson(self.rejections, self.n_trials, level)

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Tidy table: one row per SNR with the rate and its confidence interval."""
        lo, hi = self.confidence_interval(level)
        return pd.DataFrame({
            "signal": self.signal, "test": self.test, "n_samples": self.n_samples, "snr_db": self.snr_db,
            "rate": self.rate, "ci_low": lo, "ci_high": hi, "rejections": self.rejections,
            "n_trials": self.n_trials, "alpha": self.alpha,
        })


def size_power(
    test: str | Callable,
    signal: SignalConfig,
    *,
    snr_db: float | Sequence[float | None] | None,
    n_samples: int = 1024,
    n_trials: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    block_size: int = 250,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.complex128,
    test_options: dict | None = None,
) -> SizePowerResult:
    """Rejection rate of ``test`` on records of ``signal`` at each SNR, with binomial CIs.

    Trials are :func:`genstat.mc.replicate` blocks of ``block_size`` records, block ``b`` seeded
    from ``(seed, b)``; every SNR reuses the same seeds (common random numbers: the symbol and
    noise draws are shared, only the noise scale changes), so curves are smooth in the SNR.

    Parameters
    ----------
    test : str or callable
        One of :data:`TESTS` or ``x -> result`` with a ``reject`` attribute (or a bool tensor).
    signal : SignalConfig
        The scenario (``SignalConfig("noise")`` for H0).
    snr_db : float, None or sequence
        SNR(s) in dB; ``None`` means noise-free.
    n_samples, n_trials : int
        Record length and number of records per SNR.
    alpha : float
        Level of the test.
    seed, block_size, device, dtype
        Engine options.
    test_options : dict, optional
        Extra keywords of the test (e.g. ``covariance="cyclic_prefix", n_fft=64, cp_length=16``).

    Returns
    -------
    SizePowerResult

    Examples
    --------
    >>> from estimators.cumulants import SignalConfig, size_power
    >>> res = size_power("c42", SignalConfig("single_carrier", "qpsk"), snr_db=[0.0, 10.0],
    ...                  n_samples=256, n_trials=100, block_size=50)
    >>> res.to_frame()[["snr_db", "rate"]].shape
    (2, 2)
    """
    if not isinstance(signal, SignalConfig):
        raise TypeError(f"signal must be a SignalConfig, got {type(signal).__name__}")
    snrs = [snr_db] if snr_db is None or isinstance(snr_db, (int, float)) else list(snr_db)
    if not snrs:
        raise ValueError("snr_db must not be empty")
    reject = resolve_test(test, alpha, **(test_options or {}))
    counts = []
    for snr in snrs:
        def fn(n: int, gen: torch.Generator, dev: torch.device, snr=snr) -> torch.Tensor:
            return reject(signal.generate(n, n_samples, snr, generator=gen, dtype=dtype))

        r = replicate(fn, n_trials, block_size=min(block_size, n_trials), seed=seed, device=device)
        counts.append(int(r.sum().item()))
    return SizePowerResult(
        snr_db=np.array([math.nan if s is None else float(s) for s in snrs]),
        rejections=np.array(counts), n_trials=int(n_trials), n_samples=int(n_samples),
        test=test if isinstance(test, str) else getattr(test, "__name__", "custom"),
        signal=signal.label, alpha=float(alpha),
    )
