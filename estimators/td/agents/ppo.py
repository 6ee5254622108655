"""PPO (Schulman et al. 2017) with a K-member value ensemble and a pluggable value loss.

Each member gets its own GAE targets (Kim et al. 2024, Algorithm 1); the policy's advantage is the
members' mean GAE (GAE is linear in the value, so this is GAE with the ensemble-mean value).
"""
from __future__ import annotations

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
    AgentEvaluation, ReturnNormalizer, TrainingResult, check_finite_td,
    check_total_steps, check_value_loss, split_value_heads,
)
from .envs import make_vector_env
from .nets import EnsembleMLP, mlp

__all__ = ["PPOConfig", "PPO"]


@dataclass(frozen=True, slots=True)
class PPOConfig:
    """PPO hyperparameters (CleanRL's defaults for classic control, smaller where noted)."""

    n_envs: int = 8
    n_steps: int = 128
    lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    n_epochs: int = 4
    n_minibatches: int = 4
    clip: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    ensemble: int = 5
    value_loss: Literal["mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled"] = "mse"
    biv_coef: float = 0.1
    min_ebs: float | None = None
    normalize_rewards: bool = True
    anneal_lr: bool = True


class PPO(AgentEvaluation, nn.Module):
    """PPO agent for a (vectorised) gymnasium environment, seeded end to end.

    Parameters
    ----------
    env : str
        Environment name (:data:`estimators.td.agents.envs.ENV_NAMES`): discrete actions get a
        categorical policy, ``Box`` actions a Gaussian policy (clipped to the bounds).
    config : PPOConfig
    seed : int
        Seeds the initial weights, the action noise, the minibatch order and the environments.

    Examples
    --------
    >>> agent = PPO("CartPole-v1", PPOConfig(n_envs=2, n_steps=32, ensemble=2), seed=0)
    >>> rec = agent.learn(128)
    >>> rec.to_frame()["env_steps"].tolist()
    [64, 128]
    """

    def __init__(self, env: str, config: PPOConfig = PPOConfig(), *, seed: int = 0):
        super().__init__()
        check_value_loss(config.value_loss, config.ensemble)
        self.env_name, self.config, self.seed = env, config, seed
        self.venv, self._obs = make_vector_env(env, config.n_envs, seed=seed)
        space = self.venv.single_action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        obs_dim = int(np.prod(self.venv.single_observation_space.shape))
        act_dim = int(space.n) if self.discrete else int(np.prod(space.shape))
        if not self.discrete:
            self._low = torch.as_tensor(space.low, dtype=torch.float32)
            self._high = torch.as_tensor(space.high, dtype=torch.float32)
        g = block_generator(seed, 0, stream=1)
        self.actor = mlp(obs_dim, act_dim, config.hidden, 2, nn.Tanh, g, out_gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(act_dim)) if not self.discrete else None
        self.critic = EnsembleMLP(config.ensemble, obs_dim, 2, hidden=config.hidden, depth=2,
                                  activation=nn.Tanh, generator=g, out_gain=1.0)
        self.opt = torch.optim.Adam(self.parameters(), lr=config.lr, eps=1e-5)
        self._gen = block_generator(seed, 0, stream=2)
        self._norm = ReturnNormalizer(config.n_envs, config.gamma) if config.normalize_rewards else None
        self.env_steps = 0
        self._ep_ret = np.zeros(config.n_envs)

    # -- policy
    def _dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        out = self.actor(obs)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Normal(out, self.log_std.exp().expand_as(out))

    def _sample(self, dist: torch.distributions.Distribution) -> torch.Tensor:
        if self.discrete:
            u = torch.rand(dist.probs.shape[:-1] + (1,), generator=self._gen)
            return (dist.probs.cumsum(-1) < u).sum(-1).clamp_max(dist.probs.shape[-1] - 1)
        return dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=self._gen)

    def _log_prob(self, dist, action):
        lp = dist.log_prob(action)
        return lp if self.discrete else lp.sum(-1)

    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        if self.discrete:
            return action.numpy()
        return torch.maximum(torch.minimum(action, self._high), self._low).numpy()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, *, deterministic: bool = True) -> np.ndarray:
        """Environment actions for a batch of observations (mode of the policy when deterministic)."""
        dist = self._dist(obs)
        if deterministic:
            a = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            a = self._sample(dist)
        return self._env_action(a)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """Ensemble values ``(K, B)``."""
        return self.critic(obs)[..., 0]

    # -- training
    def learn(self, total_steps: int, *, callback: Callable[[dict], None] | None = None) -> TrainingResult:
        """Train for ``total_steps`` environment steps (rounded up to whole rollouts)."""
        c = self.config
        check_total_steps(total_steps)
        batch = c.n_envs * c.n_steps
        n_updates = math.ceil(total_steps / batch)
        mb = batch // c.n_minibatches
        rec = TrainingResult()
        t0 = time.perf_counter()
        K, N, T = c.ensemble, c.n_envs, c.n_steps
        for update in range(n_updates):
            if c.anneal_lr:
                for pg in self.opt.param_groups:
                    pg["lr"] = c.lr * (1.0 - update / n_updates)
            obs_buf = torch.zeros((T, N) + self._obs.shape[1:])
            act_buf, logp_buf = [], torch.zeros(T, N)
            rew_buf, done_buf = torch.zeros(T, N), torch.zeros(T, N)
            val_buf = torch.zeros(K, T, N)
            finished = []
            for t in range(T):
                obs = torch.as_tensor(self._obs, dtype=torch.float32)
                with torch.no_grad():
                    dist = self._dist(obs)
                    a = self._sample(dist)
                    logp_buf[t] = self._log_prob(dist, a)
                    val_buf[:, t] = self.values(obs)
                obs_buf[t] = obs
                act_buf.append(a)
                self._obs, r, term, trunc, info = self.venv.step(self._env_action(a))
                self.env_steps += N
                done = term | trunc
                self._ep_ret += r
                for i in np.flatnonzero(done):
                    finished.append(float(self._ep_ret[i]))
                    rec.episodes.append((self.env_steps, float(self._ep_ret[i])))
                    self._ep_ret[i] = 0.0
                r = self._norm(r, done) if self._norm is not None else r
                r = torch.as_tensor(r, dtype=torch.float32)
                if trunc.any():  # bootstrap truncated episodes from the value of their last observation
                    idx = np.flatnonzero(trunc & ~term)
                    if len(idx):
                        last = torch.as_tensor(np.stack([info["final_obs"][i] for i in idx]), dtype=torch.float32)
                        with torch.no_grad():
                            r[idx] += c.gamma * self.values(last).mean(0)
                rew_buf[t] = r
                done_buf[t] = torch.as_tensor(done, dtype=torch.float32)
            with torch.no_grad():
                next_val = self.values(torch.as_tensor(self._obs, dtype=torch.float32))  # (K, N)
            # per-member GAE
            adv = torch.zeros(K, T, N)
            last = torch.zeros(K, N)
            for t in reversed(range(T)):
                nv = next_val if t == T - 1 else val_buf[:, t + 1]
                nonterm = 1.0 - done_buf[t]
                delta = rew_buf[t] + c.gamma * nv * nonterm - val_buf[:, t]
                last = delta + c.gamma * c.gae_lambda * nonterm * last
                adv[:, t] = last
            returns = (adv + val_buf).reshape(K, -1)
            check_finite_td(returns, self.env_steps)
            pol_adv = adv.mean(0).reshape(-1)
            b_obs = obs_buf.reshape((-1,) + obs_buf.shape[2:])
            b_act = torch.stack(act_buf).reshape((T * N,) + act_buf[0].shape[1:])
            b_logp = logp_buf.reshape(-1)
            stats = {"value_loss": 0.0, "policy_loss": 0.0, "beta_mean": math.nan, "td_abs": 0.0}
            n_mb = 0
            for _ in range(c.n_epochs):
                perm = torch.randperm(batch, generator=self._gen)
                for s in range(0, batch, mb):
                    idx = perm[s:s + mb]
                    dist = self._dist(b_obs[idx])
                    ratio = torch.exp(self._log_prob(dist, b_act[idx]) - b_logp[idx])
                    a_mb = pol_adv[idx]
                    a_mb = (a_mb - a_mb.mean()) / (a_mb.std() + 1e-8)
                    pg = -torch.min(ratio * a_mb, ratio.clamp(1 - c.clip, 1 + c.clip) * a_mb).mean()
                    ent = dist.entropy()
                    ent = ent.mean() if self.discrete else ent.sum(-1).mean()
                    vals, extra = split_value_heads(self.critic(b_obs[idx]), c.value_loss)
                    tgt = returns[:, idx]
                    check_finite_td(tgt - vals.detach(), self.env_steps)
                    vl = value_loss(c.value_loss, vals, tgt, biv_coef=c.biv_coef, min_ebs=c.min_ebs, **extra)
                    loss = pg - c.ent_coef * ent + c.vf_coef * vl
                    self.opt.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.parameters(), c.max_grad_norm)
                    self.opt.step()
                    stats["value_loss"] += float(vl.detach())
                    stats["policy_loss"] += float(pg.detach())
                    stats["td_abs"] += float((tgt - vals.detach()).abs().mean())
                    if "beta" in extra:
                        b = float(extra["beta"].detach().mean())
                        stats["beta_mean"] = b if math.isnan(stats["beta_mean"]) else stats["beta_mean"] + b
                    n_mb += 1
            row = {"env_steps": self.env_steps,
                   "episode_return": float(np.mean(finished)) if finished else math.nan,
                   "ensemble_std": float(val_buf.std(0).mean()) if K > 1 else 0.0}
            row.update({k: v / n_mb for k, v in stats.items()})
            rec.log.append(row)
            if callback is not None:
                callback(row)
        return replace(rec, wall_time=time.perf_counter() - t0)
