"""Losses for the fields of a stochastic interpolant, and conversions between the fields.

Fields (Albergo, Boffi & Vanden-Eijnden 2023, Section 2):
velocity ``b(t,x) = E[alpha' x0 + beta' x1 + gamma' z | x_t = x]`` (eq. 2.10), denoiser
``eta(t,x) = E[z | x_t = x]`` with score ``s = -eta / gamma`` (eq. 2.13), and the endpoint predictions
``E[x1 | x_t]``, ``E[x0 | x_t]``. They are linked by ``x = alpha E[x0|x] + beta E[x1|x] + gamma eta`` and
``b = alpha' E[x0|x] + beta' E[x1|x] + gamma' eta``.
"""
from __future__ import annotations

from typing import Callable

import torch

from .paths import Interpolant, _as_time

__all__ = [
    "interpolant_loss",
    "score_from_eta",
    "eta_from_score",
    "velocity_from_predictions",
    "x1_from_velocity",
]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _call_model(model: Field, t: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    out = model(t, x) if c is None else model(t, x, c)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return a tensor of shape {tuple(x.shape)} (same as x), got {shape}")
    return out


def interpolant_loss(interpolant: Interpolant, model: Field, x0: torch.Tensor | None, x1: torch.Tensor,
                     t: torch.Tensor, z: torch.Tensor | None = None, *, field: str = "b",
                     antithetic: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
    """Monte Carlo estimate of the quadratic loss whose minimiser is ``field``.

    For ``field="b"`` this is the paper's ``E|b̂|^2 - 2 E[(alpha' x0 + beta' x1 + gamma' z) · b̂]``
    (eq. 2.11); for the others ``E|f̂ - target|^2`` (eq. 2.14 for eta). With ``antithetic=True``
    the model is evaluated at both ``x_t^± = alpha x0 + beta x1 ± gamma z`` and the two losses are
    averaged: the ``gamma' z`` term then enters as ``gamma' z · (b̂(x^+) - b̂(x^-)) / 2 = O(gamma gamma')``,
    which removes the 1/gamma variance of the Brownian gammas near t = 0, 1 (paper Section 6.1).

    Parameters
    ----------
    interpolant : Interpolant
    model : callable
        ``model(t, x) -> (n, d)``.
    x0, x1 : Tensor, shape (n, d)
    t : Tensor, shape (n,)
    z : Tensor, shape (n, d), optional
        Standard normal noise (required when the interpolant has a gamma).
    field : str
        One of ``"b"``, ``"eta"``, ``"x1"``, ``"x0"``.
    antithetic : bool
        Use the ± z pair (twice the model evaluations).
    c : Tensor, optional
        Condition of each pair (labels (n,) or contexts (n, k), see
        :mod:`genstat.interpolants.conditional`): the model is then called as ``model(t, x, c)`` and
        the minimiser is the conditional field ``E[. | x_t = x, c]``.

    Returns
    -------
    Tensor, shape ()
        The loss (differentiable w.r.t. the model's parameters).

    Examples
    --------
    >>> import torch
    >>> I = Interpolant("linear", "brownian")
    >>> g = torch.Generator().manual_seed(0)
    >>> x0, x1, z = (torch.randn(8, 2, generator=g) for _ in range(3))
    >>> loss = interpolant_loss(I, lambda t, x: torch.zeros_like(x), x0, x1, torch.rand(8, generator=g), z)
    >>> float(loss)
    0.0
    """
    # one validation of the inputs; x0 comes back filled in for the mirror path
    x0, tc, xt, target = interpolant._pair_target(x0, x1, t, z, field)
    tt = tc[:, 0]
    if c is not None and (not isinstance(c, torch.Tensor) or c.shape[:1] != xt.shape[:1]):
        raise ValueError(f"c must be a tensor with one condition per row ({xt.shape[0]}), got "
                         f"{tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}")
    if not antithetic:
        out = _call_model(model, tt, xt, c)
        if field == "b":
            return ((out**2).sum(1) - 2 * (target * out).sum(1)).mean()
        return ((out - target) ** 2).sum(1).mean()
    if not interpolant.has_noise:
        raise ValueError("antithetic=True needs an interpolant with a noise gamma")
    gz = interpolant.gamma(tt)[:, None] * z
    xm = xt - 2 * gz
    cc = None if c is None else torch.cat([c, c])
    out = _call_model(model, torch.cat([tt, tt]), torch.cat([xt, xm]), cc)
    op, om = out.chunk(2)
    if field == "b":
        mean_part = interpolant.dalpha(tc) * x0 + interpolant.dbeta(tc) * x1
        noise_part = interpolant.dgamma(tc) * z
        quad = 0.5 * ((op**2).sum(1) + (om**2).sum(1))
        lin = (mean_part * (op + om)).sum(1) + (noise_part * (op - om)).sum(1)
        return (quad - lin).mean()
    if field == "eta":
        tgt_m = -target
    else:
        tgt_m = target
    return 0.5 * (((op - target) ** 2).sum(1) + ((om - tgt_m) ** 2).sum(1)).mean()


def _noise_scale(interpolant: Interpolant, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``gamma(t)`` (``alpha(t)`` for a noise-free path) as a column, shape (n, 1): the factor linking eta and score."""
    tt = _as_time(t, x, x.shape[0])[:, None]
    return interpolant.gamma(tt) if interpolant.has_noise else interpolant.alpha(tt)


def score_from_eta(interpolant: Interpolant, t: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """Score ``s = -eta / gamma`` (for a noise-free one-sided path ``s = -E[x0|x] / alpha``).

    Parameters
    ----------
    interpolant : Interpolant
    t : Tensor, shape (n,)
    eta : Tensor, shape (n, d)

    Returns
    -------
    Tensor, shape (n, d)

    Examples
    --------
    >>> import torch
    >>> score_from_eta(Interpolant("linear", "quadratic"), torch.tensor([0.5]), torch.ones(1, 2))
    tensor([[-4., -4.]])
    """
    return -eta / _noise_scale(interpolant, t, eta)


def eta_from_score(interpolant: Interpolant, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Denoiser ``eta = -gamma s`` (inverse of :func:`score_from_eta`).

    Examples
    --------
    >>> import torch
    >>> eta_from_score(Interpolant("linear", "quadratic"), torch.tensor([0.5]), torch.ones(1, 2))
    tensor([[-0.2500, -0.2500]])
    """
    return -score * _noise_scale(interpolant, t, score)


def velocity_from_predictions(interpolant: Interpolant, t: torch.Tensor, x: torch.Tensor, *,
                              x0_pred: torch.Tensor | None = None, x1_pred: torch.Tensor | None = None,
                              eta: torch.Tensor | None = None) -> torch.Tensor:
    """Velocity from two of ``E[x0|x]``, ``E[x1|x]``, ``eta`` (the third follows from x).

    Uses ``x = alpha x0̂ + beta x1̂ + gamma eta`` and ``b = alpha' x0̂ + beta' x1̂ + gamma' eta``.
    Without noise (gamma = 0) one prediction suffices. Division by alpha (or beta, gamma) is needed
    for the missing one, so avoid the times where that coefficient vanishes.

    Parameters
    ----------
    interpolant : Interpolant
    t : Tensor, shape (n,)
    x : Tensor, shape (n, d)
    x0_pred, x1_pred, eta : Tensor, shape (n, d), optional

    Returns
    -------
    Tensor, shape (n, d)

    Examples
    --------
    >>> import torch
    >>> I = Interpolant("linear", "none")
    >>> velocity_from_predictions(I, torch.tensor([0.5]), torch.zeros(1, 1), x1_pred=torch.ones(1, 1))
    tensor([[2.]])
    """
    tt = _as_time(t, x, x.shape[0])[:, None]
    a, b, g = interpolant.alpha(tt), interpolant.beta(tt), interpolant.gamma(tt)
    da, db = interpolant.dalpha(tt), interpolant.dbeta(tt)
    noisy = interpolant.has_noise
    if noisy and eta is None:
        if x0_pred is None or x1_pred is None:
            raise ValueError("give two of x0_pred, x1_pred, eta")
        eta = (x - a * x0_pred - b * x1_pred) / g
    if x0_pred is None and x1_pred is None:
        raise ValueError("give x0_pred or x1_pred (with eta when the interpolant has noise)")
    rest = x - (g * eta if noisy else 0.0)
    if x0_pred is None:
        x0_pred = (rest - b * x1_pred) / a
    elif x1_pred is None:
        x1_pred = (rest - a * x0_pred) / b
    out = da * x0_pred + db * x1_pred
    if noisy:
        out = out + interpolant.dgamma(tt) * eta
    return out


def x1_from_velocity(interpolant: Interpolant, t: torch.Tensor, x: torch.Tensor, b: torch.Tensor,
                     eta: torch.Tensor | None = None) -> torch.Tensor:
    """``E[x1 | x_t = x]`` from the velocity (and eta when the interpolant has noise).

    Solves ``[alpha beta; alpha' beta'] [x0̂; x1̂] = [x - gamma eta; b - gamma' eta]``; the determinant
    ``alpha beta' - beta alpha'`` is 1 for the linear path and pi/2 for the trigonometric one.

    Examples
    --------
    >>> import torch
    >>> I = Interpolant("linear", "none")
    >>> x1_from_velocity(I, torch.tensor([0.5]), torch.zeros(1, 1), torch.full((1, 1), 2.0))
    tensor([[1.]])
    """
    tt = _as_time(t, x, x.shape[0])[:, None]
    a, bb = interpolant.alpha(tt), interpolant.beta(tt)
    da, db = interpolant.dalpha(tt), interpolant.dbeta(tt)
    r1, r2 = x, b
    if interpolant.has_noise:
        if eta is None:
            raise ValueError("eta is required when the interpolant has noise")
        r1 = x - interpolant.gamma(tt) * eta
        r2 = b - interpolant.dgamma(tt) * eta
    det = a * db - bb * da
    return (a * r2 - da * r1) / det
