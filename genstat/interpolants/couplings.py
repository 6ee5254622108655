"""Couplings of a minibatch ``(x0, x1)``: independent, exact OT (``ot.emd``), entropic OT
(``ot.sinkhorn``) or given pairs.

A coupling only reorders (or resamples) the batch: the interpolant is then built on the pairs.
Minibatch OT couplings as in Pooladian et al. (2023) and Tong et al. (2024, OT-CFM); in the
interpolant framework they are the "dependent couplings" of Albergo et al. (2024).
"""
from __future__ import annotations

import warnings

import numpy as np
import ot
import torch

__all__ = ["COUPLINGS", "couple"]

COUPLINGS = ("independent", "ot", "sinkhorn", "paired")
#: largest accepted marginal error of an entropic plan, relative to the marginal weight 1/n
_MARGINAL_TOL = 1e-3


def couple(x0: torch.Tensor, x1: torch.Tensor, method: str = "independent", *,
           generator: torch.Generator | None = None, reg: float = 0.05,
           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair the rows of ``x0`` and ``x1`` according to ``method``.

    Parameters
    ----------
    x0, x1 : Tensor, shape (n, d)
    method : str
        ``"independent"`` / ``"paired"``: keep the rows as given. ``"ot"``: the exact optimal
        transport plan for the squared Euclidean cost (``ot.emd``; with equal batch sizes it is a
        permutation, applied to x1). ``"sinkhorn"``: entropic plan ``ot.sinkhorn`` with
        regularisation ``reg`` times the mean cost; n pairs are drawn from the plan with ``generator``.
        The plan's marginals are checked (to 1e-3 of 1/n); where the plain Sinkhorn iteration
        underflows (small ``reg``) POT's log-domain epsilon-scaling solver is used instead, and if
        neither meets the marginals a ``ValueError`` is raised rather than returning a non-coupling.
    generator : torch.Generator, optional
        Needed for ``"sinkhorn"``.
    reg : float
        Relative entropic regularisation for ``"sinkhorn"``.
    labels : Tensor, shape (n,), optional
        Integer class of row i of the batch (of x1, and of x0 when x0 was drawn for that class; an x0
        drawn independently of the class, such as noise, may carry any row's label). The plan is then
        *class-blocked*: computed within each class only, so output row i pairs an x0 and an x1 both
        of class ``labels[i]`` and no pair crosses classes; the labels keep their positions. Each
        block's plan is the method's plan on that block (OT: optimal within the class; the
        regularisation of ``"sinkhorn"`` is relative to the block's mean cost).

    Returns
    -------
    (Tensor, Tensor)
        The coupled batch, shapes (n, d) each (row i has label ``labels[i]`` when labels are given).

    Examples
    --------
    >>> import torch
    >>> x0 = torch.tensor([[0.0], [10.0]]); x1 = torch.tensor([[11.0], [1.0]])
    >>> couple(x0, x1, "ot")[1]
    tensor([[ 1.],
            [11.]])
    """
    if method not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {method!r}")
    if not (isinstance(x0, torch.Tensor) and isinstance(x1, torch.Tensor)) or x0.ndim != 2 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must be tensors of the same shape (n, d), got "
                         f"{getattr(x0, 'shape', None)} and {getattr(x1, 'shape', None)}")
    if labels is not None:
        return _couple_by_class(x0, x1, method, generator, reg, labels)
    if method in ("independent", "paired"):
        return x0, x1
    n = x0.shape[0]
    cost = torch.cdist(x0.detach().double(), x1.detach().double()).pow(2).cpu().numpy()
    w = np.full(n, 1.0 / n)
    if method == "ot":
        plan = ot.emd(w, w, cost)
        # with uniform equal-size marginals the optimal vertex is a permutation matrix
        j = torch.as_tensor(plan.argmax(1), device=x1.device)
        return x0, x1[j]
    if not isinstance(generator, torch.Generator):
        raise ValueError("coupling='sinkhorn' needs a torch.Generator (generator=...)")
    if not reg > 0:
        raise ValueError(f"reg must be positive, got {reg}")
    plan = _entropic_plan(w, cost / cost.mean(), reg)
    p = torch.as_tensor(plan.reshape(-1), dtype=torch.float64)
    p = p.clamp_min(0)
    idx = torch.multinomial((p / p.sum()).to(generator.device), n, replacement=True,
                            generator=generator).to(x0.device)
    return x0[idx // n], x1[idx % n]


def _couple_by_class(x0, x1, method, generator, reg, labels):
    """:func:`couple` within each class of ``labels`` (the class-blocked plan)."""
    n = x0.shape[0]
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor (class-blocked couplings need class labels), got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if method in ("independent", "paired"):
        return x0, x1
    out0, out1 = x0.clone(), x1.clone()
    lab = labels.to(x0.device)
    for k in torch.unique(lab).tolist():
        rows = (lab == k).nonzero()[:, 0]
        if rows.numel() > 1:  # a block of one row is its own (only) coupling
            out0[rows], out1[rows] = couple(x0[rows], x1[rows], method, generator=generator, reg=reg)
    return out0, out1


def _marginal_error(plan: np.ndarray, w: np.ndarray) -> float:
    """Largest deviation of the plan's row and column sums from ``w``, relative to ``w`` (inf if the
    plan has non-finite or negative entries)."""
    if not np.isfinite(plan).all() or (plan < 0).any():
        return float("inf")
    return float(max(np.abs(plan.sum(1) - w).max(), np.abs(plan.sum(0) - w).max()) / w.max())


def _entropic_plan(w: np.ndarray, cost: np.ndarray, reg: float) -> np.ndarray:
    """A checked entropic OT plan: POT's Sinkhorn, or its log-domain epsilon-scaling solver where the
    plain iteration under/overflows (small ``reg``: ``exp(-cost/reg)`` is 0 for most pairs, and the plan
    it returns is not a coupling). Raises when neither meets the marginals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-convergence is checked below
        with np.errstate(all="ignore"):
            plan = ot.sinkhorn(w, w, cost, reg, numItermax=1000, stopThr=1e-9)
        err = _marginal_error(plan, w)
        if err <= _MARGINAL_TOL:
            return plan
        plan = ot.sinkhorn(w, w, cost, reg, method="sinkhorn_epsilon_scaling", numItermax=1000, stopThr=1e-9)
        err = _marginal_error(plan, w)
    if err <= _MARGINAL_TOL:
        return plan
    raise ValueError(
        f"coupling='sinkhorn' with reg={reg}: the entropic plan does not meet its marginals (largest error "
        f"{err:.3g} of the weight 1/n, tolerance {_MARGINAL_TOL:g}) even with the log-domain solver; use a "
        "larger reg or coupling='ot'"
    )
