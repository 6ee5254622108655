"""Langevin sampling with a (possibly non-conservative) drift field, as an engine sampler.

With drift ``s = grad log p + r`` the Fokker-Planck stationary equation reads
``div(p r) = 0``: the Langevin chain ``dX = s(X) dt + sqrt(2) dW`` keeps ``p`` invariant exactly when ``r``
satisfies the gauge condition, whether or not ``s`` is conservative (Horvat & Pfister 2024, section 3).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._autodiff import check_field_output

__all__ = ["langevin_sampler"]


def langevin_sampler(field: Callable[[torch.Tensor], torch.Tensor], dim: int, *, n_steps: int = 1000,
                     step_size: float = 0.01, init_scale: float = 1.0,
                     dtype: torch.dtype = torch.float64) -> Callable[[int, torch.Generator, torch.device], torch.Tensor]:
    """An engine sampler ``(n, generator, device) -> (n, dim)``: ``n`` unadjusted Langevin chains.

    ``x_{k+1} = x_k + h s(x_k) + sqrt(2 h) xi_k`` from ``x_0 ~ N(0, init_scale^2 I)``, all randomness from
    ``generator`` (pass the result to :func:`genstat.mc.estimate` for block-seeded expectations).

    Parameters
    ----------
    field : callable
        Drift ``s``: (n, dim) -> (n, dim).
    dim : int
    n_steps : int
    step_size : float
        ``h`` (the Euler-Maruyama bias is O(h)).
    init_scale : float
    dtype : torch.dtype

    Examples
    --------
    >>> import torch
    >>> from genstat.mc import estimate
    >>> sampler = langevin_sampler(lambda x: -x, 2, n_steps=300, step_size=0.05)
    >>> r = estimate(lambda x: x.pow(2).sum(1), sampler, 2048, seed=0)
    >>> bool(abs(float(r.estimate) - 2.0) < 0.2)
    True
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")

    def sample(n: int, generator: torch.Generator, device=None) -> torch.Tensor:
        dev = generator.device
        x = init_scale * torch.randn(n, dim, generator=generator, dtype=dtype, device=dev)
        check_field_output(field(x[:1]), x[:1])
        noise = math.sqrt(2.0 * step_size)
        with torch.no_grad():
            for _ in range(n_steps):
                x = x + step_size * field(x) + noise * torch.randn(n, dim, generator=generator, dtype=dtype, device=dev)
        return x.to(device) if device is not None else x

    return sample
