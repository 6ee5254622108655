"""Diagnostics of importance weights: the Pareto k-hat of their right tail (Vehtari et al.).

The importance-sampling estimate of a mean is only trustworthy when the weights have a light
enough tail. Fitting a generalised Pareto distribution to the largest ``M = min(S/5, 3 sqrt(S))``
weights gives the shape estimate k-hat: below 0.5 the weights have a finite variance and the CLT
holds; between 0.5 and 0.7 the estimate converges slowly; above ``min(1 - 1/log10(S), 0.7)`` the
estimate and its standard error cannot be trusted whatever the ESS says.

References
----------
Vehtari, Simpson, Gelman, Yao & Gabry (2024), "Pareto smoothed importance sampling", JMLR 25(72),
Sections 2-3 (tail size, thresholds) and Appendix (the weakly informative prior on k).
Zhang & Stephens (2009), "A new and efficient estimation method for the generalized Pareto
distribution", Technometrics 51(3), 316-325 (the quasi-Bayesian estimate used here).
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["gpd_fit", "pareto_khat", "khat_threshold", "tail_length"]


def tail_length(n: int) -> int:
    """Number of tail weights ``M = ceil(min(n / 5, 3 sqrt(n)))`` used for k-hat (Vehtari et al. 2024)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))


def khat_threshold(n: int) -> float:
    """Sample-size dependent reliability threshold ``min(1 - 1/log10(n), 0.7)`` for k-hat."""
    if n <= 10:
        return 0.0
    return min(1.0 - 1.0 / math.log10(n), 0.7)


def gpd_fit(exceedances, *, prior: bool = True) -> tuple[float, float]:
    """Fit a generalised Pareto distribution to positive exceedances (Zhang & Stephens 2009).

    Parameters
    ----------
    exceedances : array-like, shape (m,)
        Positive values ``x - u`` above a threshold ``u``.
    prior : bool
        Shrink the shape towards 0.5 with the weakly informative prior of Vehtari et al. (2024),
        equivalent to 10 extra observations.

    Returns
    -------
    (k, sigma) : tuple of float
        Shape (``k > 0``: heavy tail, ``1/k`` finite moments) and scale. ``(nan, nan)`` when fewer
        than 5 exceedances are given or all are equal.
    """
    x = np.sort(np.asarray(exceedances, dtype=np.float64).reshape(-1))
    if x.size and (not np.all(np.isfinite(x)) or x[0] <= 0):
        raise ValueError("exceedances must be positive and finite")
    n = x.size
    if n < 5 or x[-1] == x[0]:
        return float("nan"), float("nan")
    # Zhang & Stephens: a grid of m values of theta = -k/sigma from a profile-likelihood-shaped
    # prior, each theta's log-likelihood, and the posterior mean of theta under those weights.
    m = 30 + int(math.sqrt(n))
    quartile = x[max(int(n / 4 + 0.5) - 1, 0)]
    j = np.arange(1, m + 1)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile)
    # with theta = -k/sigma the MLE of k given theta is mean log(1 - theta x), and the profile
    # log-likelihood is n (log(-theta/k) - k - 1)
    k_of = np.log1p(-theta[:, None] * x[None, :]).mean(1)
    loglik = n * (np.log(-theta / k_of) - k_of - 1.0)
    w = np.exp(loglik - loglik.max())
    w /= w.sum()
    theta_hat = float((w * theta).sum())
    k_hat = float(np.log1p(-theta_hat * x).mean())
    sigma = -k_hat / theta_hat
    if prior:
        k_hat = (n * k_hat + 10 * 0.5) / (n + 10)
    return k_hat, sigma


def _khat_from_top(top: torch.Tensor, n: int) -> float:
    """k-hat from the ``tail_length(n) + 1`` largest log-weights (any order) of a sample of ``n``."""
    m = tail_length(n)
    lw = torch.sort(top.to(torch.float64).reshape(-1).cpu(), descending=True).values[: m + 1]
    if lw.numel() < m + 1 or n < 25 or not bool(torch.isfinite(lw[-1])):
        return float("nan")
    w = torch.exp(lw - lw[0]).numpy()
    exceed = w[:m] - w[m]
    exceed = exceed[exceed > 0]
    if exceed.size < 5:
        return float("nan")
    return gpd_fit(exceed)[0]


def pareto_khat(log_weights: torch.Tensor) -> float:
    """Pareto k-hat of importance weights given as log-weights (any additive constant).

    Parameters
    ----------
    log_weights : Tensor, shape (n,)
        ``log p(x) - log q(x)`` for ``x ~ q``; ``-inf`` allowed (zero weight).

    Returns
    -------
    float
        The shape of a generalised Pareto fit to the ``M = min(n/5, 3 sqrt(n))`` largest weights
        (NaN when ``n < 25`` or the tail is degenerate). Compare with :func:`khat_threshold`.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(20_000, generator=g, dtype=torch.float64)
    >>> pareto_khat(-0.5 * (x - 0.5) ** 2 + 0.5 * x**2) < 0.5     # N(0.5, 1) from N(0, 1): light tail
    True
    """
    if not isinstance(log_weights, torch.Tensor):
        raise TypeError(f"log_weights must be a torch.Tensor, got {type(log_weights).__name__}")
    if log_weights.ndim != 1:
        raise ValueError(f"log_weights must have shape (n,), got {tuple(log_weights.shape)}")
    if bool(torch.isnan(log_weights).any()) or bool(torch.isposinf(log_weights).any()):
        raise ValueError("log_weights contain NaN or +inf")
    n = log_weights.numel()
    if n < 25:
        return float("nan")
    m = tail_length(n)
    top = torch.topk(log_weights.to(torch.float64), min(m + 1, n)).values
    return _khat_from_top(top, n)
