"""Interpolant paths ``x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z`` and their time derivatives.

Albergo, Boffi & Vanden-Eijnden, "Stochastic Interpolants: A Unifying Framework for Flows and
Diffusions" (2023), Definition 2.1 (eq. 2.1) and the families of Section 3/4: linear, trigonometric,
encoder-decoder, one-sided and mirror interpolants, with the gamma choices of Table 1.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["Interpolant", "PATHS", "GAMMAS", "FIELDS"]

PATHS = ("linear", "trig", "encdec", "one_sided_linear", "one_sided_trig", "mirror")
GAMMAS = ("brownian", "scaled_brownian", "quadratic", "sin2", "none")
#: regression targets of :meth:`Interpolant.sample_pair_target`
FIELDS = ("b", "eta", "x1", "x0")

Coef = Callable[[torch.Tensor], torch.Tensor]
_PI = math.pi


def _autograd_derivative(fn: Coef, t: torch.Tensor) -> torch.Tensor:
    """d fn / dt elementwise by autograd (``fn`` must act elementwise on t)."""
    with torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        y = fn(tt)
        if not isinstance(y, torch.Tensor) or y.shape != tt.shape:
            raise ValueError(f"a coefficient callable must map t of shape {tuple(tt.shape)} to the same shape")
        if not y.requires_grad:  # constant function
            return torch.zeros_like(t)
        (g,) = torch.autograd.grad(y.sum(), tt)
    return g.detach()


def _path_coefs(path: str) -> tuple[Coef, Coef, Coef, Coef]:
    if path in ("linear", "one_sided_linear", "mirror"):
        return (lambda t: 1 - t, lambda t: -torch.ones_like(t), lambda t: t, lambda t: torch.ones_like(t))
    if path in ("trig", "one_sided_trig"):
        return (lambda t: torch.cos(0.5 * _PI * t), lambda t: -0.5 * _PI * torch.sin(0.5 * _PI * t),
                lambda t: torch.sin(0.5 * _PI * t), lambda t: 0.5 * _PI * torch.cos(0.5 * _PI * t))
    if path == "encdec":
        # alpha = cos^2(pi t) on [0, 1/2], 0 after; beta = cos^2(pi t) on [1/2, 1], 0 before
        zero = torch.zeros_like
        return (lambda t: torch.where(t <= 0.5, torch.cos(_PI * t) ** 2, zero(t)),
                lambda t: torch.where(t <= 0.5, -_PI * torch.sin(2 * _PI * t), zero(t)),
                lambda t: torch.where(t >= 0.5, torch.cos(_PI * t) ** 2, zero(t)),
                lambda t: torch.where(t >= 0.5, -_PI * torch.sin(2 * _PI * t), zero(t)))
    raise ValueError(f"path must be one of {PATHS} or custom callables, got {path!r}")


def _gamma_coefs(gamma: str, a: float) -> tuple[Coef, Coef, Coef]:
    """(gamma, gamma', gamma * gamma') in closed form; gamma*gamma' stays finite at the ends."""
    tiny = 1e-300
    if gamma == "brownian":
        a = 1.0
    if gamma in ("brownian", "scaled_brownian"):
        def g(t):
            return torch.sqrt(a * (t * (1 - t)).clamp_min(0))

        def dg(t):  # singular at t = 0, 1 (returned as a large finite number there)
            return a * (1 - 2 * t) / (2 * torch.sqrt((a * t * (1 - t)).clamp_min(tiny if t.dtype == torch.float64
                                                                                  else 1e-30)))
        return g, dg, lambda t: a * (1 - 2 * t) / 2
    if gamma == "quadratic":
        return (lambda t: t * (1 - t), lambda t: 1 - 2 * t, lambda t: t * (1 - t) * (1 - 2 * t))
    if gamma == "sin2":
        return (lambda t: torch.sin(_PI * t) ** 2, lambda t: _PI * torch.sin(2 * _PI * t),
                lambda t: _PI * torch.sin(_PI * t) ** 2 * torch.sin(2 * _PI * t))
    if gamma == "none":
        z = torch.zeros_like
        return z, z, z
    raise ValueError(f"gamma must be one of {GAMMAS} or a callable, got {gamma!r}")


def _as_time(t, like: torch.Tensor, n: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(n)
    t = t.reshape(-1) if t.ndim == 2 and t.shape[1] == 1 else t
    if t.shape != (n,):
        raise ValueError(f"t must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    if bool(((t < 0) | (t > 1) | torch.isnan(t)).any()):
        raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min())}, {float(t.max())}]")
    return t


class Interpolant:
    """A stochastic interpolant ``x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z``, ``z ~ N(0, I)``.

    Parameters
    ----------
    path : str
        ``"linear"`` (alpha = 1-t, beta = t), ``"trig"`` (cos, sin of pi t / 2), ``"encdec"``
        (alpha = cos^2(pi t) 1[t<=1/2], beta = cos^2(pi t) 1[t>=1/2]; pure noise at t = 1/2),
        ``"one_sided_linear"`` / ``"one_sided_trig"`` (x0 ~ N(0, I) is the noise: gamma defaults to
        ``"none"``), ``"mirror"`` (x0 = x1: a path from the data to itself through noise).
        Ignored when ``alpha`` and ``beta`` callables are given.
    gamma : str or callable, optional
        ``"brownian"`` sqrt(t(1-t)), ``"scaled_brownian"`` sqrt(a t(1-t)), ``"quadratic"`` t(1-t),
        ``"sin2"`` sin^2(pi t), ``"none"``, or a callable ``gamma(t)`` (elementwise). The default is
        ``"sin2"`` for encdec, ``"none"`` for one-sided paths and ``"brownian"`` otherwise.
    a : float
        Scale of ``"scaled_brownian"``.
    alpha, beta : callable, optional
        Custom coefficients (elementwise functions of a tensor t); both or neither.
    dalpha, dbeta, dgamma : callable, optional
        Their derivatives; computed by autograd when omitted.

    References
    ----------
    Albergo, Boffi, Vanden-Eijnden (2023), Definition 2.1, eqs. (2.1), (4.1)-(4.8) and Table 1.

    Examples
    --------
    >>> import torch
    >>> I = Interpolant("linear", "brownian")
    >>> x0, x1, z = torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(3, 2)
    >>> I.interpolate(x0, x1, torch.full((3,), 0.25), z)[0]
    tensor([0.2500, 0.2500])
    """

    def __init__(self, path: str = "linear", gamma: str | Coef | None = None, a: float = 1.0, *,
                 alpha: Coef | None = None, beta: Coef | None = None, dalpha: Coef | None = None,
                 dbeta: Coef | None = None, dgamma: Coef | None = None):
        if (alpha is None) != (beta is None):
            raise ValueError("alpha and beta must be given together (both callables or neither)")
        if not (isinstance(a, (int, float)) and a > 0 and math.isfinite(a)):
            raise ValueError(f"a must be a positive finite float, got {a!r}")
        if a != 1.0 and gamma != "scaled_brownian":
            raise ValueError(f"a={a!r} only scales gamma='scaled_brownian' (gamma={gamma!r} would ignore it); "
                             "use gamma='scaled_brownian' for sqrt(a t (1 - t))")
        self.a = float(a)
        if alpha is not None:
            if not (callable(alpha) and callable(beta)):
                raise TypeError("alpha and beta must be callables")
            self.path = "custom"
            self._alpha, self._beta = alpha, beta
            self._dalpha = dalpha or (lambda t: _autograd_derivative(alpha, t))
            self._dbeta = dbeta or (lambda t: _autograd_derivative(beta, t))
        else:
            if path not in PATHS:
                raise ValueError(f"path must be one of {PATHS} or custom callables, got {path!r}")
            self.path = path
            self._alpha, self._dalpha, self._beta, self._dbeta = _path_coefs(path)
        if gamma is None:
            gamma = {"encdec": "sin2", "one_sided_linear": "none", "one_sided_trig": "none"}.get(self.path,
                                                                                            "brownian")
        if callable(gamma):
            self.gamma_name = getattr(gamma, "__name__", "custom")
            self._gamma = gamma
            self._dgamma = dgamma or (lambda t: _autograd_derivative(gamma, t))
            self._ggd = lambda t: self._gamma(t) * self._dgamma(t)
        elif isinstance(gamma, str):
            self.gamma_name = gamma
            self._gamma, self._dgamma, self._ggd = _gamma_coefs(gamma, self.a)
        else:
            raise TypeError(f"gamma must be a str or a callable, got {type(gamma).__name__}")
        self.one_sided = self.path.startswith("one_sided")
        self.mirror = self.path == "mirror"
        if self.mirror and self.gamma_name == "none":
            raise ValueError("the mirror path needs a noise gamma (gamma='none' gives x_t = x1 for all t)")

    def __repr__(self) -> str:
        return f"Interpolant(path={self.path!r}, gamma={self.gamma_name!r}, a={self.a})"

    # -- coefficients (elementwise in t) ------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha(t)."""
        return self._alpha(torch.as_tensor(t))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """beta(t)."""
        return self._beta(torch.as_tensor(t))

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma(t)."""
        return self._gamma(torch.as_tensor(t))

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha'(t)."""
        return self._dalpha(torch.as_tensor(t))

    def dbeta(self, t: torch.Tensor) -> torch.Tensor:
        """beta'(t)."""
        return self._dbeta(torch.as_tensor(t))

    def dgamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma'(t) (for the Brownian gammas it is singular at t = 0, 1)."""
        return self._dgamma(torch.as_tensor(t))

    def gamma_dgamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma(t) gamma'(t), finite on [0, 1] for every built-in gamma (used by the exact fields)."""
        return self._ggd(torch.as_tensor(t))

    @property
    def has_noise(self) -> bool:
        """Whether gamma is not identically zero."""
        return self.gamma_name != "none"

    # -- sampling x_t and regression targets -------------------------------------------------
    def _check(self, x0: torch.Tensor | None, x1: torch.Tensor, t, z: torch.Tensor | None):
        if not isinstance(x1, torch.Tensor) or x1.ndim != 2:
            raise ValueError(f"x1 must be a tensor of shape (n, d), got {getattr(x1, 'shape', type(x1))}")
        if self.mirror and x0 is None:
            x0 = x1
        if not isinstance(x0, torch.Tensor) or x0.shape != x1.shape:
            raise ValueError(f"x0 must have the shape of x1 {tuple(x1.shape)}, got "
                             f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")
        if self.has_noise:
            if not isinstance(z, torch.Tensor) or z.shape != x1.shape:
                raise ValueError(f"z must have the shape of x1 {tuple(x1.shape)}, got "
                                 f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        tt = _as_time(t, x1, x1.shape[0])
        return x0, tt

    def _interpolate(self, x0, x1, t, z):
        """Checked ``(x0, t[:, None], x_t)`` (x0 filled in for the mirror path)."""
        x0, tt = self._check(x0, x1, t, z)
        tc = tt[:, None]
        xt = self.alpha(tc) * x0 + self.beta(tc) * x1
        if self.has_noise:
            xt = xt + self.gamma(tc) * z
        return x0, tc, xt

    def interpolate(self, x0: torch.Tensor | None, x1: torch.Tensor, t, z: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """``x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z``.

        Parameters
        ----------
        x0, x1 : Tensor, shape (n, d)
            Endpoints (for the mirror path x0 may be None and is taken equal to x1).
        t : float or Tensor, shape (n,)
            Times in [0, 1].
        z : Tensor, shape (n, d), optional
            Standard normal noise (needed unless gamma is ``"none"``).

        Returns
        -------
        Tensor, shape (n, d)

        Examples
        --------
        >>> import torch
        >>> Interpolant("trig", "none").interpolate(torch.ones(1, 1), torch.zeros(1, 1), 1.0)
        tensor([[-4.3711e-08]])
        """
        return self._interpolate(x0, x1, t, z)[2]

    def sample_pair_target(self, x0: torch.Tensor | None, x1: torch.Tensor, t, z: torch.Tensor | None = None,
                           field: str = "b") -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, target)`` where the field is the conditional expectation of ``target`` given x_t.

        Parameters
        ----------
        x0, x1, t, z
            As in :meth:`interpolate`.
        field : str
            ``"b"``: velocity target ``alpha' x0 + beta' x1 + gamma' z`` (paper eq. 2.10);
            ``"eta"``: denoiser target ``z`` (eq. 2.13; for a noise-free one-sided path the noise is
            x0, so the target is x0); ``"x1"`` / ``"x0"``: endpoint prediction.

        Returns
        -------
        (Tensor, Tensor), shapes (n, d) and (n, d)

        Examples
        --------
        >>> import torch
        >>> I = Interpolant("linear", "none")
        >>> xt, tgt = I.sample_pair_target(torch.zeros(2, 1), torch.ones(2, 1), 0.5)
        >>> tgt
        tensor([[1.],
                [1.]])
        """
        return self._pair_target(x0, x1, t, z, field)[2:]

    def _pair_target(self, x0, x1, t, z, field: str):
        """Checked ``(x0, t[:, None], x_t, target)`` (x0 filled in for the mirror path)."""
        if field not in FIELDS:
            raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
        x0, tc, xt = self._interpolate(x0, x1, t, z)
        if field == "b":
            target = self.dalpha(tc) * x0 + self.dbeta(tc) * x1
            if self.has_noise:
                target = target + self.dgamma(tc) * z
        elif field == "eta":
            if self.has_noise:
                target = z
            elif self.one_sided:
                target = x0
            else:
                raise ValueError("field='eta' needs a noise gamma or a one-sided path")
        elif field == "x1":
            target = x1
        else:
            target = x0
        return x0, tc, xt, target
