"""Samplers: the probability-flow ODE ``dX = b dt`` and the generative SDEs
``dX = (b ± eps(t) s) dt + sqrt(2 eps(t)) dW`` (Albergo, Boffi & Vanden-Eijnden 2023, eqs. 2.20,
2.21, 2.22: the forward and reverse SDEs have the marginals of the interpolant for ANY eps(t) >= 0).

A field is any callable ``(t, x) -> (n, d)`` with ``t`` a float tensor of shape (n,) (all entries
equal) and ``x`` of shape (n, d).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from ..mc import DEFAULT_BLOCK_SIZE, block_generator

__all__ = ["SampleResult", "sample_ode", "sample_sde", "ODE_METHODS", "SDE_METHODS", "integrate"]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ODE_METHODS = ("euler", "heun", "rk4", "ab2", "ab3", "hb", "ghvb2", "ghvb3", "dopri5")
#: Adams-Bashforth weights of f_k, f_{k-1}, f_{k-2} (newest first)
_AB = {"ab2": (1.5, -0.5), "ab3": (23 / 12, -16 / 12, 5 / 12)}
# Heavy-ball family (Wizadwongsa et al. 2023): the velocity v is an exponential average of the Euler
# direction (hb) or of the Adams-Bashforth combination (ghvb2/3); momentum 1 gives euler / ab2 / ab3.
_MOMENTUM = {"hb": "euler", "ghvb2": "ab2", "ghvb3": "ab3"}
SDE_METHODS = ("em", "heun")

# Dormand-Prince 5(4) tableau
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_BSTAR = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@dataclass(frozen=True, slots=True)
class SampleResult:
    """Output of :func:`sample_ode` / :func:`sample_sde`.

    Attributes
    ----------
    samples : Tensor, shape (n, d)
        Final states.
    nfe : int
        Field (drift) evaluations per sample (for ``sample_sde`` one drift evaluation calls ``b``
        and, when eps > 0, ``s``). For dopri5 with several batches: the largest count.
    trajectory : Tensor or None, shape (k, n, d)
        States at ``times`` (when requested).
    times : Tensor or None, shape (k,)
    """

    samples: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    times: torch.Tensor | None = None

    def to_frame(self) -> pd.DataFrame:
        """The final samples as a DataFrame with columns x0, x1, ..."""
        s = self.samples.detach().cpu().double().numpy()
        return pd.DataFrame(s, columns=[f"x{i}" for i in range(s.shape[1])])


def _field_call(f: Field, name: str, t: float, x: torch.Tensor) -> torch.Tensor:
    tv = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    out = f(tv, x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, got {shape}")
    return out


def _joint_fields(b: Field, s: Field | None):
    """``velocity_and_score`` of the object whose velocity ``b`` and score ``s`` are (e.g. an
    :class:`~genstat.interpolants.ExactFields` passed as ``F`` or ``F.velocity`` and ``F.score``),
    else None."""
    if s is None:
        return None
    owner = getattr(s, "__self__", None)
    if owner is None or getattr(s, "__func__", None) is not getattr(type(owner), "score", None):
        return None
    if not (b is owner or (getattr(b, "__self__", None) is owner
                           and getattr(b, "__func__", None) is getattr(type(owner), "velocity", None))):
        return None
    return getattr(owner, "velocity_and_score", None)


def integrate(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, t0: float, t1: float, *,
              steps: int = 100, method: str = "rk4", rtol: float = 1e-5, atol: float = 1e-5,
              record: bool = False, max_steps: int = 100_000, error_norm: str = "rms", momentum: float = 0.8):
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` (either direction).

    Fixed-step ``euler``, ``heun``, ``rk4``, Adams-Bashforth ``ab2``/``ab3`` (one evaluation of f per
    step once started; orders 2 and 3; started with 1 or 2 Heun steps, so ``steps + 1`` / ``steps + 2``
    evaluations in all) with ``steps`` steps, or adaptive ``dopri5``
    (Dormand-Prince 5(4), tolerances ``rtol``/``atol``). ``error_norm``: ``"rms"`` controls the RMS
    of the scaled error over all entries (like torchdiffeq: one step size for the batch, so a few
    hard rows can carry errors far above the tolerance); ``"row"`` controls every row's own RMS (the
    step is accepted only when the worst row is within tolerance).

    Momentum methods (Wizadwongsa et al. 2023, "Diffusion Sampling with Momentum for Mitigating Divergence
    Artifacts"): ``hb`` (Polyak's heavy ball) ``v <- (1 - beta) v + beta f(t, y)``, ``y <- y + h v`` with
    ``v`` started at the first ``f``; ``ghvb2``/``ghvb3`` average the Adams-Bashforth combination instead
    (same start-up as ab2/ab3). ``beta = momentum`` in (0, 1]; 1 is euler / ab2 / ab3 exactly. For beta < 1
    they are first order (local error ``(2 - beta) h^2 y'' / (2 beta)`` for hb) but stable on a longer
    stretch of the negative real axis: ``h lambda >= -2 (2 - beta) / beta`` for hb (Euler: ``>= -2``), which
    is what keeps few-step sampling from diverging on stiff fields.

    Returns
    -------
    (Tensor, int, list[Tensor] | None, list[float] | None)
        Final state, number of evaluations of f, states and times (when ``record``).

    Examples
    --------
    >>> import torch
    >>> y, nfe, _, _ = integrate(lambda t, y: -y, torch.ones(1), 0.0, 1.0, steps=10, method="rk4")
    >>> round(float(y), 5), nfe
    (0.36788, 40)
    """
    if method not in ODE_METHODS:
        raise ValueError(f"method must be one of {ODE_METHODS}, got {method!r}")
    if error_norm not in ("rms", "row"):
        raise ValueError(f"error_norm must be 'rms' or 'row', got {error_norm!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    lo, hi = min(t0, t1), max(t0, t1)
    raw_f = f

    def f(t: float, y: torch.Tensor) -> torch.Tensor:  # keep rounding errors of the time grid inside [t0, t1]
        return raw_f(min(hi, max(lo, t)), y)

    y = y0
    traj = [y0] if record else None
    times = [float(t0)] if record else None
    nfe = 0
    if t0 == t1:
        return y, 0, traj, times
    if method in _MOMENTUM and not (isinstance(momentum, (int, float)) and 0 < momentum <= 1):
        raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
    if method != "dopri5":
        h = (t1 - t0) / steps
        hist: list[torch.Tensor] = []  # f at the last accepted states, newest first (Adams-Bashforth)
        base = _MOMENTUM.get(method, method)
        vel: torch.Tensor | None = None  # heavy-ball velocity
        for k in range(steps):
            t = t0 + k * h
            if base in _AB:
                w = _AB[base]
                fk = f(t, y)
                nfe += 1
                hist = [fk, *hist][: len(w)]
                if len(hist) < len(w):  # start-up: Heun steps (local error O(h^3)) until enough history
                    k2 = f(t + h, y + h * fk)
                    nfe += 1
                    direction = 0.5 * (fk + k2)
                else:
                    direction = sum(c * fj for c, fj in zip(w, hist))
                if method in _MOMENTUM:
                    vel = direction if vel is None else (1 - momentum) * vel + momentum * direction
                    direction = vel
                y = y + h * direction
            elif method == "hb":
                fk = f(t, y)
                nfe += 1
                vel = fk if vel is None else (1 - momentum) * vel + momentum * fk
                y = y + h * vel
            elif method == "euler":
                y = y + h * f(t, y)
                nfe += 1
            elif method == "heun":
                k1 = f(t, y)
                k2 = f(t + h, y + h * k1)
                y = y + 0.5 * h * (k1 + k2)
                nfe += 2
            else:
                k1 = f(t, y)
                k2 = f(t + 0.5 * h, y + 0.5 * h * k1)
                k3 = f(t + 0.5 * h, y + 0.5 * h * k2)
                k4 = f(t + h, y + h * k3)
                y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                nfe += 4
            if record:
                traj.append(y)
                times.append(t0 + (k + 1) * h)
        return y, nfe, traj, times
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    t = float(t0)
    k1 = f(t, y)
    nfe = 1
    h = 0.05 * span
    n_steps = 0
    while direction * (t1 - t) > 1e-12 * span:
        n_steps += 1
        if n_steps > max_steps:
            raise RuntimeError(f"dopri5 did not reach t1={t1} in {max_steps} steps (at t={t})")
        h = min(h, direction * (t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * kj for a, kj in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(f(t + _DP_C[i] * hs, yi))
        nfe += 6
        y_new = y + hs * sum(b * kj for b, kj in zip(_DP_B, ks) if b != 0.0)
        err = hs * sum((b - bs) * kj for b, bs, kj in zip(_DP_B, _DP_BSTAR, ks))
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        r2 = (err / scale) ** 2
        if error_norm == "row" and r2.ndim > 1:
            en = float(torch.sqrt(r2.reshape(r2.shape[0], -1).mean(1).max()))
        else:
            en = float(torch.sqrt(torch.mean(r2)))
        if not math.isfinite(en):
            raise FloatingPointError(f"dopri5: non-finite state or error at t={t}")
        if en <= 1.0:
            t = t + hs
            y = y_new
            k1 = ks[6]  # first-same-as-last
            if record:
                traj.append(y)
                times.append(t)
        factor = 10.0 if en == 0 else min(10.0, max(0.2, 0.9 * en ** -0.2))
        h = h * factor
    return y, nfe, traj, times


def _check_x(x0: torch.Tensor) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim != 2 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating tensor of shape (n, d), got "
                         f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")


def _check_time(name: str, t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {t}")
    return t


def _chunks(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    if batch_size is None:
        return [(0, n)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]


def _collect(parts, record: bool) -> SampleResult:
    samples = torch.cat([p[0] for p in parts])
    nfe = max(p[1] for p in parts)
    if not record:
        return SampleResult(samples, nfe)
    if len({len(p[3]) for p in parts}) != 1:
        raise ValueError("return_trajectory with dopri5 needs a single batch (batch_size=None)")
    traj = torch.stack([torch.cat([p[2][k] for p in parts]) for k in range(len(parts[0][2]))])
    times = torch.tensor(parts[0][3], dtype=samples.dtype)
    return SampleResult(samples, nfe, traj, times)


def sample_ode(b: Field, x0: torch.Tensor, *, steps: int = 100, method: str = "euler", t0: float = 0.0,
               t1: float = 1.0, rtol: float = 1e-5, atol: float = 1e-5, return_trajectory: bool = False,
               batch_size: int | None = None, momentum: float = 0.8) -> SampleResult:
    """Integrate the probability-flow ODE ``dX/dt = b(t, X)`` from ``t0`` to ``t1``.

    Parameters
    ----------
    b : callable
        Velocity field ``b(t, x)``.
    x0 : Tensor, shape (n, d)
        States at ``t0`` (for a backward solve, give ``t0 > t1``).
    steps : int
        Steps of the fixed-step methods.
    method : str
        ``"euler"``, ``"heun"``, ``"rk4"``, the multistep ``"ab2"``/``"ab3"`` (Adams-Bashforth: one
        evaluation of ``b`` per step after a Heun start; NFE ``steps + 1`` / ``steps + 2``), the
        momentum samplers ``"hb"``, ``"ghvb2"``, ``"ghvb3"`` (heavy ball on the Euler / Adams-Bashforth
        direction, Wizadwongsa et al. 2023; see :func:`integrate`) or adaptive ``"dopri5"``.
    t0, t1 : float
        Times in [0, 1].
    rtol, atol : float
        Tolerances of dopri5.
    return_trajectory : bool
        Keep the states at every (accepted) step.
    batch_size : int, optional
        Integrate this many samples at a time.
    momentum : float
        ``beta`` of the momentum samplers (1: no momentum).

    Returns
    -------
    SampleResult

    References
    ----------
    Albergo, Boffi, Vanden-Eijnden (2023), eq. (2.20); Dormand & Prince (1980); Wizadwongsa et al.,
    "Diffusion Sampling with Momentum for Mitigating Divergence Artifacts", ICCV 2023.

    Examples
    --------
    >>> import torch
    >>> r = sample_ode(lambda t, x: torch.ones_like(x), torch.zeros(4, 2), steps=5)
    >>> r.samples[0], r.nfe
    (tensor([1., 1.]), 5)
    """
    if not callable(b):
        raise TypeError(f"b must be callable, got {type(b).__name__}")
    _check_x(x0)
    t0, t1 = _check_time("t0", t0), _check_time("t1", t1)

    def f(t: float, x: torch.Tensor) -> torch.Tensor:
        return _field_call(b, "b", t, x)

    parts = []
    with torch.no_grad():
        for i, j in _chunks(x0.shape[0], batch_size):
            parts.append(integrate(f, x0[i:j], t0, t1, steps=steps, method=method, rtol=rtol, atol=atol,
                                   record=return_trajectory, momentum=momentum))
    return _collect(parts, return_trajectory)


def _eps_value(eps, t: float) -> float:
    v = eps(torch.tensor(t, dtype=torch.float64)) if callable(eps) else eps
    v = float(v)
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"eps must be non-negative and finite, got eps({t:.4g}) = {v}")
    return v


def sample_sde(b: Field, s: Field | None, x0: torch.Tensor, *, eps: float | Callable = 1.0, steps: int = 100,
               method: str = "em", direction: str = "forward", t0: float | None = None,
               t1: float | None = None, generator: torch.Generator | None = None, seed: int | None = None,
               return_trajectory: bool = False, batch_size: int | None = None) -> SampleResult:
    """Simulate the generative SDE of the interpolant.

    Forward (t0 < t1, default 0 -> 1): ``dX = (b + eps s) dt + sqrt(2 eps) dW``.
    Reverse (t0 > t1, default 1 -> 0): ``dX = (b - eps s) dt + sqrt(2 eps) dW̄`` integrated backward
    in time. Both have the interpolant's marginals rho_t for any ``eps(t) >= 0``.

    Parameters
    ----------
    b, s : callable
        Velocity and score fields ``(t, x) -> (n, d)`` (``s`` may be None when eps is 0).
    x0 : Tensor, shape (n, d)
        Initial states (at t0: samples of rho_0 forward, of rho_1 in reverse).
    eps : float or callable
        Diffusion coefficient; a callable gets a 0-dim float64 tensor t and must return a
        non-negative number (checked at every step).
    steps : int
        Number of steps.
    method : str
        ``"em"`` (Euler-Maruyama) or ``"heun"`` (stochastic Heun: predictor-corrector on the drift
        with the same noise increment; the noise is additive).
    direction : str
        ``"forward"`` or ``"reverse"``.
    t0, t1 : float, optional
        Defaults (0, 1) forward and (1, 0) reverse. Use e.g. ``t1 = 1 - 1e-3`` when a learned score
        is unreliable at the end point.
    generator : torch.Generator, optional
        The noise stream (one stream for all batches).
    seed : int, optional
        Instead of ``generator``: noise drawn in engine blocks of ``DEFAULT_BLOCK_SIZE`` rows, block
        ``k`` from ``genstat.mc.block_generator(seed, k)``; the result does not depend on batch_size.
    return_trajectory : bool
    batch_size : int, optional
        Simulate this many samples at a time (rounded to whole blocks when ``seed`` is used).

    Returns
    -------
    SampleResult

    References
    ----------
    Albergo, Boffi, Vanden-Eijnden (2023), Theorem 2.8, eqs. (2.21)-(2.22).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> r = sample_sde(lambda t, x: torch.zeros_like(x), lambda t, x: -x, torch.randn(1000, 1, generator=g),
    ...                eps=0.5, steps=50, generator=g)
    >>> abs(float(r.samples.var()) - 1.0) < 0.15, r.nfe
    (True, 50)
    """
    if not callable(b):
        raise TypeError(f"b must be callable, got {type(b).__name__}")
    if s is not None and not callable(s):
        raise TypeError(f"s must be callable or None, got {type(s).__name__}")
    if not (callable(eps) or isinstance(eps, (int, float))):
        raise TypeError(f"eps must be a float or a callable, got {type(eps).__name__}")
    if method not in SDE_METHODS:
        raise ValueError(f"method must be one of {SDE_METHODS}, got {method!r}")
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    _check_x(x0)
    if (generator is None) == (seed is None):
        raise ValueError("give exactly one of generator= or seed=")
    fwd = direction == "forward"
    t0 = _check_time("t0", (0.0 if fwd else 1.0) if t0 is None else t0)
    t1 = _check_time("t1", (1.0 if fwd else 0.0) if t1 is None else t1)
    if (t1 > t0) != fwd or t0 == t1:
        raise ValueError(f"direction={direction!r} needs t0 {'<' if fwd else '>'} t1, got t0={t0}, t1={t1}")
    sign = 1.0 if fwd else -1.0
    h = (t1 - t0) / steps
    for k in range(steps + 1):  # validate eps on the grid before any work
        _eps_value(eps, min(1.0, max(0.0, t0 + k * h)))

    joint = _joint_fields(b, s)

    def drift(t: float, x: torch.Tensor, e: float) -> torch.Tensor:
        if e > 0 and joint is not None:  # exact fields: one factorisation of C_t for b and s
            tv = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
            vb, vs = joint(tv, x)
            return vb + sign * e * vs
        out = _field_call(b, "b", t, x)
        if e > 0:
            if s is None:
                raise ValueError("s is required when eps > 0")
            out = out + sign * e * _field_call(s, "s", t, x)
        return out

    n = x0.shape[0]
    if seed is not None:
        bs = DEFAULT_BLOCK_SIZE
        n_blocks = math.ceil(n / bs)
        per = 1 if batch_size is None else max(1, batch_size // bs)
        per = n_blocks if batch_size is None else per
        groups = [list(range(i, min(n_blocks, i + per))) for i in range(0, n_blocks, per)]
        chunks = [(g[0] * bs, min(n, (g[-1] + 1) * bs), [(block_generator(seed, k, x0.device),
                                                          min(bs, n - k * bs)) for k in g]) for g in groups]
    else:
        chunks = [(i, j, [(generator, j - i)]) for i, j in _chunks(n, batch_size)]

    parts = []
    with torch.no_grad():
        for i, j, gens in chunks:
            x = x0[i:j]
            traj = [x] if return_trajectory else None
            times = [t0] if return_trajectory else None
            nfe = 0
            for k in range(steps):
                t = t0 + k * h
                e = _eps_value(eps, t)
                xi = torch.cat([torch.randn(m, x.shape[1], generator=g, device=g.device, dtype=x.dtype)
                                for g, m in gens]).to(x.device)
                noise = math.sqrt(2 * e * abs(h)) * xi
                f0 = drift(t, x, e)
                nfe += 1
                if method == "em":
                    x = x + h * f0 + noise
                else:
                    tn = min(1.0, max(0.0, t + h))
                    e1 = _eps_value(eps, tn)
                    xp = x + h * f0 + noise
                    f1 = drift(tn, xp, e1)
                    nfe += 1
                    x = x + 0.5 * h * (f0 + f1) + noise
                if return_trajectory:
                    traj.append(x)
                    times.append(t + h)
            parts.append((x, nfe, traj, times))
    return _collect(parts, return_trajectory)
