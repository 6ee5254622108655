"""Gauge decomposition of a score field in L^2(p) (Horvat & Pfister 2024, section 3).

Any field ``s`` in ``L^2(p)`` splits uniquely as ``s = grad phi + r`` with ``r`` satisfying the gauge
condition ``div(p r) = 0``, i.e. ``div r + r . grad log p = 0``; ``grad phi`` is the L^2(p) projection of
``s`` onto gradients (weighted Poisson ``div(p grad phi) = div(p s)``) and ``E||s||^2 = E||grad phi||^2 +
E||r||^2``. Marginals generated with ``s`` are exact iff ``s - grad log p`` satisfies the gauge condition.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from torch import nn
from torch.func import grad, jacrev, vmap

from genstat.nn import MLP

from ._autodiff import check_field_output, check_points, divergence, is_transform_error

__all__ = [
    "GaugeDecomposition",
    "LinearGaugeDecomposition",
    "MLPPotential",
    "QuadraticPotential",
    "decompose",
    "gauge_residual",
    "linear_gauge_decomposition",
]


@dataclass(frozen=True, slots=True)
class LinearGaugeDecomposition:
    """Exact split ``M = Q + R`` of the linear field ``x -> M x`` under ``N(0, Sigma)``.

    ``Q`` is symmetric (``Q x = grad(x^T Q x / 2)``), ``R = Sigma W`` with ``W`` antisymmetric (``R x``
    satisfies the gauge condition). Unpacks as ``Q, R = linear_gauge_decomposition(M, Sigma)``.
    """

    Q: torch.Tensor
    R: torch.Tensor
    W: torch.Tensor

    def __iter__(self):
        return iter((self.Q, self.R))


def linear_gauge_decomposition(M: torch.Tensor, Sigma: torch.Tensor) -> LinearGaugeDecomposition:
    """Gauge decomposition of ``s(x) = M x`` under ``p = N(0, Sigma)`` by a Lyapunov equation.

    The conservative part is ``Q x`` with ``Q`` symmetric solving ``Q Sigma + Sigma Q = M Sigma + Sigma M^T``;
    the remainder ``R = M - Q = Sigma W`` has ``W = Sigma^{-1} R`` antisymmetric. This is not the
    unweighted Helmholtz split ``(M + M^T) / 2`` unless ``Sigma`` commutes with ``M``.

    Parameters
    ----------
    M : Tensor, shape (D, D)
    Sigma : Tensor, shape (D, D), symmetric positive definite

    Returns
    -------
    LinearGaugeDecomposition
        ``Q``, ``R``, ``W`` in the dtype/device of ``M``.

    References
    ----------
    Horvat & Pfister (ICLR 2024), section 3; scipy.linalg.solve_continuous_lyapunov.

    Examples
    --------
    >>> import torch
    >>> M = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    >>> S = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    >>> Q, R = linear_gauge_decomposition(M, S)
    >>> Q
    tensor([[0.0000, 0.8000],
            [0.8000, 0.0000]], dtype=torch.float64)
    """
    for name, A in (("M", M), ("Sigma", Sigma)):
        if not isinstance(A, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(A).__name__}")
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{name} must be a square matrix, got shape {tuple(A.shape)}")
    if M.shape != Sigma.shape:
        raise ValueError(f"M and Sigma must have the same shape, got {tuple(M.shape)} and {tuple(Sigma.shape)}")
    m = M.detach().cpu().double().numpy()
    s = Sigma.detach().cpu().double().numpy()
    if not np.allclose(s, s.T, atol=1e-12 * max(1.0, np.abs(s).max())):
        raise ValueError("Sigma must be symmetric")
    if np.linalg.eigvalsh(s).min() <= 0:
        raise ValueError("Sigma must be positive definite")
    q = scipy.linalg.solve_continuous_lyapunov(s, m @ s + s @ m.T)
    q = 0.5 * (q + q.T)
    r = m - q
    w = np.linalg.solve(s, r)
    w = 0.5 * (w - w.T)
    out = lambda a: torch.as_tensor(a, dtype=M.dtype, device=M.device)  # noqa: E731
    return LinearGaugeDecomposition(out(q), out(r), out(w))


def _score_from(log_prob_or_score: Callable, x: torch.Tensor) -> torch.Tensor:
    out = log_prob_or_score(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"log_prob_or_score must return a torch.Tensor, got {type(out).__name__}")
    if out.shape == x.shape:
        return out
    if out.shape != (x.shape[0],):
        raise ValueError(f"log_prob_or_score must return shape ({x.shape[0]},) (log-density) or "
                         f"{tuple(x.shape)} (score), got {tuple(out.shape)}")
    try:
        return jacrev(lambda z: log_prob_or_score(z).sum())(x).detach()
    except RuntimeError as err:
        if not is_transform_error(err):
            raise
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            return torch.autograd.grad(log_prob_or_score(xr).sum(), xr)[0]


def gauge_residual(field: Callable[[torch.Tensor], torch.Tensor], log_prob_or_score: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor) -> torch.Tensor:
    """Gauge residual ``div r(x) + r(x) . grad log p(x)`` per point (zero iff ``div(p r) = 0``).

    Parameters
    ----------
    field : callable
        ``r``: (n, D) -> (n, D), pointwise (e.g. ``s - grad log p`` for a learned score ``s``).
    log_prob_or_score : callable
        ``log p``: (n, D) -> (n,), or its gradient ``grad log p``: (n, D) -> (n, D).
    x : Tensor, shape (n, D)

    Returns
    -------
    Tensor, shape (n,)
        The residual (exact divergence by the full Jacobian).

    Examples
    --------
    >>> import torch
    >>> S = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    >>> W = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    >>> x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = gauge_residual(lambda z: z @ (S @ W).T, lambda z: -z @ torch.linalg.inv(S), x)
    >>> bool(res.abs().max() < 1e-12)
    True
    """
    x = check_points(x)
    r, div = divergence(lambda z: check_field_output(field(z), z), x)
    return div + (r * _score_from(log_prob_or_score, x)).sum(1)


class QuadraticPotential(nn.Module):
    """``phi(x) = x^T A x / 2 + b^T x`` with ``A`` symmetric; :func:`decompose` fits it in closed form."""

    def __init__(self, dim: int):
        super().__init__()
        self.A = nn.Parameter(torch.zeros(dim, dim, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        A = self.A.to(x.dtype)
        return 0.5 * ((x @ A) * x).sum(1) + x @ self.b.to(x.dtype)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        A = self.A.to(x.dtype)
        return x @ (0.5 * (A + A.T)) + self.b.to(x.dtype)


class MLPPotential(nn.Module):
    """Scalar MLP ``phi(x)`` (smooth activation) with ``gradient(x) = grad phi(x)`` by torch.func."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, activation: str = "silu",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.net = MLP(dim, 1, hidden, depth, activation, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        return vmap(grad(lambda z: self.net(z[None]).squeeze()))(x)


@dataclass(frozen=True, slots=True)
class GaugeDecomposition:
    """A fitted split ``s = grad phi + r`` with the L^2(p) norms over the evaluation samples.

    Attributes
    ----------
    potential : nn.Module
        ``phi``, with ``potential.gradient(x)``.
    field : callable
        The decomposed field ``s``.
    field_norm2, conservative_norm2, residual_norm2 : float
        ``E||s||^2``, ``E||grad phi||^2``, ``E||r||^2`` (float64 sample means).
    cross : float
        ``E[grad phi . r]`` (0 at the exact projection, so the norms add up).
    losses : Tensor
        Training loss per step (empty for the closed-form quadratic fit).
    wall_time : float
    n_eval : int
        Number of evaluation points (held out from the fit unless ``eval_samples`` or ``holdout=0`` said
        otherwise).
    residual_norm2_stderr : float
        Standard error of ``residual_norm2`` over the evaluation points (iid samples of p).
    held_out : bool
        Whether the evaluation points were disjoint from the training points.
    """

    potential: nn.Module
    field: Callable
    field_norm2: float
    conservative_norm2: float
    residual_norm2: float
    cross: float
    losses: torch.Tensor
    wall_time: float
    n_eval: int = 0
    residual_norm2_stderr: float = float("nan")
    held_out: bool = False

    def conservative(self, x: torch.Tensor) -> torch.Tensor:
        """``grad phi(x)``, shape (n, D)."""
        return self.potential.gradient(x).detach()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``r(x) = s(x) - grad phi(x)``, shape (n, D)."""
        with torch.no_grad():
            s = self.field(x)
        return s.detach() - self.conservative(x)

    def to_frame(self) -> pd.DataFrame:
        """One-row table of the norms."""
        return pd.DataFrame([{"field_norm2": self.field_norm2, "conservative_norm2": self.conservative_norm2,
                              "residual_norm2": self.residual_norm2, "cross": self.cross,
                              "residual_norm2_stderr": self.residual_norm2_stderr, "n_eval": self.n_eval,
                              "held_out": self.held_out, "steps": int(self.losses.numel()),
                              "wall_time": self.wall_time}])


def _fit_quadratic(pot: QuadraticPotential, x: torch.Tensor, s: torch.Tensor) -> None:
    # least squares over symmetric A: A C + C A = S + S^T with C = cov(x), S = cov(s, x)  (Lyapunov)
    xd, sd = x.double().cpu(), s.double().cpu()
    mx, ms = xd.mean(0), sd.mean(0)
    xc, sc = xd - mx, sd - ms
    C = (xc.T @ xc / len(xc)).numpy()
    S = (sc.T @ xc / len(xc)).numpy()
    A = scipy.linalg.solve_continuous_lyapunov(C, S + S.T)
    A = torch.as_tensor(0.5 * (A + A.T))
    with torch.no_grad():
        pot.A.copy_(A)
        pot.b.copy_(ms - A @ mx)


def decompose(
    field: Callable[[torch.Tensor], torch.Tensor],
    samples: torch.Tensor,
    *,
    potential: str | nn.Module = "mlp",
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 128,
    depth: int = 3,
    generator: torch.Generator | None = None,
    eval_samples: torch.Tensor | None = None,
    holdout: float = 0.2,
) -> GaugeDecomposition:
    """Fit the conservative part ``grad phi = argmin E_p ||grad phi - s||^2`` of ``field`` from samples of p.

    Parameters
    ----------
    field : callable
        ``s``: (n, D) -> (n, D), pointwise.
    samples : Tensor, shape (N, D)
        Samples of ``p`` (the training set of the projection).
    potential : {"mlp", "quadratic"} or nn.Module
        ``"quadratic"``: ``phi = x^T A x / 2 + b^T x`` solved in closed form (a Lyapunov equation with the
        sample covariance; exact for linear fields under Gaussians). ``"mlp"``: a smooth MLP trained by
        Adam for ``steps`` minibatches. A module must have ``gradient(x)``.
    steps, batch_size, lr, hidden, depth :
        Training options of the MLP potential.
    generator : torch.Generator
        Initial weights and minibatch indices (required for trained potentials).
    eval_samples : Tensor, optional
        Samples of p where the norms are measured. Default: the last ``holdout`` fraction of ``samples``,
        which the fit then does not use (norms on the fitted points are biased low for the residual).
    holdout : float in [0, 1)
        Fraction of ``samples`` held out for the norms when ``eval_samples`` is not given; 0 measures on
        the training points (the in-sample projection, where ``cross`` is 0 for the quadratic fit).

    Returns
    -------
    GaugeDecomposition

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4000, 2, dtype=torch.float64, generator=g)
    >>> M = torch.tensor([[-1.0, 0.7], [-0.7, -1.0]], dtype=torch.float64)
    >>> dec = decompose(lambda z: z @ M.T, x, potential="quadratic")
    >>> dec.n_eval, dec.held_out
    (800, True)
    >>> bool(abs(dec.field_norm2 - dec.conservative_norm2 - dec.residual_norm2 - 2 * dec.cross) < 1e-8)
    True
    """
    samples = check_points(samples, name="samples")
    dim = samples.shape[1]
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise ValueError(f"holdout must be a float in [0, 1), got {holdout!r}")
    with torch.no_grad():
        s_train = check_field_output(field(samples), samples).detach()
    if eval_samples is not None:
        ev = check_points(eval_samples, dim, name="eval_samples")
    elif holdout > 0:
        n_ev = int(round(holdout * samples.shape[0]))
        if n_ev < 2 or samples.shape[0] - n_ev < 2:
            raise ValueError(f"holdout={holdout} of {samples.shape[0]} samples leaves fewer than 2 points for the fit "
                             "or for the norms; pass more samples, eval_samples, or holdout=0")
        samples, ev, s_train = samples[:-n_ev], samples[-n_ev:], s_train[:-n_ev]
    else:
        ev = samples
    t0 = time.perf_counter()
    losses = torch.zeros(0)
    if isinstance(potential, str):
        if potential == "quadratic":
            pot: nn.Module = QuadraticPotential(dim)
            _fit_quadratic(pot, samples, s_train)
        elif potential == "mlp":
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            pot = MLPPotential(dim, hidden, depth, generator=generator)
            pot = pot.to(dtype=samples.dtype, device=samples.device)
        else:
            raise ValueError(f"potential must be 'mlp', 'quadratic' or an nn.Module, got {potential!r}")
    elif isinstance(potential, nn.Module) and hasattr(potential, "gradient"):
        pot = potential
    else:
        raise TypeError(f"potential must be 'mlp', 'quadratic' or an nn.Module with gradient(x), got {potential!r}")
    if not isinstance(pot, QuadraticPotential):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        opt = torch.optim.Adam(pot.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        losses = torch.empty(steps)
        n = samples.shape[0]
        for k in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=generator, device=generator.device)
            idx = idx.to(samples.device)
            loss = (pot.gradient(samples[idx]) - s_train[idx]).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses[k] = loss.detach()
    with torch.no_grad():
        s_ev = field(ev).detach().double()
    g_ev = pot.gradient(ev).detach().double()
    r_ev = s_ev - g_ev
    mean = lambda a, b: float((a * b).sum(1).mean())  # noqa: E731
    r2 = r_ev.pow(2).sum(1)
    r2_se = float(r2.std() / len(r2) ** 0.5) if len(r2) > 1 else float("nan")
    return GaugeDecomposition(pot, field, mean(s_ev, s_ev), mean(g_ev, g_ev), mean(r_ev, r_ev), mean(g_ev, r_ev),
                              losses, time.perf_counter() - t0, n_eval=int(ev.shape[0]), residual_norm2_stderr=r2_se,
                              held_out=ev is not samples)
