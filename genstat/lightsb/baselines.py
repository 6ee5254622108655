"""Baseline plans to compare LightSB against: discrete entropic OT (POT's log-domain Sinkhorn)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .mixture import _check_generator
from .model import _check_epsilon

__all__ = ["DiscreteConditional", "SinkhornPlan"]


@dataclass(frozen=True, slots=True)
class DiscreteConditional:
    """A batch of discrete conditionals ``sum_j weights[i, j] delta(atoms[j])``.

    Attributes
    ----------
    weights : Tensor, shape (n, m)
        Rows sum to one.
    atoms : Tensor, shape (m, d)
    """

    weights: Tensor
    atoms: Tensor

    def mean(self) -> Tensor:
        """Exact means, shape (n, d)."""
        return self.weights @ self.atoms

    def covariance(self) -> Tensor:
        """Exact covariances, shape (n, d, d)."""
        mu = self.mean()
        second = torch.einsum("nm,mi,mj->nij", self.weights, self.atoms, self.atoms)
        cov = second - mu.unsqueeze(-1) * mu.unsqueeze(-2)
        return 0.5 * (cov + cov.mT)

    def sample(self, n_per_x: int = 1, *, generator: torch.Generator) -> Tensor:
        """Draw ``n_per_x`` atoms from each conditional with ``generator`` (required); shape (n, n_per_x, d)."""
        if isinstance(n_per_x, bool) or not isinstance(n_per_x, int) or n_per_x < 1:
            raise ValueError(f"n_per_x must be a positive int, got {n_per_x!r}")
        _check_generator(generator)
        idx = torch.multinomial(self.weights, n_per_x, replacement=True, generator=generator)
        return self.atoms[idx]


class SinkhornPlan:
    """Entropic OT between two empirical measures, extended out of sample.

    Solves ``min <P, M> + eps KL(P || a b^T)`` with ``M_ij = |x_i - y_j|^2 / 2`` by POT's
    log-domain Sinkhorn; the conditional at a new ``x`` is the softmax over the atoms ``y_j`` of
    ``log v_j - |x - y_j|^2 / (2 eps)`` (the row of the plan when ``x`` is a training point).

    Parameters
    ----------
    x : Tensor, shape (n, d)
        Source samples.
    y : Tensor, shape (m, d)
        Target samples (the atoms of every conditional).
    epsilon : float
    max_iter : int
    tol : float
        POT's ``stopThr``.

    References
    ----------
    M. Cuturi, "Sinkhorn distances", NeurIPS 2013; R. Flamary et al., "POT", JMLR 2021.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> plan = SinkhornPlan(torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) + 3, 1.0)
    >>> plan.conditional(torch.zeros(4, 2)).mean().shape
    torch.Size([4, 2])
    """

    def __init__(self, x: Tensor, y: Tensor, epsilon: float, *, max_iter: int = 2000, tol: float = 1e-7):
        import ot

        for name, v in (("x", x), ("y", y)):
            if not isinstance(v, Tensor) or v.dim() != 2:
                raise ValueError(f"{name} must be a 2-D tensor, got {getattr(v, 'shape', type(v))}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} must be finite")
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
        self.epsilon = _check_epsilon(epsilon)
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        cost = 0.5 * torch.cdist(x64, y64) ** 2
        a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64)
        b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64)
        with warnings.catch_warnings():  # non-convergence is reported through n_iter
            warnings.simplefilter("ignore", UserWarning)
            _, log = ot.sinkhorn(a, b, cost, self.epsilon, method="sinkhorn_log", log=True,
                                 numItermax=max_iter, stopThr=tol)
        self.log_v = torch.as_tensor(log["log_v"], dtype=torch.float64)
        self.atoms = y64
        #: iterations used (== max_iter when POT stopped before reaching ``tol``)
        self.n_iter = int(log.get("niter", max_iter))

    def conditional(self, x: Tensor) -> DiscreteConditional:
        """The out-of-sample conditional plan at ``x`` (shape (n, d))."""
        x64 = x.to(torch.float64)
        logits = self.log_v - 0.5 * torch.cdist(x64, self.atoms) ** 2 / self.epsilon
        return DiscreteConditional(torch.softmax(logits, dim=1), self.atoms)
