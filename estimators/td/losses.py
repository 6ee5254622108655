"""Value-function losses for uncertainty-aware TD learning (Kim et al. 2024, Section 4).

Four kinds, selected by :func:`value_loss` (``K`` members, batch ``B``, ``delta = y - V``):

- ``"mse"``: the plain ensemble regression ``mean_{k,b} delta_kb^2``.
- ``"gauss_biv"`` (the baseline): Gaussian NLL of the TD errors with a learned variance head, plus
  ``biv_coef * sum_k sum_b w_b delta_kb^2`` with BIV weights from the ensemble variance of the values.
- ``"ggd_biev"`` (the paper, as the authors' released code computes it): per sample, the GGD NLLs of the
  members (``alpha = 1``, learned shape) weighted by ``beta_kb / sum_j beta_jb`` and summed over
  members, averaged over the batch; plus ``biv_coef / B * sum_b w_b sum_k |delta_kb|`` with BIV weights
  from the BIEV variance (``ddof=0``, bias-corrected kurtosis, clipped at 1e-8).
- ``"ggd_biev_pooled"``: this repository's first version: risk weights ``beta`` normalised to mean 1
  over the whole batch, ``mean_{k,b}`` of the weighted NLL, plus ``biv_coef * sum_k sum_b w_b |delta_kb|``
  (no ``1/B``: on a batch of 128 its BIEV term weighs 128x more relative to the NLL), BIEV variance
  with ``ddof=1`` and the biased kurtosis. Kept for comparison; there is no evidence it is better.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from .weights import biev_variance, biv_weights

__all__ = ["ggd_nll", "gaussian_nll", "risk_averse_weights", "value_loss", "VALUE_LOSS_KINDS"]

VALUE_LOSS_KINDS = ("mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled")
#: the BIEV variances are clipped below at this value (the released code clips at a small constant)
_BIEV_FLOOR = 1e-8


def _positive(name: str, v: torch.Tensor | float) -> None:
    t = torch.as_tensor(v)
    if torch.any(~(t > 0)):
        raise ValueError(f"{name} must be positive (and not NaN), got min {float(t.min())}")


def ggd_nll(delta: torch.Tensor, beta: torch.Tensor | float, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    r"""Per-sample negative log-likelihood of TD errors under ``GGD(0, scale, beta)``.

    ``(|delta| / scale)^beta - log beta + log(2 scale) + log Gamma(1/beta)`` (elementwise; broadcast).
    The power is ``|delta/alpha|^beta``: the authors' released code uses ``|delta| * beta``, which
    does not recover ``beta`` (REFERENCE.md §6). With ``scale = 1`` (the paper's choice) ``beta`` also
    absorbs the scale of the TD errors.

    Parameters
    ----------
    delta : Tensor
        TD errors ``y - V``.
    beta : Tensor or float
        Shape, positive.
    scale : Tensor or float
        Scale ``alpha``, positive.

    Returns
    -------
    Tensor
        The broadcast shape of the inputs.

    References
    ----------
    Kim et al., arXiv 2408.02295, eq. (1) and Section 4.1.

    Examples
    --------
    >>> ggd_nll(torch.tensor([0.0]), 2.0)  # log 2 - log 2 + log Gamma(1/2) = log sqrt(pi)
    tensor([0.5724])
    """
    _positive("beta", beta)
    _positive("scale", scale)
    beta = torch.as_tensor(beta, dtype=delta.dtype, device=delta.device)
    scale = torch.as_tensor(scale, dtype=delta.dtype, device=delta.device)
    # |u|^beta with u = 0 masked: pow's gradient beta |u|^(beta-1) sign(u) is inf * 0 = NaN there for beta < 1
    # (exact-zero TD errors happen, e.g. terminal steps with zero reward); 0 is a subgradient of the cusp.
    u = delta.abs() / scale
    nonzero = u > 0
    power = torch.where(nonzero, torch.where(nonzero, u, torch.ones_like(u)).pow(beta), torch.zeros_like(u))
    return power - torch.log(beta) + torch.log(2 * scale) + torch.lgamma(1 / beta)


def gaussian_nll(delta: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian NLL ``0.5 (log sigma^2 + delta^2 / sigma^2 + log 2 pi)``.

    Examples
    --------
    >>> gaussian_nll(torch.tensor([1.0]), torch.tensor([0.0]))
    tensor([1.4189])
    """
    return 0.5 * (log_var + delta.pow(2) * torch.exp(-log_var) + math.log(2 * math.pi))


def risk_averse_weights(beta: torch.Tensor, *, normalize: bool = True, per_sample: bool = False,
                        dim: int = 0) -> torch.Tensor:
    r"""Risk-averse sample weights ``omega = beta`` (detached): a larger shape means lighter tails.

    The variance ``alpha^2 Gamma(3/b) / Gamma(1/b)`` decreases in ``b`` for fixed ``alpha``, so samples
    whose TD errors the model believes to be heavy-tailed (small ``b``) count less.

    Parameters
    ----------
    beta : Tensor
        Predicted shapes (positive), e.g. shape (K, batch).
    normalize : bool
        Divide by the mean over all entries so that the weights average 1 (keeps the loss scale).
    per_sample : bool
        Instead, divide by the sum over the ensemble axis ``dim``: ``beta_kb / sum_j beta_jb``, the
        authors' released code (the weights of each sample's members sum to 1).
    dim : int
        The ensemble axis, for ``per_sample=True``.

    Returns
    -------
    Tensor
        Same shape as ``beta``, without gradient.

    References
    ----------
    Kim et al., arXiv 2408.02295, Section 4.2 (risk-averse weighting).

    Examples
    --------
    >>> risk_averse_weights(torch.tensor([1.0, 3.0]))
    tensor([0.5000, 1.5000])
    """
    _positive("beta", beta)
    w = beta.detach()
    if per_sample:
        return w / w.sum(dim, keepdim=True)
    return w / w.mean() if normalize else w


def _check_pair(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("values and targets must be torch.Tensors")
    if values.ndim != 2:
        raise ValueError(f"values must have shape (K, batch), got {tuple(values.shape)}")
    if targets.shape not in (values.shape, values.shape[1:]):
        raise ValueError(f"targets must have shape {tuple(values.shape)} or {tuple(values.shape[1:])}, "
                         f"got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all() or not torch.isfinite(values.detach()).all():
        raise ValueError("values or targets contain NaN or infinite values (non-finite TD errors)")
    return targets.detach().expand_as(values)


def value_loss(
    kind: Literal["mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled"],
    values: torch.Tensor,
    targets: torch.Tensor,
    *,
    beta: torch.Tensor | None = None,
    log_var: torch.Tensor | None = None,
    biv_coef: float = 0.1,
    min_ebs: float | None = None,
    risk_averse: bool = True,
) -> torch.Tensor:
    r"""Value loss of an ensemble of ``K`` heads on a batch (a scalar to minimise).

    Parameters
    ----------
    kind : {"mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled"}
        See the module docstring (``"ggd_biev"`` is the published loss).
    values : Tensor, shape (K, batch)
        Predictions ``V_k`` (with gradient).
    targets : Tensor, shape (K, batch) or (batch,)
        Targets ``y_k`` (per member, e.g. per-member GAE returns, or shared); detached here.
    beta : Tensor, shape (K, batch)
        Shape head (positive, e.g. ``softplus(raw) + 1e-3``); required for the ``"ggd_*"`` kinds.
    log_var : Tensor, shape (K, batch)
        Log-variance head; required for ``"gauss_biv"``.
    biv_coef : float
        Weight of the BIV regression term (0.1 in the paper).
    min_ebs : float, optional
        Target effective batch size of the BIV weights (default ``min(batch - 1, 16)``).
    risk_averse : bool
        Weight the GGD NLL by :func:`risk_averse_weights` (``"ggd_*"`` kinds; without it ``"ggd_biev"``
        gives each member weight ``1/K``).

    Returns
    -------
    Tensor, shape ()

    References
    ----------
    Kim et al., arXiv 2408.02295, Section 4 and Algorithm 1, and their released code (``ggd_nll_loss``
    plus ``uncertainty_temperature * biev_loss(..., "mae")``); Mai et al., ICLR 2022 (BIV).

    Examples
    --------
    >>> v = torch.zeros(5, 8, requires_grad=True)
    >>> y = torch.linspace(-1, 1, 8)
    >>> loss = value_loss("ggd_biev", v, y, beta=torch.ones(5, 8))
    >>> loss.backward(); v.grad.shape
    torch.Size([5, 8])
    """
    if kind not in VALUE_LOSS_KINDS:
        raise ValueError(f"kind must be one of {VALUE_LOSS_KINDS}, got {kind!r}")
    y = _check_pair(values, targets)
    delta = y - values
    if kind == "mse":
        return delta.pow(2).mean()
    if kind == "gauss_biv":
        if log_var is None or log_var.shape != values.shape:
            raise ValueError(f"log_var of shape {tuple(values.shape)} is required for kind 'gauss_biv'")
        nll = gaussian_nll(delta, log_var).mean()
        w = biv_weights(values.detach().var(0, unbiased=True), min_ebs=min_ebs)
        return nll + biv_coef * (w * delta.pow(2)).sum()
    if beta is None or beta.shape != values.shape:
        raise ValueError(f"beta of shape {tuple(values.shape)} is required for kind {kind!r}")
    nll = ggd_nll(delta, beta)
    if kind == "ggd_biev_pooled":
        if risk_averse:
            nll = risk_averse_weights(beta) * nll
        w = biv_weights(biev_variance(delta.detach()), min_ebs=min_ebs)
        return nll.mean() + biv_coef * (w * delta.abs()).sum()
    # the published loss: per-sample risk weights over the members, summed over members and averaged
    # over the batch; BIEV weights from np.var(ddof=0) / (G2/K + (K+1)/(K-1)), G2 bias-corrected
    K, B = values.shape
    omega = risk_averse_weights(beta, per_sample=True) if risk_averse else torch.full_like(beta, 1.0 / K)
    var = biev_variance(delta.detach(), ddof=0, unbiased_kurtosis=True).clamp(min=_BIEV_FLOOR)
    w = biv_weights(var, min_ebs=min_ebs)
    return (omega * nll).sum(0).mean() + biv_coef * (w * delta.abs().sum(0)).mean()
