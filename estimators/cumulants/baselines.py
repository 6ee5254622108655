"""Baseline Gaussianity tests for complex records (REFERENCE.md section 5).

* ``normaltest_test``: D'Agostino-Pearson ``scipy.stats.normaltest`` on the real and on the
  imaginary part, combined by Bonferroni (``p = min(1, 2 min(p_re, p_im))``).
* ``jarque_bera_test``: ``statsmodels`` Jarque-Bera on Re/Im, Bonferroni-combined.

Both part statistics (K^2, JB) are referred to chi^2 with 2 degrees of freedom, so the Bonferroni
decision ``p < alpha`` is ``max(stat_re, stat_im) > chi^2_{2, 1 - alpha/2}``: the results report
``df = 2`` and that threshold, and ``reject == (statistic > threshold)``.
* ``c42_threshold_test``: the fixed decision ``|C~42| > threshold`` (no p-value).

All return :class:`~estimators.cumulants.GaussianityTestResult` so they plug into
:func:`~estimators.cumulants.size_power` like the chi-square test.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from scipy import stats

from .cumulants import as_records, cumulants, to_output
from .gaussianity import GaussianityTestResult

__all__ = ["c42_threshold_test", "jarque_bera_test", "normaltest_test"]


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}")
    return float(alpha)


def _re_im(x: Any, axis: int) -> tuple[np.ndarray, bool, torch.Tensor]:
    t, from_numpy = as_records(x, axis)
    if not t.is_complex():
        raise TypeError(f"x must be complex for the Re/Im baselines, got dtype {t.dtype}")
    a = t.detach().cpu().numpy()
    return np.stack([a.real, a.imag]), from_numpy, t


def _re_im_test(x: Any, alpha: float, axis: int, name: str, min_n: int,
                test: Callable[[np.ndarray], tuple[Any, Any]]) -> GaussianityTestResult:
    """Apply the scalar test ``test(ri) -> (statistic, pvalue)`` (along the last axis) to Re and Im
    of each record and combine the two by Bonferroni."""
    alpha = _check_alpha(alpha)
    ri, from_numpy, t = _re_im(x, axis)
    n = ri.shape[-1]
    if n < min_n:
        raise ValueError(f"{name} needs at least {min_n} samples per record, got {n}")
    stat, p = (np.asarray(a) for a in test(ri))
    pb = np.minimum(1.0, 2.0 * np.min(p, axis=0))  # Bonferroni over (Re, Im)
    st = np.max(stat, axis=0)
    wrap = (lambda a: a) if from_numpy else (lambda a: torch.as_tensor(a, device=t.device))
    # p = chi2_2.sf(stat) for both parts, so p_b < alpha  <=>  max stat > chi2_2.isf(alpha / 2)
    threshold = float(stats.chi2.isf(alpha / 2, 2))
    return GaussianityTestResult(
        statistic=wrap(st), pvalue=wrap(pb), df=2, threshold=threshold, reject=wrap(pb < alpha),
        alpha=alpha, n_samples=n, statistic_name=name, covariance="white",
    )


def normaltest_test(x: Any, *, alpha: float = 0.05, axis: int = -1) -> GaussianityTestResult:
    """D'Agostino-Pearson test on Re and Im with a Bonferroni correction, batched over records.

    ``statistic`` is the larger of the two K^2 statistics, ``pvalue`` the Bonferroni p-value,
    ``df = 2`` and ``threshold = chi^2_{2, 1 - alpha/2}`` (``reject == statistic > threshold``).

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants import normaltest_test
    >>> x = torch.randn(3, 256, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    >>> normaltest_test(x).pvalue.shape
    torch.Size([3])
    """
    return _re_im_test(x, alpha, axis, "normaltest", 20, lambda ri: stats.normaltest(ri, axis=-1)[:2])


def jarque_bera_test(x: Any, *, alpha: float = 0.05, axis: int = -1) -> GaussianityTestResult:
    """statsmodels Jarque-Bera test on Re and Im with a Bonferroni correction, batched.

    ``statistic`` is the larger JB, ``df = 2``, ``threshold = chi^2_{2, 1 - alpha/2}`` (as for
    :func:`normaltest_test`).

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants import jarque_bera_test
    >>> x = torch.randn(3, 256, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    >>> jarque_bera_test(x).reject.shape
    torch.Size([3])
    """
    from statsmodels.stats.stattools import jarque_bera

    return _re_im_test(x, alpha, axis, "jarque_bera", 8, lambda ri: jarque_bera(ri, axis=-1)[:2])


def c42_threshold_test(x: Any, *, threshold: float = 0.1, axis: int = -1) -> GaussianityTestResult:
    """Reject Gaussianity when ``|C~42| > threshold`` (a fixed, SNR- and N-blind decision rule).

    ``statistic`` is ``|C~42|``; ``pvalue`` is NaN (the rule has no null distribution).

    Examples
    --------
    >>> import torch
    >>> from estimators.cumulants import c42_threshold_test
    >>> qpsk = torch.tensor([1 + 1j, 1 - 1j, -1 + 1j, -1 - 1j] * 64) / 2**0.5
    >>> bool(c42_threshold_test(qpsk).reject)
    True
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold must be a positive float, got {threshold!r}")
    t, from_numpy = as_records(x, axis)
    c = cumulants(t).c42_norm.abs().to(torch.float64)
    return GaussianityTestResult(
        statistic=to_output(c, from_numpy), pvalue=to_output(torch.full_like(c, math.nan), from_numpy),
        df=1, threshold=float(threshold), reject=to_output(c > threshold, from_numpy), alpha=math.nan,
        n_samples=int(t.shape[-1]), statistic_name="c42_threshold", covariance="none",
    )
