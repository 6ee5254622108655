"""Batch inverse-variance weights (BIV, Mai et al. 2022) and the kurtosis-aware BIEV variance (Kim et al. 2024).

BIV weights a batch of regression targets by ``w_b ∝ 1 / (sigma_b^2 + xi)`` with the smallest
``xi >= 0`` for which the effective batch size ``(sum w)^2 / sum w^2`` reaches a target. The effective
batch size grows monotonically with ``xi`` (from the inverse-variance value at ``xi = 0`` to the batch
size as ``xi -> inf``), so ``xi`` is found exactly by bisection.
"""
from __future__ import annotations

import math

import torch

__all__ = ["effective_batch_size", "biv_xi", "biv_weights", "biev_variance", "ensemble_excess_kurtosis"]


def effective_batch_size(weights: torch.Tensor) -> torch.Tensor:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of non-negative weights (last axis).

    Examples
    --------
    >>> effective_batch_size(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    tensor(4.)
    """
    return weights.sum(-1) ** 2 / (weights**2).sum(-1)


def _check_variances(variances: torch.Tensor, min_ebs: float | None) -> tuple[torch.Tensor, float]:
    if not isinstance(variances, torch.Tensor):
        raise TypeError(f"variances must be a torch.Tensor, got {type(variances).__name__}")
    if variances.ndim != 1 or variances.numel() < 2:
        raise ValueError(f"variances must have shape (batch,) with batch >= 2, got {tuple(variances.shape)}")
    if not torch.isfinite(variances).all():
        raise ValueError("variances contain NaN or infinite values")
    if torch.any(variances < 0):
        raise ValueError(f"variances must be non-negative, got min {float(variances.min())}")
    B = variances.numel()
    if min_ebs is None:
        min_ebs = float(min(B - 1, 16))  # the reference implementation's default
    if not 1.0 <= float(min_ebs) <= B:
        raise ValueError(f"min_ebs must be in [1, batch size = {B}], got {min_ebs}")
    return variances.detach().double(), float(min_ebs)


def _ebs(var: torch.Tensor, xi: float) -> float:
    w = 1.0 / (var + xi)
    return float(w.sum() ** 2 / (w * w).sum())


def biv_xi(variances: torch.Tensor, *, min_ebs: float | None = None, rtol: float = 1e-13) -> float:
    r"""Smallest ``xi >= 0`` with ``EBS(xi) >= min_ebs`` for weights ``1 / (variances + xi)``.

    ``xi = 0`` when the inverse-variance weights already reach the target; ``inf`` when the target is the
    batch size and the variances are not all equal (only uniform weights reach it). Otherwise bisection
    on the monotone map ``xi -> EBS(xi)`` to a relative width ``rtol``, returning the upper end, so the
    target is met (and hit to ``~rtol`` relative precision).

    Parameters
    ----------
    variances : Tensor, shape (batch,)
        Non-negative variance estimates, one per sample.
    min_ebs : float, optional
        Target effective batch size in ``[1, batch]``; default ``min(batch - 1, 16)`` as in Mai et al.'s code.
    rtol : float
        Relative precision of ``xi``.

    Returns
    -------
    float

    References
    ----------
    Mai, Mani, Paull, "Sample efficient deep reinforcement learning via uncertainty estimation", ICLR 2022.

    Examples
    --------
    >>> v = torch.tensor([0.01, 1.0, 1.0, 1.0], dtype=torch.float64)
    >>> xi = biv_xi(v, min_ebs=3.0)
    >>> round(float(effective_batch_size(1 / (v + xi))), 9)
    3.0
    """
    var, target = _check_variances(variances, min_ebs)
    B = var.numel()
    if torch.all(var == var[0]):
        return 0.0
    n_zero = int((var == 0).sum())
    if n_zero:
        # at xi -> 0+ the zero-variance samples share all the weight: EBS -> n_zero
        if n_zero >= target:
            return 0.0
    elif _ebs(var, 0.0) >= target:
        return 0.0
    if target >= B:
        return math.inf
    lo, hi = 0.0, float(var.max()) + float(var.mean()) + 1e-300
    while _ebs(var, hi) < target:
        lo, hi = hi, 2.0 * hi
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _ebs(var, mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def biv_weights(variances: torch.Tensor, *, min_ebs: float | None = None) -> torch.Tensor:
    r"""Batch inverse-variance weights ``w_b = (sigma_b^2 + xi)^-1 / sum_c (sigma_c^2 + xi)^-1``.

    ``xi`` from :func:`biv_xi`: the smallest non-negative value giving effective batch size ``>= min_ebs``.
    The weights sum to 1 and are constants (no gradient).

    Parameters
    ----------
    variances : Tensor, shape (batch,)
    min_ebs : float, optional
        Target effective batch size (default ``min(batch - 1, 16)``); above the batch size is an error.

    Returns
    -------
    Tensor, shape (batch,)
        In the dtype and device of ``variances``.

    Examples
    --------
    >>> w = biv_weights(torch.tensor([0.1, 1.0, 10.0, 1.0], dtype=torch.float64), min_ebs=2.0)
    >>> float(w.sum())
    1.0
    """
    xi = biv_xi(variances, min_ebs=min_ebs)
    var = variances.detach().double()
    if math.isinf(xi):
        w = torch.ones_like(var)
    elif xi == 0.0 and torch.any(var == 0):
        w = (var == 0).double()  # zero-variance samples take all the weight
    else:
        w = 1.0 / (var + xi)
    return (w / w.sum()).to(variances.dtype)


def ensemble_excess_kurtosis(x: torch.Tensor, *, dim: int = 0, unbiased: bool = False) -> torch.Tensor:
    """Sample excess kurtosis along ``dim`` (0 where the members agree exactly).

    ``unbiased=False``: ``g2 = m4 / m2^2 - 3`` (``scipy.stats.kurtosis(bias=True)``). ``unbiased=True``:
    the bias-corrected ``G2 = (n - 1) ((n + 1) g2 + 6) / ((n - 2)(n - 3))`` for ``n > 3`` members
    (``scipy.stats.kurtosis(bias=False)``; ``g2`` itself for ``n <= 3``, as scipy does).

    Examples
    --------
    >>> ensemble_excess_kurtosis(torch.tensor([[-1.0], [1.0]]))
    tensor([-2.])
    """
    d = x - x.mean(dim, keepdim=True)
    m2 = (d**2).mean(dim)
    m4 = (d**4).mean(dim)
    safe = torch.where(m2 > 0, m2, torch.ones_like(m2))
    g2 = torch.where(m2 > 0, m4 / safe**2 - 3, torch.zeros_like(m2))
    n = x.shape[dim]
    if unbiased and n > 3:
        g2 = torch.where(m2 > 0, (n - 1) * ((n + 1) * g2 + 6) / ((n - 2) * (n - 3)), g2)
    return g2


def biev_variance(td_errors: torch.Tensor, *, dim: int = 0, ddof: int = 1,
                  unbiased_kurtosis: bool = False) -> torch.Tensor:
    r"""Kurtosis-corrected ensemble variance of TD errors (BIEV, Kim et al. 2024).

    ``s^2 / ((K + 1)/(K - 1) + kappa/K)`` with ``s^2`` the variance of the ``K`` members' TD errors
    (divisor ``K - ddof``) and ``kappa`` their sample excess kurtosis (:func:`ensemble_excess_kurtosis`).
    Since ``E[s^4] = sigma^4 ((K+1)/(K-1) + kappa/K)`` for the unbiased ``s^2``, ``c s^2`` with
    ``c = 1/((K+1)/(K-1) + kappa/K)`` is the multiple of ``s^2`` with the smallest mean squared error
    for ``sigma^2``; BIEV plugs in the sample kurtosis. The defaults (``ddof=1``, biased kurtosis) are
    that derivation; the authors' released code uses ``ddof=0`` and the bias-corrected kurtosis
    (``np.var(ddof=0)``, ``scipy.stats.kurtosis(bias=False)``), which :func:`value_loss` ``"ggd_biev"`` uses.

    Parameters
    ----------
    td_errors : Tensor, shape (K, batch) (members along ``dim``)
    dim : int
        The ensemble axis (``K >= 2``).
    ddof : int
        Delta degrees of freedom of the variance (0 or 1).
    unbiased_kurtosis : bool
        Use the bias-corrected sample kurtosis.

    Returns
    -------
    Tensor, shape (batch,)
        Detached variance estimates.

    References
    ----------
    Kim et al., arXiv 2408.02295, Section 4.3 (batch inverse error variance).

    Examples
    --------
    >>> d = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    >>> biev_variance(d)
    tensor([2.6667, 0.0000])
    """
    if not isinstance(td_errors, torch.Tensor):
        raise TypeError(f"td_errors must be a torch.Tensor, got {type(td_errors).__name__}")
    if td_errors.ndim == 0 or td_errors.shape[dim] < 2:
        raise ValueError(f"td_errors needs at least 2 ensemble members along dim {dim}, got shape "
                         f"{tuple(td_errors.shape)}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    if not torch.isfinite(td_errors).all():
        raise ValueError("td_errors contain NaN or infinite values")
    d = td_errors.detach()
    K = d.shape[dim]
    s2 = d.var(dim, correction=ddof)
    kappa = ensemble_excess_kurtosis(d, dim=dim, unbiased=unbiased_kurtosis)
    return s2 / ((K + 1) / (K - 1) + kappa / K)
