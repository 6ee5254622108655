"""Probability-flow ODE and reverse SDE of a diffusion driven by a (possibly non-conservative) score
field, with the log-likelihood the ODE assigns (instantaneous change of variables).

Two forward processes (Song et al. 2021), each with its own time variable ``t``:

* ``"ve"``: ``x_t = x_0 + t eps``, ``t = sigma`` the noise level. Probability flow
  ``dx/dt = -t s(x, t)``; reverse SDE in ``t`` decreasing ``dx = -2 t s dt + sqrt(2 t) dW``.
* ``"vp"``: ``x_t = alpha_t x_0 + sqrt(1 - alpha_t^2) eps`` with ``beta(t) = beta_min + t (beta_max - beta_min)``,
  ``alpha_t = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2) / 2)``. Probability flow
  ``dx/dt = -beta(t) (x + s(x, t)) / 2``; reverse SDE ``dx = -beta(t) (x / 2 + s) dt + sqrt(beta(t)) dW``.

With ``s = grad log p_t + r_t`` both keep the marginals ``p_t`` exactly iff ``div(p_t r_t) = 0`` for every t
(the gauge condition; Horvat & Pfister 2024, section 3): the extra term ``-g^2 r / 2`` (ODE) or ``-g^2 r``
(SDE) adds ``div(p_t r_t) = 0`` to the Fokker-Planck equation. Then the change of variables along the flow,
``log p_{t0}(x) = log p_{t1}(x(t1)) + int_{t0}^{t1} div v(x(t), t) dt``, is the exact log-likelihood whether or not
``s`` is conservative. An example of a gauge term for any density: ``r = W grad log p_t`` with ``W``
antisymmetric (``div(p W grad log p) = sum_ij W_ij d_i d_j p = 0``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from ._autodiff import check_field_output, check_points, divergence

__all__ = ["FlowResult", "ProbabilityFlow"]

ScoreT = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True, slots=True)
class FlowResult:
    """End points of a probability-flow integration and the integrated divergence.

    Attributes
    ----------
    x : Tensor, shape (n, D)
        The points at the end time ``t1``.
    delta_log_prob : Tensor, shape (n,)
        ``int_{t0}^{t1} div v dt``: ``log p_{t0}(x_start) = log p_{t1}(x) + delta_log_prob``.
    n_steps : int
    """

    x: torch.Tensor
    delta_log_prob: torch.Tensor
    n_steps: int

    def to_frame(self) -> pd.DataFrame:
        """One row per point: ``delta_log_prob``."""
        return pd.DataFrame({"delta_log_prob": self.delta_log_prob.tolist()})


class ProbabilityFlow:
    """The probability-flow ODE and the reverse SDE of a VE or VP diffusion for a given score field.

    Parameters
    ----------
    score : callable
        ``score(x, t)``: (n, D), float -> (n, D), the (model) score of ``p_t``.
    kind : {"ve", "vp"}
    beta_min, beta_max : float
        The VP noise rate (ignored for VE).

    Examples
    --------
    >>> import torch
    >>> flow = ProbabilityFlow(lambda x, t: -x / (1 + t**2), "ve")   # p_0 = N(0, I)
    >>> x = torch.zeros(3, 2, dtype=torch.float64)
    >>> res = flow.log_likelihood_path(x, 0.0, 3.0, n_steps=64)
    >>> round(float(res.delta_log_prob[0]), 6)   # log N(0; 0, I) - log N(0; 0, 10 I) = log 10
    2.302585
    """

    def __init__(self, score: ScoreT, kind: str = "ve", *, beta_min: float = 0.1, beta_max: float = 20.0):
        if kind not in ("ve", "vp"):
            raise ValueError(f"kind must be 've' or 'vp', got {kind!r}")
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.score, self.kind = score, kind
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: float) -> float:
        """VP noise rate ``beta(t)``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def alpha(self, t: float) -> float:
        """VP signal scale ``alpha_t`` (1 for VE)."""
        if self.kind == "ve":
            return 1.0
        return math.exp(-0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t))

    def noise_sd(self, t: float) -> float:
        """Standard deviation of the noise added by time ``t`` (``t`` for VE)."""
        return float(t) if self.kind == "ve" else math.sqrt(-math.expm1(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)))

    def drift(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The probability-flow velocity ``v(x, t)``, shape (n, D)."""
        s = check_field_output(self.score(x, t), x, "score")
        if self.kind == "ve":
            return -t * s
        return -0.5 * self.beta(t) * (x + s)

    def log_likelihood_path(self, x: torch.Tensor, t0: float, t1: float, *, n_steps: int = 256) -> FlowResult:
        """Integrate the probability flow from ``t0`` to ``t1`` with RK4 on ``(x, int div v)``.

        The divergence is the exact trace of the Jacobian (``torch.func``; D Jacobian rows per point), so
        this is meant for moderate D. Steps are uniform in ``log t`` for VE (``t0 > 0``) and in ``t`` for VP.
        """
        x = check_points(x)
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        if not (math.isfinite(t0) and math.isfinite(t1)) or t0 < 0 or t1 < 0 or t0 == t1:
            raise ValueError(f"need finite, distinct times t0, t1 >= 0, got t0={t0}, t1={t1}")
        use_log = self.kind == "ve" and min(t0, t1) > 0

        def rhs(z: torch.Tensor, u: float) -> tuple[torch.Tensor, torch.Tensor]:
            t = math.exp(u) if use_log else u
            v, div = divergence(lambda y: self.drift(y, t), z)
            dt_du = t if use_log else 1.0
            return v * dt_du, div * dt_du

        u0, u1 = (math.log(t0), math.log(t1)) if use_log else (float(t0), float(t1))
        h = (u1 - u0) / n_steps
        z, acc = x.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for k in range(n_steps):
            u = u0 + k * h
            k1, d1 = rhs(z, u)
            k2, d2 = rhs(z + 0.5 * h * k1, u + 0.5 * h)
            k3, d3 = rhs(z + 0.5 * h * k2, u + 0.5 * h)
            k4, d4 = rhs(z + h * k3, u + h)
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            acc = acc + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        return FlowResult(z, acc, n_steps)

    def sample_sde(self, x: torch.Tensor, t1: float, t0: float, *, n_steps: int = 1000,
                   generator: torch.Generator) -> torch.Tensor:
        """Run the reverse SDE from samples ``x`` of ``p_{t1}`` down to ``t0 < t1`` (Euler-Maruyama, steps
        uniform in ``log t`` for VE with ``t0 > 0``, in ``t`` otherwise); all noise from ``generator``."""
        x = check_points(x)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not 0 <= t0 < t1:
            raise ValueError(f"need 0 <= t0 < t1, got t0={t0}, t1={t1}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        if self.kind == "ve" and t0 > 0:
            ts = torch.logspace(math.log10(t1), math.log10(t0), n_steps + 1, dtype=torch.float64).tolist()
        else:
            ts = torch.linspace(t1, t0, n_steps + 1, dtype=torch.float64).tolist()
        z = x.detach()
        with torch.no_grad():
            for ta, tb in zip(ts[:-1], ts[1:]):
                dt = ta - tb  # > 0: time runs backwards
                s = check_field_output(self.score(z, ta), z, "score")
                if self.kind == "ve":
                    g2, f = 2.0 * ta, torch.zeros_like(z)
                else:
                    g2, f = self.beta(ta), -0.5 * self.beta(ta) * z
                noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=generator.device).to(z.device)
                z = z + (g2 * s - f) * dt + math.sqrt(g2 * dt) * noise
        return z
