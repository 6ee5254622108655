"""SAC (Haarnoja et al. 2018) with a K-member critic ensemble and a pluggable critic loss.

The target is ``r + gamma (1 - terminal) (min_{k in S} Q'_k(s', a') - alpha log pi(a'|s'))`` with
``S`` a random subset of ``target_subset`` target critics (all of them when ``K <= target_subset``:
plain SAC's clipped double Q for ``K = 2``; REDQ's subset rule for larger ensembles). The actor
maximises the ensemble-mean Q minus ``alpha log pi``; ``alpha`` is tuned to a target entropy ``-dim(A)``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from genstat.mc import block_generator

from ..losses import value_loss
from .common import (
    AgentEvaluation, TrainingResult, check_finite_td, check_total_steps,
    check_value_loss, split_value_heads,
)
from .envs import make_vector_env
from .nets import EnsembleMLP, mlp

__all__ = ["SACConfig", "SAC"]

_LOG_STD_MIN, _LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True, slots=True)
class SACConfig:
    """SAC hyperparameters (smaller networks than the paper's 256x2 to fit a CPU budget)."""

    n_envs: int = 1
    batch_size: int = 128
    buffer_size: int = 100_000
    learning_starts: int = 1000
    lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    hidden: int = 128
    ensemble: int = 2
    target_subset: int = 2
    value_loss: Literal["mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled"] = "mse"
    biv_coef: float = 0.1
    min_ebs: float | None = None
    log_every: int = 1000
    reward_scale: float = 1.0  # rewards are multiplied by this before learning (returns are reported unscaled)


class SAC(AgentEvaluation, nn.Module):
    """Soft actor-critic for ``Box``-action gymnasium environments, seeded end to end.

    Parameters
    ----------
    env : str
        Environment name with a continuous action space (e.g. ``"NoisyPendulum-v1"``).
    config : SACConfig
    seed : int

    Examples
    --------
    >>> agent = SAC("Pendulum-v1", SACConfig(learning_starts=50, batch_size=16, hidden=16, log_every=50), seed=0)
    >>> rec = agent.learn(100)
    >>> rec.to_frame()["env_steps"].tolist()
    [50, 100]
    """

    def __init__(self, env: str, config: SACConfig = SACConfig(), *, seed: int = 0):
        super().__init__()
        check_value_loss(config.value_loss, config.ensemble)
        if not config.reward_scale > 0:
            raise ValueError(f"reward_scale must be positive, got {config.reward_scale}")
        if config.target_subset < 1:
            raise ValueError(f"target_subset must be >= 1, got {config.target_subset}")
        self.env_name, self.config, self.seed = env, config, seed
        self.venv, self._obs = make_vector_env(env, config.n_envs, seed=seed)
        space = self.venv.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"SAC needs a continuous (Box) action space; {env!r} has {space}")
        obs_dim = int(np.prod(self.venv.single_observation_space.shape))
        self.act_dim = int(np.prod(space.shape))
        self._scale = torch.as_tensor((space.high - space.low) / 2, dtype=torch.float32)
        self._shift = torch.as_tensor((space.high + space.low) / 2, dtype=torch.float32)
        g = block_generator(seed, 0, stream=1)
        self.actor = mlp(obs_dim, 2 * self.act_dim, config.hidden, 2, nn.ReLU, g, out_gain=0.01)
        self.critic = EnsembleMLP(config.ensemble, obs_dim + self.act_dim, 2, hidden=config.hidden, depth=2,
                                  activation=nn.ReLU, generator=g, out_gain=1.0)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.lr)
        self._gen = block_generator(seed, 0, stream=2)
        size = config.buffer_size
        self._buf = {"obs": torch.zeros(size, obs_dim), "act": torch.zeros(size, self.act_dim),
                     "rew": torch.zeros(size), "next": torch.zeros(size, obs_dim), "term": torch.zeros(size)}
        self._n, self._ptr = 0, 0
        self.env_steps = 0
        self._ep_ret = np.zeros(config.n_envs)

    def _policy(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.actor(obs).chunk(2, -1)
        log_std = log_std.clamp(_LOG_STD_MIN, _LOG_STD_MAX)
        eps = torch.zeros_like(mu) if deterministic else torch.randn(mu.shape, generator=self._gen)
        u = mu + log_std.exp() * eps
        a = torch.tanh(u)
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - torch.log(self._scale * (1 - a.pow(2)) + 1e-6).sum(-1)
        return a * self._scale + self._shift, logp

    @torch.no_grad()
    def act(self, obs: torch.Tensor, *, deterministic: bool = True) -> np.ndarray:
        """Environment actions for a batch of observations (tanh of the mean when deterministic)."""
        return self._policy(obs, deterministic)[0].numpy()

    def _q(self, net: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([obs, act], -1))

    def _store(self, obs, act, rew, nxt, term) -> None:
        for i in range(len(rew)):
            j = self._ptr
            self._buf["obs"][j] = torch.as_tensor(obs[i])
            self._buf["act"][j] = torch.as_tensor(act[i])
            self._buf["rew"][j] = float(rew[i])
            self._buf["next"][j] = torch.as_tensor(nxt[i])
            self._buf["term"][j] = float(term[i])
            self._ptr = (self._ptr + 1) % self.config.buffer_size
            self._n = min(self._n + 1, self.config.buffer_size)

    def _update(self, stats: dict) -> None:
        c = self.config
        idx = torch.randint(0, self._n, (c.batch_size,), generator=self._gen)
        b = {k: v[idx] for k, v in self._buf.items()}
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self._policy(b["next"])
            q2 = self._q(self.critic_target, b["next"], a2)[..., 0]  # (K, B)
            if c.ensemble > c.target_subset:
                sub = torch.randperm(c.ensemble, generator=self._gen)[: c.target_subset]
                q2 = q2[sub]
            y = b["rew"] + c.gamma * (1 - b["term"]) * (q2.min(0).values - alpha * logp2)
        vals, extra = split_value_heads(self._q(self.critic, b["obs"], b["act"]), c.value_loss)
        check_finite_td(y - vals.detach(), self.env_steps)
        vl = value_loss(c.value_loss, vals, y, biv_coef=c.biv_coef, min_ebs=c.min_ebs, **extra)
        self.critic_opt.zero_grad()
        vl.backward()
        self.critic_opt.step()
        a, logp = self._policy(b["obs"])
        q = self._q(self.critic, b["obs"], a)[..., 0]
        q_pi = q.min(0).values if c.ensemble == 2 else q.mean(0)
        pl = (alpha * logp - q_pi).mean()
        self.actor_opt.zero_grad()
        pl.backward()
        self.actor_opt.step()
        al = -(self.log_alpha * (logp.detach() - self.act_dim)).mean()
        self.alpha_opt.zero_grad()
        al.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for p, pt in zip(self.critic.parameters(), self.critic_target.parameters()):
                pt.lerp_(p, c.tau)
        stats["value_loss"] += float(vl.detach())
        stats["policy_loss"] += float(pl.detach())
        stats["td_abs"] += float((y - vals.detach()).abs().mean())
        stats["ensemble_std"] += float(vals.detach().std(0).mean()) if c.ensemble > 1 else 0.0
        if "beta" in extra:
            stats["beta_mean"] += float(extra["beta"].detach().mean())
        stats["n"] += 1

    def learn(self, total_steps: int, *, callback: Callable[[dict], None] | None = None) -> TrainingResult:
        """Train for ``total_steps`` environment steps (one gradient update per step after warm-up)."""
        c = self.config
        check_total_steps(total_steps)
        rec = TrainingResult()
        t0 = time.perf_counter()
        keys = ("value_loss", "policy_loss", "td_abs", "ensemble_std", "beta_mean", "n")
        stats = dict.fromkeys(keys, 0.0)
        finished: list[float] = []
        start = self.env_steps
        while self.env_steps - start < total_steps:
            obs = torch.as_tensor(self._obs, dtype=torch.float32)
            if self.env_steps < c.learning_starts:
                u = torch.rand((c.n_envs, self.act_dim), generator=self._gen) * 2 - 1
                act = (u * self._scale + self._shift).numpy()
            else:
                with torch.no_grad():
                    act = self._policy(obs)[0].numpy()
            nxt, r, term, trunc, info = self.venv.step(act)
            real_next = nxt.copy()
            for i in np.flatnonzero(term | trunc):
                real_next[i] = info["final_obs"][i]
            self._store(self._obs, act, r * c.reward_scale, real_next, term)
            self._obs = nxt
            self._ep_ret += r
            for i in np.flatnonzero(term | trunc):
                finished.append(float(self._ep_ret[i]))
                rec.episodes.append((self.env_steps + c.n_envs, float(self._ep_ret[i])))
                self._ep_ret[i] = 0.0
            self.env_steps += c.n_envs
            if self.env_steps >= c.learning_starts:
                for _ in range(c.n_envs):
                    self._update(stats)
            if (self.env_steps - start) % c.log_every < c.n_envs:
                n = max(stats["n"], 1)
                row = {"env_steps": self.env_steps,
                       "episode_return": float(np.mean(finished)) if finished else math.nan}
                row.update({k: (stats[k] / n if stats["n"] else math.nan) for k in keys if k != "n"})
                if not c.value_loss.startswith("ggd_"):
                    row["beta_mean"] = math.nan
                rec.log.append(row)
                if callback is not None:
                    callback(row)
                stats = dict.fromkeys(keys, 0.0)
                finished = []
        return replace(rec, wall_time=time.perf_counter() - t0)
