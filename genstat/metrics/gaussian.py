"""Bures-Wasserstein distance and BW-UVP between Gaussians.

All functions are batched over leading dimensions and differentiable; they work in the inputs'
dtype (use float64 for tight comparisons).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sqrtm_psd", "bures_trace", "bures_wasserstein", "bw_uvp"]


def _check_cov(name: str, cov: Tensor) -> None:
    if not isinstance(cov, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cov).__name__}")
    if cov.dim() < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name} must have shape (..., d, d), got {tuple(cov.shape)}")
    if not torch.isfinite(cov).all():
        raise ValueError(f"{name} must be finite")


def sqrtm_psd(cov: Tensor) -> Tensor:
    """Symmetric square root of a (batch of) positive semi-definite matrices.

    Parameters
    ----------
    cov : Tensor, shape (..., d, d)
        Symmetric PSD matrices (symmetrised before the eigendecomposition).

    Returns
    -------
    Tensor, shape (..., d, d)
        ``U diag(sqrt(max(lambda, 0))) U^T``.

    Examples
    --------
    >>> import torch
    >>> r = sqrtm_psd(torch.diag(torch.tensor([4.0, 9.0])))
    >>> torch.diagonal(r).tolist()
    [2.0, 3.0]
    """
    _check_cov("cov", cov)
    sym = 0.5 * (cov + cov.mT)
    evals, evecs = torch.linalg.eigh(sym)
    return (evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)) @ evecs.mT


def bures_trace(cov1: Tensor, cov2: Tensor) -> Tensor:
    """``tr (cov1^1/2 cov2 cov1^1/2)^1/2``, the cross term of the Bures metric.

    Parameters
    ----------
    cov1, cov2 : Tensor, shape (..., d, d)
        PSD matrices (broadcast against each other).

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch
    >>> float(bures_trace(torch.eye(3), 4 * torch.eye(3)))
    6.0
    """
    _check_cov("cov1", cov1)
    _check_cov("cov2", cov2)
    if cov1.shape[-1] != cov2.shape[-1]:
        raise ValueError(f"cov1 and cov2 must have the same d, got {cov1.shape[-1]} and {cov2.shape[-1]}")
    root = sqrtm_psd(cov1)
    middle = root @ cov2 @ root
    evals = torch.linalg.eigvalsh(0.5 * (middle + middle.mT))
    return evals.clamp_min(0).sqrt().sum(-1)


def bures_wasserstein(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance between ``N(mean1, cov1)`` and ``N(mean2, cov2)``.

    ``W2^2 = |mean1 - mean2|^2 + tr cov1 + tr cov2 - 2 tr (cov1^1/2 cov2 cov1^1/2)^1/2``
    (cost ``|x - y|^2``; REFERENCE.md's ``BW`` with cost ``|x - y|^2 / 2`` is half of it).

    Parameters
    ----------
    mean1, mean2 : Tensor, shape (..., d)
    cov1, cov2 : Tensor, shape (..., d, d)

    Returns
    -------
    Tensor, shape (...)
        Non-negative (clamped at 0 against round-off).

    References
    ----------
    Dowson & Landau (1982); Gelbrich (1990).

    Examples
    --------
    >>> import torch
    >>> m = torch.zeros(2)
    >>> float(bures_wasserstein(m, torch.eye(2), m + 1, torch.eye(2)))
    2.0
    """
    for name, m in (("mean1", mean1), ("mean2", mean2)):
        if not isinstance(m, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if mean1.shape[-1] != cov1.shape[-1] or mean2.shape[-1] != cov2.shape[-1]:
        raise ValueError(
            f"means and covariances disagree on d: mean1 {tuple(mean1.shape)}, cov1 {tuple(cov1.shape)}, "
            f"mean2 {tuple(mean2.shape)}, cov2 {tuple(cov2.shape)}"
        )
    cross = bures_trace(cov1, cov2)
    tr = torch.diagonal(cov1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(cov2, dim1=-2, dim2=-1).sum(-1)
    return (((mean1 - mean2) ** 2).sum(-1) + tr - 2 * cross).clamp_min(0)


def bw_uvp(mean_pred: Tensor, cov_pred: Tensor, mean_true: Tensor, cov_true: Tensor,
           *, variance: Tensor | float | None = None) -> Tensor:
    """BW^2-UVP in percent: ``100 * W2^2(pred, true) / variance``.

    ``variance`` defaults to ``tr cov_true`` (the total variance of the target); equivalently
    ``100 * BW / (tr Var / 2)`` with REFERENCE.md's half-cost convention.

    Parameters
    ----------
    mean_pred, mean_true : Tensor, shape (..., d)
    cov_pred, cov_true : Tensor, shape (..., d, d)
    variance : float or Tensor, optional
        Normaliser (total variance of the reference distribution), positive.

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch
    >>> m = torch.zeros(2)
    >>> round(float(bw_uvp(m + 0.1, torch.eye(2), m, torch.eye(2))), 4)
    1.0
    """
    w2 = bures_wasserstein(mean_pred, cov_pred, mean_true, cov_true)
    if variance is None:
        variance = torch.diagonal(cov_true, dim1=-2, dim2=-1).sum(-1)
    variance = torch.as_tensor(variance, dtype=w2.dtype, device=w2.device)
    if not bool((variance > 0).all()):
        raise ValueError(f"variance must be positive, got {variance}")
    return 100.0 * w2 / variance
