"""Couplings of a minibatch ``(x0, x1)``: independent, exact OT (``ot.emd``), entropic OT
(``ot.sinkhorn``) or given pairs.

A coupling only reorders (or resamples) the batch: the interpolant is then built on the pairs.
Minibatch OT couplings as in Pooladian et al. (2023) and Tong et al. (2024, OT-CFM); in the
interpolant framework they are the "dependent couplings" of Albergo et al. (2024).
"""
from __future__ import annotations

import numpy as np
import ot
import torch

__all__ = ["COUPLINGS", "couple"]

COUPLINGS = ("independent", "ot", "sinkhorn", "paired")


def couple(x0: torch.Tensor, x1: torch.Tensor, method: str = "independent", *,
           generator: torch.Generator | None = None, reg: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair the rows of ``x0`` and ``x1`` according to ``method``.

    Parameters
    ----------
    x0, x1 : Tensor, shape (n, d)
    method : str
        ``"independent"`` / ``"paired"``: keep the rows as given. ``"ot"``: the exact optimal
        transport plan for the squared Euclidean cost (``ot.emd``; with equal batch sizes it is a
        permutation, applied to x1). ``"sinkhorn"``: entropic plan ``ot.sinkhorn`` with
        regularisation ``reg`` times the mean cost; n pairs are drawn from the plan with ``generator``.
    generator : torch.Generator, optional
        Needed for ``"sinkhorn"``.
    reg : float
        Relative entropic regularisation for ``"sinkhorn"``.

    Returns
    -------
    (Tensor, Tensor)
        The coupled batch, shapes (n, d) each.

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
    plan = ot.sinkhorn(w, w, cost / cost.mean(), reg, numItermax=1000)
    p = torch.as_tensor(plan.reshape(-1), dtype=torch.float64)
    p = p.clamp_min(0)
    idx = torch.multinomial((p / p.sum()).to(generator.device), n, replacement=True,
                            generator=generator).to(x0.device)
    return x0[idx // n], x1[idx % n]
