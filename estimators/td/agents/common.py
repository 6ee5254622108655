"""Pieces shared by the agents: the training record, running return normalisation, heads."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ..losses import VALUE_LOSS_KINDS
from .envs import evaluate_policy

__all__ = ["TrainingResult", "ReturnNormalizer", "split_value_heads", "check_value_loss", "check_finite_td",
           "check_total_steps", "AgentEvaluation"]


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What a training run recorded.

    Attributes
    ----------
    log : list of dict
        One row per update: ``env_steps``, ``value_loss``, ``policy_loss``, ``beta_mean``,
        ``ensemble_std`` (std of the members' values), ``td_abs`` (mean |TD error|), ``episode_return``
        (mean of the training episodes finished since the last row, NaN if none).
    episodes : list of (int, float)
        ``(env_steps, return)`` of every finished training episode.
    wall_time : float
        Seconds.
    """

    log: list[dict] = field(default_factory=list)
    episodes: list[tuple[int, float]] = field(default_factory=list)
    wall_time: float = 0.0

    def to_frame(self) -> pd.DataFrame:
        """The per-update log as a DataFrame."""
        return pd.DataFrame(self.log)

    def episodes_frame(self) -> pd.DataFrame:
        """Training episodes: columns ``env_steps, episode_return``."""
        return pd.DataFrame(self.episodes, columns=["env_steps", "episode_return"])


class ReturnNormalizer:
    """Divide rewards by a running std of the discounted return (as SB3's ``VecNormalize``).

    Keeps TD errors of order one, which the GGD NLL with ``alpha = 1`` needs to be meaningful.
    """

    def __init__(self, n_envs: int, gamma: float, eps: float = 1e-8):
        self.ret = np.zeros(n_envs)
        self.gamma = gamma
        # a prior of one pseudo-observation with variance 1 keeps the first rewards from blowing up
        self.count, self.mean, self.m2 = 1, 0.0, 1.0
        self.eps = eps

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + rewards
        for r in self.ret:  # Welford over the vector envs
            self.count += 1
            delta = r - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (r - self.mean)
        self.ret[dones] = 0.0
        var = self.m2 / self.count
        return rewards / np.sqrt(var + self.eps)


def check_value_loss(kind: str, ensemble: int) -> None:
    if kind not in VALUE_LOSS_KINDS:
        raise ValueError(f"value_loss must be one of {VALUE_LOSS_KINDS}, got {kind!r}")
    if kind != "mse" and ensemble < 2:
        raise ValueError(f"value_loss {kind!r} needs an ensemble of at least 2 members, got ensemble={ensemble}")


def split_value_heads(out: torch.Tensor, kind: str) -> tuple[torch.Tensor, dict]:
    """``(K, B, 2)`` head output -> values ``(K, B)`` and the loss's extra head (beta or log-variance)."""
    values, raw = out[..., 0], out[..., 1]
    if kind in ("ggd_biev", "ggd_biev_pooled"):
        return values, {"beta": F.softplus(raw + 0.5413) + 1e-3}  # softplus(0.5413) = 1: start at beta = 1
    if kind == "gauss_biv":
        return values, {"log_var": raw.clamp(-10.0, 10.0)}
    return values, {}


def check_finite_td(td: torch.Tensor, step: int) -> None:
    """Stop with the environment step when TD errors are not finite."""
    if not torch.isfinite(td).all():
        raise FloatingPointError(f"non-finite TD errors at environment step {step}: training diverged")


def check_total_steps(total_steps: int) -> None:
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")


class AgentEvaluation:
    """``evaluate`` for agents with ``act(obs, deterministic=...)``, ``env_name`` and ``seed``."""

    env_name: str
    seed: int

    def evaluate(self, n_episodes: int = 10, *, seed: int | None = None, deterministic: bool = True) -> np.ndarray:
        """Returns of ``n_episodes`` evaluation episodes (a fresh environment, seeded from ``seed``)."""
        return evaluate_policy(lambda o: self.act(o, deterministic=deterministic), self.env_name,
                               n_episodes=n_episodes, seed=self.seed + 1 if seed is None else seed)
