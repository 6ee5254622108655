"""Training helpers of LightSB: the training record and a small Adam."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

__all__ = ["FitResult"]


@dataclass(frozen=True, slots=True)
class FitResult:
    """Training record of :meth:`LightSB.fit`.

    Attributes
    ----------
    losses : Tensor, shape (steps,)
        Loss per step (float64, CPU); the loss is ``KL(pi* || pi_theta)`` up to a constant.
    lrs : Tensor, shape (steps,)
        Learning rate used at each step.
    wall_time : float
        Seconds spent in :meth:`LightSB.fit`.
    steps, batch_size : int
    """

    losses: Tensor
    lrs: Tensor
    wall_time: float
    steps: int
    batch_size: int

    def to_frame(self) -> pd.DataFrame:
        """Tidy table with columns ``step, loss, lr``."""
        return pd.DataFrame({"step": range(1, self.steps + 1), "loss": self.losses.numpy(),
                             "lr": self.lrs.numpy()})


class _Adam:
    """Plain Adam (Kingma & Ba 2015) on a few tensors.

    ``torch.optim.Adam`` pulls in ~800 modules on first construction (seconds on a loaded CPU);
    LightSB has four parameter tensors, so a direct update is both lighter and faster per step.
    """

    def __init__(self, params: list[Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: tuple[Tensor, ...], lr: float) -> None:
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(m, v.div(c2).sqrt_().add_(self.eps), value=-lr / c1)
