"""The alpha-step of aISCV: a convex problem on the probability simplex.

    minimise  F(alpha) = sum_i a_i / (c_i + (G alpha)_i)   over  alpha_m >= 0, sum_m alpha_m = 1,

with a_i >= 0, c_i >= 0 and G_im >= 0. F is convex (1/t is convex and decreasing, G alpha is
linear). It is the empirical second moment of the aISCV summand as a function of the mixture
weights (Demange-Chryst, Bachoc & Morio, Sec. 3.2). We solve it by a projected Newton method
(free-coordinate Newton step with the equality constraint, projection onto the simplex, Armijo
backtracking, projected-gradient fallback) and stop on the Frank-Wolfe duality gap
``alpha . grad - min over the feasible vertices of v . grad >= F(alpha) - F*``, a certificate of
optimality.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SimplexSolution", "minimize_on_simplex"]


@dataclass(frozen=True, slots=True)
class SimplexSolution:
    """Solution of the alpha-step: ``alpha`` (J,), objective value, relative duality gap, iterations."""

    alpha: torch.Tensor
    value: float
    gap: float
    iterations: int


def minimize_on_simplex(
    a: torch.Tensor,
    G: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    alpha0: torch.Tensor | None = None,
    tol: float = 1e-3,
    max_iter: int = 50,
    floor: float = 0.0,
) -> SimplexSolution:
    """Minimise ``sum_i a_i / (c_i + (G alpha)_i)`` over the probability simplex.

    Parameters
    ----------
    a : Tensor, shape (n,)
        Non-negative numerators.
    G : Tensor, shape (n, J)
        Non-negative component values (rescaled per row by the caller to avoid overflow).
    c : Tensor, shape (n,), optional
        Non-negative constant part of the denominator (the defensive component).
    alpha0 : Tensor, shape (J,), optional
        Starting point (default uniform); zero entries are lifted to a small positive value.
    tol : float
        Stop when the duality gap is below ``tol * F(alpha)``. F is itself a Monte Carlo estimate:
        1e-3 relative (at most 0.1% above the optimum) is far below its noise, and nearly
        collinear components make the problem flat, so the last digits come slowly.
    max_iter : int
        Iteration cap.
    floor : float
        Lower bound on each ``alpha_m``: the problem is solved on {alpha >= floor, sum = 1}
        (at least 1e-12, at most 0.5 / J); the gap is the one of that set.

    Returns
    -------
    SimplexSolution

    Examples
    --------
    >>> import torch
    >>> G = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> s = minimize_on_simplex(torch.tensor([1.0, 4.0], dtype=torch.float64), G)
    >>> [round(v, 4) for v in s.alpha.tolist()]  # optimum alpha ∝ sqrt(a)
    [0.3333, 0.6667]
    """
    a = a.to(torch.float64)
    G = G.to(torch.float64)
    n, J = G.shape
    c = torch.zeros(n, dtype=torch.float64, device=G.device) if c is None else c.to(torch.float64)
    if alpha0 is None:
        alpha = torch.full((J,), 1.0 / J, dtype=torch.float64, device=G.device)
    else:
        alpha = alpha0.to(torch.float64).clamp_min(1e-12)
        alpha = alpha / alpha.sum()
    if J == 1:
        one = torch.ones(1, dtype=torch.float64, device=G.device)
        return SimplexSolution(one, float((a / (c + G[:, 0])).sum()), 0.0, 0)
    # rows where the denominator cannot vanish are the only ones that matter; guard 0/0
    keep = a > 0
    a, G, c = a[keep], G[keep], c[keep]
    if a.numel() == 0:
        return SimplexSolution(alpha, 0.0, 0.0, 0)

    def value_grad(al: torch.Tensor, hessian: bool = False):
        den = c + G @ al
        f = (a / den).sum()
        q = a / den**2
        g = -(G.T @ q)
        if not hessian:
            return f, g, None
        H = 2.0 * (G * (q / den)[:, None]).T @ G
        return f, g, H

    # projected Newton (Bertsekas' two-metric variant) on {alpha >= low, sum alpha = 1}: Newton on
    # the free coordinates with the equality constraint, projection, Armijo backtracking; the
    # projected-gradient arc is the fallback (always a descent path)
    low = min(max(float(floor), 1e-12), 0.5 / J)
    alpha = _project(alpha, low)
    f, g, H = value_grad(alpha, True)
    gap, it = float("inf"), 0
    for it in range(1, max_iter + 1):
        # Frank-Wolfe gap over the floored simplex (vertex: low everywhere, the rest on argmin g)
        vertex_value = low * g.sum() + (1 - J * low) * g.min()
        gap = float((alpha @ g - vertex_value) / f)
        if gap <= tol or not torch.isfinite(f):
            break
        lam = alpha @ g
        width = float((alpha - _project(alpha - g / f, low)).abs().sum())
        eps_k = min(0.01 / J, width)
        free = ~((alpha <= low + eps_k) & (g > lam))
        idx = torch.nonzero(free)[:, 0]
        k = idx.numel()
        Hf = H[idx][:, idx]
        ridge = 1e-10 * float(torch.diagonal(Hf).mean().clamp_min(1e-300))
        kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64, device=G.device)
        kkt[:k, :k] = Hf + ridge * torch.eye(k, dtype=torch.float64, device=G.device)
        kkt[:k, k] = 1.0
        kkt[k, :k] = 1.0
        rhs = torch.cat([-g[idx], g.new_zeros(1)])
        sol = torch.linalg.lstsq(kkt, rhs[:, None]).solution[:, 0]
        d = torch.zeros_like(alpha)
        d[idx] = sol[:k]
        candidates = []
        if bool(torch.isfinite(d).all()) and float(g @ d) < 0:
            candidates.append((d, 1e-6))
        candidates.append((-g / f, 1e-14))
        accepted = False
        for dd, t_min in candidates:
            t = 1.0
            while t > t_min:
                new = _project(alpha + t * dd, low)
                f_new, _, _ = value_grad(new)
                if torch.isfinite(f_new) and f_new <= f + 1e-4 * (g @ (new - alpha)):
                    accepted = True
                    break
                t *= 0.5
            if accepted:
                break
        if not accepted:
            break
        alpha = new
        f, g, H = value_grad(alpha, True)
    return SimplexSolution(alpha, float(f), float(gap), it)


def _project(y: torch.Tensor, low: float) -> torch.Tensor:
    """Euclidean projection onto {alpha >= low, sum alpha = 1} (sort-based)."""
    J = y.numel()
    mass = 1.0 - J * low
    z = y - low
    u, _ = torch.sort(z, descending=True)
    css = torch.cumsum(u, 0) - mass
    ind = torch.arange(1, J + 1, dtype=y.dtype, device=y.device)
    cond = u - css / ind > 0
    r = int(torch.nonzero(cond)[-1, 0]) + 1
    theta = css[r - 1] / r
    return (z - theta).clamp_min(0) + low
