"""Agents: PPO learns CartPole in a short run; seeding; noisy envs; value-loss plumbing; bad input."""
import math

import numpy as np
import pytest
import torch

import estimators.td as td
from estimators.td.agents import (ENV_NAMES, PPO, SAC, PPOConfig, RandomForceScale, SACConfig, TrainingResult,
                                  make_env, make_vector_env)


def test_ppo_learns_cartpole():
    # random play scores ~22 on CartPole-v1; 12k steps of PPO (about 8 s) bring the greedy policy far above
    agent = PPO("CartPole-v1", PPOConfig(n_envs=8, n_steps=64, ensemble=1), seed=0)
    rec = agent.learn(12_288)
    returns = agent.evaluate(3, seed=123)
    assert returns.mean() > 100, returns
    log = rec.to_frame()
    assert log["env_steps"].iloc[-1] == 12_288 and rec.wall_time > 0
    first, last = log["episode_return"].iloc[:4].mean(), log["episode_return"].iloc[-4:].mean()
    assert last > 2 * first


def test_ppo_is_seeded():
    cfg = PPOConfig(n_envs=2, n_steps=32, ensemble=3, value_loss="ggd_biev")
    a = PPO("NoisyCartPole-v1", cfg, seed=4).learn(128).to_frame()
    b = PPO("NoisyCartPole-v1", cfg, seed=4).learn(128).to_frame()
    c = PPO("NoisyCartPole-v1", cfg, seed=5).learn(128).to_frame()
    assert a.equals(b)
    assert not a["value_loss"].equals(c["value_loss"])


@pytest.mark.parametrize("kind", ["mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled"])
def test_ppo_value_losses_run(kind):
    rec = PPO("Acrobot-v1", PPOConfig(n_envs=2, n_steps=32, ensemble=3, value_loss=kind), seed=0).learn(128)
    log = rec.to_frame()
    assert np.isfinite(log["value_loss"]).all()
    assert kind.startswith("ggd_") == bool(np.isfinite(log["beta_mean"]).all())
    assert (log["ensemble_std"] > 0).all()


def test_ppo_continuous_actions():
    agent = PPO("MountainCarContinuous-v0", PPOConfig(n_envs=2, n_steps=16, ensemble=2), seed=0)
    agent.learn(32)
    a = agent.act(torch.zeros(3, 2))
    assert a.shape == (3, 1) and np.all(np.abs(a) <= 1.0)


@pytest.mark.parametrize("kind", ["mse", "gauss_biv", "ggd_biev"])
def test_sac_runs_and_is_seeded(kind):
    cfg = SACConfig(learning_starts=30, batch_size=16, hidden=16, ensemble=3, value_loss=kind, log_every=30)
    a = SAC("NoisyPendulum-v1", cfg, seed=1).learn(60)
    b = SAC("NoisyPendulum-v1", cfg, seed=1).learn(60)
    assert isinstance(a, TrainingResult)
    assert a.to_frame().equals(b.to_frame())
    assert np.isfinite(a.to_frame()["value_loss"].iloc[-1])


def test_sac_evaluate_returns_per_episode():
    agent = SAC("Pendulum-v1", SACConfig(learning_starts=10, batch_size=8, hidden=8, log_every=10), seed=0)
    agent.learn(20)
    r = agent.evaluate(2)
    assert r.shape == (2,) and np.all(r < 0)


def test_noisy_cartpole_scales_force_within_30_percent():
    env = make_env("NoisyCartPole-v1")
    assert isinstance(env, RandomForceScale)
    env.reset(seed=0)
    forces = []
    for _ in range(50):
        _, _, term, trunc, _ = env.step(1)
        forces.append(env.unwrapped.force_mag)
        if term or trunc:
            env.reset()
    forces = np.array(forces) / 10.0
    assert forces.min() >= 0.7 and forces.max() <= 1.3 and forces.std() > 0.1
    env2 = make_env("NoisyCartPole-v1")
    env2.reset(seed=0)
    again = []
    for _ in range(5):
        env2.step(1)
        again.append(env2.unwrapped.force_mag / 10.0)
    np.testing.assert_allclose(again, forces[:5])


def test_noisy_pendulum_changes_dynamics():
    plain, noisy = make_env("Pendulum-v1"), make_env("NoisyPendulum-v1")
    o1, _ = plain.reset(seed=3)
    o2, _ = noisy.reset(seed=3)
    np.testing.assert_allclose(o1, o2)
    a = np.array([2.0], dtype=np.float32)
    o1, *_ = plain.step(a)
    o2, *_ = noisy.step(a)
    assert not np.allclose(o1, o2)


def test_vector_env_seeded():
    _, o1 = make_vector_env("Acrobot-v1", 3, seed=9)
    _, o2 = make_vector_env("Acrobot-v1", 3, seed=9)
    np.testing.assert_array_equal(o1, o2)
    assert not np.allclose(o1[0], o1[1])


def test_non_finite_td_errors_stop_with_step():
    agent = PPO("CartPole-v1", PPOConfig(n_envs=2, n_steps=16, ensemble=2), seed=0)
    with torch.no_grad():
        agent.critic.net[-1].bias.fill_(math.nan)
    with pytest.raises(FloatingPointError, match="step 32"):
        agent.learn(32)


@pytest.mark.parametrize("make, match", [
    (lambda: PPO("CartPole-v1", PPOConfig(ensemble=1, value_loss="ggd_biev")), "ensemble"),
    (lambda: PPO("CartPole-v1", PPOConfig(value_loss="huber")), "value_loss"),
    (lambda: SAC("CartPole-v1"), "Box"),
    (lambda: SAC("Pendulum-v1", SACConfig(reward_scale=0.0)), "reward_scale"),
    (lambda: make_env("LunarLander-v9"), "env"),
    (lambda: make_vector_env("CartPole-v1", 0, seed=0), "n_envs"),
    (lambda: PPO("CartPole-v1", PPOConfig(n_envs=1, n_steps=8)).learn(0), "total_steps"),
])
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("module", ["estimators.td", "estimators.td.agents"])
def test_all_names_resolve(module):
    import importlib

    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
    assert set(ENV_NAMES) >= {"NoisyCartPole-v1", "NoisyPendulum-v1", "Acrobot-v1", "MountainCarContinuous-v0"}
    assert td.agents.PPO is PPO


def test_agents_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    PPO("CartPole-v1", PPOConfig(n_envs=2, n_steps=8, ensemble=2), seed=0).learn(16)
    SAC("Pendulum-v1", SACConfig(learning_starts=5, batch_size=4, hidden=8, log_every=5), seed=0).learn(10)
    assert torch.equal(state, torch.random.get_rng_state())
