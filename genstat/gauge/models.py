"""Noise-conditional score models and denoising score matching (Horvat & Pfister 2024, section 5).

Both models predict the denoiser ``D(x, sigma) ~ E[x_0 | x]`` and return the score by Tweedie,
``s(x, sigma) = (D(x, sigma) - x) / sigma^2``:

* :class:`EnergyScore` -- ``D = grad_x G_theta(x, sigma)`` with ``G = <x, f_theta> - |f_theta|^2 / 2`` for a
  smooth vector MLP ``f_theta``, so ``s = -grad_x E`` with ``E = |x - f_theta(x, sigma)|^2 / (2 sigma^2)``
  (the quadratic energy of Salimans & Ho 2021): conservative by construction, and ``D = f`` whenever ``f``
  is a projection onto the data manifold (then ``J_f^T (x - f) = 0``). Costs a double backward per
  training step, about 2x a free field.
* :class:`FreeScore` -- ``D = F_theta(x, sigma)`` an unconstrained vector MLP.

Predicting ``x_0`` keeps the network's Jacobian bounded near a manifold (``D`` tends to the projection
onto it as ``sigma -> 0``) while the score's normal Jacobian grows like ``1 / sigma^2``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from torch import nn
from torch.func import grad, vmap

from genstat.nn import TimeMLP

__all__ = ["EnergyScore", "FreeScore", "ScoreFitResult", "fit_score"]


class _NoiseConditionalScore(nn.Module):
    def __init__(self, dim: int, sigma_min: float, sigma_max: float, sigma_data: float):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.dim, self.sigma_min, self.sigma_max, self.sigma_data = dim, float(sigma_min), float(sigma_max), float(sigma_data)

    def _inputs(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be a tensor of shape (n, {self.dim}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.ndim == 0:
            s = s.expand(x.shape[0])
        if s.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a float or have shape ({x.shape[0]},), got {tuple(s.shape)}")
        if not bool((s > 0).all()):
            raise ValueError("sigma must be > 0")
        # noise level fed to the net as log sigma mapped to [0, 1] over the training range
        t = (torch.log(s) - math.log(self.sigma_min)) / (math.log(self.sigma_max) - math.log(self.sigma_min))
        c_in = torch.rsqrt(s**2 + self.sigma_data**2)
        return s, t, c_in

    def denoiser(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Predicted ``E[x_0 | x]`` at noise level ``sigma`` (float or (n,)), shape (n, dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Score ``s(x, sigma) = (D(x, sigma) - x) / sigma^2``, shape (n, dim)."""
        s, _, _ = self._inputs(x, sigma)
        return (self.denoiser(x, sigma) - x) / s[:, None] ** 2


class EnergyScore(_NoiseConditionalScore):
    """Conservative score ``s = -grad_x E_theta(x, sigma)``, ``E = |x - f_theta(x, sigma)|^2 / (2 sigma^2)``.

    The denoiser is ``grad_x G`` with ``G = <x, f_theta> - |f_theta|^2 / 2`` (Salimans & Ho, "Should EBMs
    model the energy or the score?", 2021), a parametrisation that represents projections exactly.

    Parameters
    ----------
    dim : int
    hidden, depth : int
        Width and hidden layers of the vector MLP ``f_theta``.
    activation : str
        A smooth activation (``silu``, ``softplus``, ``tanh``, ``gelu``, ``selu``, ``elu``).
    sigma_min, sigma_max : float
        The training range of noise levels (the net sees ``log sigma`` rescaled to [0, 1]).
    sigma_data : float
        Input scaling ``x / sqrt(sigma^2 + sigma_data^2)``.
    generator : torch.Generator, optional
        Draws the initial weights (torch's default uniform ranges); otherwise torch's global RNG.

    Examples
    --------
    >>> import torch
    >>> m = EnergyScore(3, hidden=16, depth=2, generator=torch.Generator().manual_seed(0))
    >>> m(torch.randn(4, 3), 0.1).shape
    torch.Size([4, 3])
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, activation: str = "silu",
                 sigma_min: float = 0.01, sigma_max: float = 1.0, sigma_data: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__(dim, sigma_min, sigma_max, sigma_data)
        if activation == "relu":
            raise ValueError("activation must be smooth for a conservative score (relu gives a zero Hessian)")
        self.net = TimeMLP(dim, dim, hidden, depth, time_embedding=0, activation=activation, generator=generator)

    @staticmethod
    def _g(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (x * f).sum(-1) - 0.5 * (f * f).sum(-1)

    def potential(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``G_theta(x, sigma)``, shape (n,): the denoiser is its x-gradient."""
        _, t, c_in = self._inputs(x, sigma)
        return self._g(x, self.net(t, c_in[:, None] * x))

    def energy(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``E = (|x|^2 / 2 - G) / sigma^2`` with ``s = -grad_x E``, shape (n,)."""
        s, _, _ = self._inputs(x, sigma)
        return (0.5 * (x * x).sum(1) - self.potential(x, sigma)) / s**2

    def denoiser(self, x, sigma):
        _, t, c_in = self._inputs(x, sigma)

        def g(xi, ti, ci):
            return self._g(xi, self.net(ti[None], (ci * xi)[None])[0])

        return vmap(grad(g))(x, t, c_in)


class FreeScore(_NoiseConditionalScore):
    """Unconstrained score: the denoiser is a vector MLP ``F_theta(x, sigma)``.

    Parameters are those of :class:`EnergyScore` (any activation is allowed).

    Examples
    --------
    >>> import torch
    >>> m = FreeScore(3, hidden=16, depth=2, generator=torch.Generator().manual_seed(0))
    >>> m(torch.randn(4, 3), torch.full((4,), 0.1)).shape
    torch.Size([4, 3])
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, activation: str = "silu",
                 sigma_min: float = 0.01, sigma_max: float = 1.0, sigma_data: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__(dim, sigma_min, sigma_max, sigma_data)
        self.net = TimeMLP(dim, dim, hidden, depth, time_embedding=0, activation=activation, generator=generator)

    def denoiser(self, x, sigma):
        _, t, c_in = self._inputs(x, sigma)
        return self.net(t, c_in[:, None] * x)


@dataclass(frozen=True, slots=True)
class ScoreFitResult:
    """Training record of :func:`fit_score`: loss per step (the sigma^2-weighted DSM loss) and wall time."""

    losses: torch.Tensor
    wall_time: float
    steps: int

    def to_frame(self) -> pd.DataFrame:
        """One row per step: ``step``, ``loss``."""
        return pd.DataFrame({"step": range(len(self.losses)), "loss": self.losses.tolist()})


def fit_score(
    model: _NoiseConditionalScore,
    data: torch.Tensor | Callable,
    *,
    sigmas: tuple[float, float] | torch.Tensor | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator,
    callback: Callable[[int, float], None] | None = None,
) -> ScoreFitResult:
    """Train a noise-conditional score model by denoising score matching over a sigma schedule.

    Minimises ``E_{sigma, x_0, eps} || sigma s(x_0 + sigma eps, sigma) + eps ||^2`` (sigma^2-weighted DSM,
    Vincent 2011 / Song & Ermon 2019), i.e. ``E ||D(x, sigma) - x_0||^2 / sigma^2``, with Adam and a
    cosine learning-rate decay.

    Parameters
    ----------
    model : EnergyScore or FreeScore
    data : Tensor, shape (N, D), or callable
        Clean training samples (minibatches drawn with replacement), or a sampler
        ``data(n, generator, device)`` giving fresh samples each step.
    sigmas : (sigma_min, sigma_max) or 1-D Tensor, optional
        A pair: sigma log-uniform on that range; a tensor of levels: uniform over them.
        Default: the model's ``(sigma_min, sigma_max)``.
    steps, batch_size, lr :
        Optimisation options.
    generator : torch.Generator
        Source of minibatches, noise levels and noise.
    callback : callable, optional
        ``callback(step, loss)`` after every step.

    Returns
    -------
    ScoreFitResult

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> m = FreeScore(2, hidden=16, depth=1, generator=g)
    >>> fit_score(m, torch.randn(100, 2, generator=g), steps=5, generator=g).losses.shape
    torch.Size([5])
    """
    if not isinstance(model, _NoiseConditionalScore):
        raise TypeError(f"model must be an EnergyScore or FreeScore, got {type(model).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    if isinstance(data, torch.Tensor):
        if data.ndim != 2 or data.shape[1] != model.dim:
            raise ValueError(f"data must have shape (N, {model.dim}), got {tuple(data.shape)}")
        data_t = data.to(dtype=dtype, device=device)

        def draw(n: int) -> torch.Tensor:
            idx = torch.randint(0, data_t.shape[0], (n,), generator=generator, device=generator.device)
            return data_t[idx.to(device)]
    elif callable(data):
        def draw(n: int) -> torch.Tensor:
            return data(n, generator, generator.device).to(dtype=dtype, device=device)
    else:
        raise TypeError(f"data must be a Tensor or a sampler callable, got {type(data).__name__}")
    if sigmas is None:
        sigmas = (model.sigma_min, model.sigma_max)
    if isinstance(sigmas, torch.Tensor):
        levels = sigmas.reshape(-1).to(dtype=dtype, device=device)
        if levels.numel() < 1 or not bool((levels > 0).all()):
            raise ValueError("sigmas must hold positive noise levels")

        def draw_sigma(n: int) -> torch.Tensor:
            idx = torch.randint(0, levels.numel(), (n,), generator=generator, device=generator.device)
            return levels[idx.to(device)]
    else:
        lo, hi = (float(v) for v in sigmas)
        if not 0 < lo <= hi:
            raise ValueError(f"sigmas must be (sigma_min, sigma_max) with 0 < sigma_min <= sigma_max, got {sigmas}")

        def draw_sigma(n: int) -> torch.Tensor:
            u = torch.rand(n, generator=generator, device=generator.device, dtype=dtype).to(device)
            return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = torch.empty(steps)
    t0 = time.perf_counter()
    model.train()
    for k in range(steps):
        x0 = draw(batch_size)
        sig = draw_sigma(batch_size)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=dtype).to(device)
        x = x0 + sig[:, None] * eps
        loss = (model.denoiser(x, sig) - x0).pow(2).sum(1).div(sig**2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[k] = loss.detach()
        if callback is not None:
            callback(k, float(losses[k]))
    model.eval()
    return ScoreFitResult(losses, time.perf_counter() - t0, steps)
