"""Ensembles of small MLPs evaluated in one batched matmul, initialised from an explicit generator."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EnsembleLinear", "EnsembleMLP", "mlp", "init_linear"]


def init_linear(layer: nn.Linear, gain: float, generator: torch.Generator) -> nn.Linear:
    """Orthogonal weights (gain ``gain``) and zero bias, drawn from ``generator``."""
    nn.init.orthogonal_(layer.weight, gain, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, out_dim: int, hidden: int, depth: int, activation: type[nn.Module],
        generator: torch.Generator, out_gain: float = 1.0) -> nn.Sequential:
    """``in_dim -> hidden x depth -> out_dim`` with orthogonal initialisation."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [init_linear(_linear(d, hidden), math.sqrt(2), generator), activation()]
        d = hidden
    layers.append(init_linear(_linear(d, out_dim), out_gain, generator))
    return nn.Sequential(*layers)


def _linear(d_in: int, d_out: int) -> nn.Linear:
    # skip torch's default initialisation, which would draw from (and advance) the global RNG
    return nn.utils.skip_init(nn.Linear, d_in, d_out)


class EnsembleLinear(nn.Module):
    """``K`` independent linear maps: ``(K, B, in) -> (K, B, out)`` (a ``(B, in)`` input is shared)."""

    def __init__(self, members: int, in_dim: int, out_dim: int, *, generator: torch.Generator, gain: float = 1.0):
        super().__init__()
        w = torch.empty(members, out_dim, in_dim)
        for k in range(members):
            nn.init.orthogonal_(w[k], gain, generator=generator)
        self.weight = nn.Parameter(w.transpose(1, 2).contiguous())  # (K, in, out)
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """``K`` MLPs ``in_dim -> hidden x depth -> out_dim`` evaluated together: output ``(K, B, out_dim)``.

    Examples
    --------
    >>> net = EnsembleMLP(5, 4, 2, generator=torch.Generator().manual_seed(0))
    >>> net(torch.zeros(3, 4)).shape
    torch.Size([5, 3, 2])
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, *, hidden: int = 64, depth: int = 2,
                 activation: type[nn.Module] = nn.Tanh, generator: torch.Generator, out_gain: float = 1.0):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [EnsembleLinear(members, d, hidden, generator=generator, gain=math.sqrt(2)), activation()]
            d = hidden
        layers.append(EnsembleLinear(members, d, out_dim, generator=generator, gain=out_gain))
        self.net = nn.Sequential(*layers)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
