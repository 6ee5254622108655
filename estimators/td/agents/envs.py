"""Seeded, vectorised gymnasium environments, with noisy variants of CartPole and Pendulum.

``NoisyCartPole-v1`` multiplies the push force by a fresh ``U(1 - noise, 1 + noise)`` factor at every
step (``noise = 0.3``: ±30%); ``NoisyPendulum-v1`` does the same to the applied torque. Both make the
return stochastic given the state and action, which is what uncertainty-aware TD learning models.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from genstat.mc import block_seed

__all__ = ["RandomForceScale", "ENV_NAMES", "make_env", "make_vector_env", "evaluate_policy", "env_seed"]

#: name -> (gymnasium id, force/torque noise)
ENV_NAMES: dict[str, tuple[str, float]] = {
    "CartPole-v1": ("CartPole-v1", 0.0),
    "NoisyCartPole-v1": ("CartPole-v1", 0.3),
    "Acrobot-v1": ("Acrobot-v1", 0.0),
    "Pendulum-v1": ("Pendulum-v1", 0.0),
    "NoisyPendulum-v1": ("Pendulum-v1", 0.3),
    "MountainCarContinuous-v0": ("MountainCarContinuous-v0", 0.0),
}


def env_seed(seed: int, stream: int) -> int:
    """A 31-bit environment seed derived from ``(seed, stream)`` (gymnasium wants small ints)."""
    return block_seed(seed, 0, stream) % (2**31 - 1)


class RandomForceScale(gym.Wrapper):
    """Scale the actuation by ``U(1 - noise, 1 + noise)``, redrawn every step.

    CartPole-like environments (with ``force_mag``) get their push force scaled; environments with a
    continuous action space get the action scaled before it is applied. The factors come from the
    wrapper's own ``numpy`` generator, seeded by ``reset(seed=...)``.
    """

    def __init__(self, env: gym.Env, noise: float = 0.3):
        super().__init__(env)
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise must be in [0, 1), got {noise}")
        self.noise = float(noise)
        self._base_force = getattr(env.unwrapped, "force_mag", None)
        if self._base_force is None and not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError("RandomForceScale needs an env with force_mag or a Box action space")
        self._rng = np.random.default_rng(0)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        factor = 1.0 + self.noise * (2.0 * self._rng.random() - 1.0)
        if self._base_force is not None:
            self.env.unwrapped.force_mag = self._base_force * factor
            return self.env.step(action)
        return self.env.step(np.asarray(action, dtype=np.float32) * np.float32(factor))


def make_env(name: str, *, noise: float | None = None) -> gym.Env:
    """Create one environment by name (see :data:`ENV_NAMES`); ``noise`` overrides the default scale noise.

    Examples
    --------
    >>> env = make_env("NoisyCartPole-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (4,)
    """
    if name not in ENV_NAMES:
        raise ValueError(f"env must be one of {sorted(ENV_NAMES)}, got {name!r}")
    gym_id, default_noise = ENV_NAMES[name]
    env = gym.make(gym_id)
    level = default_noise if noise is None else noise
    return RandomForceScale(env, level) if level > 0 else env


def make_vector_env(name: str, n_envs: int, *, seed: int, noise: float | None = None) -> tuple[SyncVectorEnv, Any]:
    """``n_envs`` copies in a :class:`SyncVectorEnv` with same-step autoreset, reset with derived seeds.

    Returns the vector env and the first observations. After an episode ends, ``infos["final_obs"]``
    holds its last observation (for bootstrapping truncated episodes).

    Examples
    --------
    >>> venv, obs = make_vector_env("Acrobot-v1", 4, seed=0)
    >>> obs.shape
    (4, 6)
    """
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
    fns: Sequence[Callable[[], gym.Env]] = [lambda: make_env(name, noise=noise) for _ in range(n_envs)]
    venv = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, _ = venv.reset(seed=[env_seed(seed, 1000 + i) for i in range(n_envs)])
    return venv, obs


def evaluate_policy(policy: Callable[[torch.Tensor], np.ndarray], name: str, *, n_episodes: int = 10,
                    seed: int = 0, noise: float | None = None) -> np.ndarray:
    """Undiscounted returns of ``n_episodes`` episodes of ``policy`` (obs tensor ``(1, d)`` -> action).

    Episode ``i`` starts from ``reset(seed=env_seed(seed, 5000 + i))``, so evaluations are reproducible.

    Examples
    --------
    >>> r = evaluate_policy(lambda o: np.zeros(len(o), dtype=int), "CartPole-v1", n_episodes=2)
    >>> r.shape
    (2,)
    """
    env = make_env(name, noise=noise)
    returns = np.zeros(n_episodes)
    for i in range(n_episodes):
        obs, _ = env.reset(seed=env_seed(seed, 5000 + i))
        done, total = False, 0.0
        while not done:
            action = policy(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0]
            obs, r, term, trunc, _ = env.step(action)
            total += float(r)
            done = term or trunc
        returns[i] = total
    env.close()
    return returns
