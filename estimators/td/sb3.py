"""GGD / BIEV value weighting for Stable-Baselines3's PPO and SAC (the optional ``[rl]`` extra).

``GGDPPO`` and ``GGDSAC`` are SB3's own ``PPO`` and ``SAC`` with two changes: a value ensemble with a
second output per member (the GGD shape ``beta`` or a log-variance; :func:`~.agents.common.split_value_heads`)
and the value loss :func:`~.losses.value_loss` of a chosen kind in place of SB3's MSE. ``value_loss=None``
trains exactly as plain SB3 (same parameters at the same seed; tested).

How the loss gets in without copying ``train()``: SB3 computes the value loss as ``F.mse_loss(...)``
inside ``PPO.train`` / ``SAC.train`` with no hook. During our ``train()`` the module global ``F`` of
``stable_baselines3.ppo.ppo`` (``...sac.sac``) answers ``mse_loss`` with the active hook (a
``ContextVar``, so other threads and plain SB3 models are untouched: with no hook active it is
``torch.nn.functional.mse_loss``). The hook reads the full ensemble output that the value head /
critic recorded on the same minibatch, checks by identity that SB3 passed that tensor, and returns
``value_loss``; if SB3 stops calling it, training raises instead of silently falling back to MSE.

Differences from :mod:`.agents` (the project's own PPO/SAC): PPO's targets are SB3's GAE returns,
computed with the ensemble-mean value and shared by the members (the project's agent gives each
member its own GAE); PPO's value ensemble is a separate ``K``-member MLP on the features, the actor
is SB3's. SAC's target is the min over a random subset of ``target_subset`` target critics (REDQ;
all of them, SB3's clipped double Q, when ``n_critics <= target_subset``); the actor uses SB3's min
over all critics. The GGD NLL with ``alpha = 1`` is sensitive to the scale of the TD errors: wrap
the environment in ``VecNormalize(norm_reward=True)`` (the project's agents normalise rewards too).
"""
from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

try:
    import stable_baselines3.ppo.ppo as _sb3_ppo
    import stable_baselines3.sac.sac as _sb3_sac
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.policies import ActorCriticPolicy, ContinuousCritic
    from stable_baselines3.common.torch_layers import MlpExtractor
    from stable_baselines3.sac.policies import SACPolicy
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("estimators.td.sb3 needs stable-baselines3: pip install -e '.[rl]'") from err

from .agents.common import check_value_loss, split_value_heads
from .agents.nets import EnsembleLinear
from .losses import risk_averse_weights, value_loss
from .weights import biev_variance, biv_weights, effective_batch_size

__all__ = ["GGDPPO", "GGDSAC", "GGDActorCriticPolicy", "GGDSACPolicy", "EnsembleValueHead", "EnsembleCritic"]

_HOOK: contextvars.ContextVar[Callable[..., torch.Tensor] | None] = contextvars.ContextVar(
    "estimators_td_sb3_mse_hook", default=None)


class _HookedFunctional:
    """Stands in for ``torch.nn.functional`` in one SB3 module: ``mse_loss`` goes to the active hook."""

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)

    @staticmethod
    def mse_loss(input: torch.Tensor, target: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        hook = _HOOK.get()
        if hook is None:
            return F.mse_loss(input, target, *args, **kwargs)
        if args or kwargs:
            raise RuntimeError("stable_baselines3 called mse_loss with extra arguments; estimators.td.sb3 "
                               "does not support this SB3 version")
        return hook(input, target)


_HOOKED_F = _HookedFunctional()


@contextmanager
def _value_loss_hook(module: ModuleType, hook: Callable[..., torch.Tensor]) -> Iterator[None]:
    # installed on first use (never at import) and left in place: with no hook active it is plain F
    if module.F is not _HOOKED_F:
        if module.F is not F:
            raise RuntimeError(f"{module.__name__}.F is not torch.nn.functional; cannot hook the value loss")
        module.F = _HOOKED_F
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def _global_generator() -> torch.Generator:
    # SB3 seeds everything through the global RNG (``seed=``); draw our generator's seed from it once
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))


def _weight_stats(kind: str, values: torch.Tensor, targets: torch.Tensor, extra: dict, *,
                  min_ebs: float | None, risk_averse: bool) -> dict[str, float]:
    """The weights ``value_loss(kind, ...)`` applies on this batch, summarised (1 = uniform weights).

    For logging only: recomputed as :func:`~.losses.value_loss` does (losses.py).
    """
    values = values.detach()
    K, B = values.shape
    delta = targets.detach().expand_as(values) - values
    stats: dict[str, float] = {"td_abs": float(delta.abs().mean())}
    if "beta" in extra:
        beta = extra["beta"].detach()
        stats["beta_mean"] = float(beta.mean())
        if risk_averse:
            omega = K * risk_averse_weights(beta, per_sample=True) if kind == "ggd_biev" else risk_averse_weights(beta)
            stats["risk_weight_min"], stats["risk_weight_max"] = float(omega.min()), float(omega.max())
    if kind == "gauss_biv":
        var = values.var(0, unbiased=True)
    elif kind == "ggd_biev":
        var = biev_variance(delta, ddof=0, unbiased_kurtosis=True).clamp(min=1e-8)  # losses._BIEV_FLOOR
    elif kind == "ggd_biev_pooled":
        var = biev_variance(delta)
    else:
        return stats
    w = biv_weights(var, min_ebs=min_ebs)
    stats["biv_weight_max"] = float(B * w.max())
    stats["biv_ess_fraction"] = float(effective_batch_size(w) / B)
    return stats


class _WeightedValueLoss:
    """The loss options and the per-``train()`` bookkeeping shared by :class:`GGDPPO` and :class:`GGDSAC`."""

    value_loss: str | None
    biv_coef: float
    min_ebs: float | None
    risk_averse: bool
    weight_log: list[dict]

    def _init_weighting(self, value_loss: str | None, biv_coef: float, min_ebs: float | None,
                        risk_averse: bool) -> None:
        if value_loss is not None:
            check_value_loss(value_loss, 2)  # the ensemble size is checked once the policy exists
        if not (isinstance(biv_coef, (int, float)) and math.isfinite(biv_coef) and biv_coef >= 0):
            raise ValueError(f"biv_coef must be a finite number >= 0, got {biv_coef!r}")
        self.value_loss, self.biv_coef, self.min_ebs, self.risk_averse = value_loss, float(biv_coef), min_ebs, risk_averse
        self.weight_log = []
        self._calls, self._sums = 0, {}

    def _loss(self, targets: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        values, extra = split_value_heads(out, self.value_loss)
        loss = value_loss(self.value_loss, values, targets, biv_coef=self.biv_coef, min_ebs=self.min_ebs,
                          risk_averse=self.risk_averse, **extra)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite value loss at update {self._n_updates} (environment step {self.num_timesteps}); the "
                "GGD NLL with alpha = 1 needs TD errors of order one: normalise rewards (VecNormalize(norm_reward=True))")
        if out.requires_grad:
            out.register_hook(self._check_gradient)
        stats = _weight_stats(self.value_loss, values, targets, extra, min_ebs=self.min_ebs,
                              risk_averse=self.risk_averse)
        stats["value_loss"] = float(loss.detach())
        for k, v in stats.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._calls += 1
        return loss

    def _check_gradient(self, grad: torch.Tensor) -> None:
        # a NaN here would reach every parameter through SB3's clip_grad_norm_ (shared optimizer)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(
                f"non-finite value-loss gradient at update {self._n_updates} (environment step {self.num_timesteps})"
                "; e.g. ggd_nll's gradient is NaN at a TD error of exactly 0 when beta < 1")

    @contextmanager
    def _weighted(self, module: ModuleType, hook: Callable[..., torch.Tensor], expect_calls: bool) -> Iterator[None]:
        self._calls, self._sums = 0, {}
        with _value_loss_hook(module, hook):
            yield
        if self.value_loss is None:
            return
        if expect_calls and self._calls == 0:
            raise RuntimeError(f"{module.__name__}.train did not compute its value loss through F.mse_loss; "
                               "estimators.td.sb3 does not support this stable-baselines3 version")
        if self._calls:
            row = {k: v / self._calls for k, v in self._sums.items()}
            for k, v in row.items():
                if k != "value_loss":  # SB3 logs that itself (train/value_loss, train/critic_loss)
                    self.logger.record(f"train/{k}", v)
            self.weight_log.append({"n_updates": self._n_updates, **row})


# ---------------------------------------------------------------------------------------------- PPO


class EnsembleValueHead(nn.Module):
    """``K`` independent value MLPs ``(B, d) -> (K, B, 2)`` (value, raw extra head); returns the mean value.

    ``forward`` returns the members' mean value ``(B, 1)``, what SB3 stores and bootstraps from, and
    keeps the full output of that call in ``last`` for the value-loss hook of the same minibatch.
    Orthogonal initialisation with SB3's gains (``sqrt 2`` hidden, 1 output), whatever ``ortho_init``.
    """

    def __init__(self, in_dim: int, hidden: list[int], members: int, activation: type[nn.Module], *,
                 generator: torch.Generator):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [EnsembleLinear(members, d, h, generator=generator, gain=math.sqrt(2)), activation()]
            d = h
        layers.append(EnsembleLinear(members, d, 2, generator=generator, gain=1.0))
        self.net = nn.Sequential(*layers)
        self.members = members
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        out = self.net(latent)
        mean = out[..., 0].mean(0).unsqueeze(-1)
        self.last = (out, mean)
        return mean


class GGDActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``MlpPolicy`` for PPO with the value network replaced by an :class:`EnsembleValueHead`.

    The actor is SB3's (``net_arch["pi"]``); the value ensemble has ``ensemble`` members with hidden
    sizes ``net_arch["vf"]`` on the (flattened) features. Other arguments as ``ActorCriticPolicy``.
    """

    def __init__(self, *args, ensemble: int = 5, **kwargs):
        if not isinstance(ensemble, int) or ensemble < 1:
            raise ValueError(f"ensemble must be a positive int, got {ensemble!r}")
        self._ensemble = ensemble  # read by _build, which ActorCriticPolicy.__init__ calls
        super().__init__(*args, **kwargs)

    @property
    def ensemble(self) -> int:
        return self._ensemble

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch
        pi, vf = (list(arch.get("pi", [])), list(arch.get("vf", []))) if isinstance(arch, dict) else (list(arch),) * 2
        self._vf_arch = vf
        # the value branch lives in the ensemble head: SB3's extractor passes the features through
        self.mlp_extractor = MlpExtractor(self.features_dim, net_arch=dict(pi=pi, vf=[]),
                                          activation_fn=self.activation_fn, device=self.device)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.value_net = EnsembleValueHead(self.mlp_extractor.latent_dim_vf, self._vf_arch, self._ensemble,
                                           self.activation_fn, generator=_global_generator()).to(self.device)
        # the optimizer built by super() holds the replaced Linear value net: rebuild it over the new one
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "ensemble": self._ensemble}


class GGDPPO(_WeightedValueLoss, PPO):
    """SB3's PPO with the value loss :func:`~estimators.td.losses.value_loss` of kind ``value_loss``.

    Parameters
    ----------
    policy : "MlpPolicy" or type
        ``"MlpPolicy"`` becomes :class:`GGDActorCriticPolicy` when ``value_loss`` is set (set the
        ensemble size with ``policy_kwargs=dict(ensemble=K)``, default 5); any SB3 policy when it is None.
    env : gymnasium env, VecEnv or str
    value_loss : {"ggd_biev", "ggd_biev_pooled", "gauss_biv", "mse"} or None
        ``"ggd_biev"`` is the published loss (Kim et al. 2024); None trains as plain SB3 PPO.
    biv_coef, min_ebs, risk_averse
        As in :func:`~estimators.td.losses.value_loss`.
    **kwargs
        Passed to ``stable_baselines3.PPO`` (``clip_range_vf`` must be None with a value loss).

    Attributes
    ----------
    weight_log : list of dict
        One row per ``train()``: ``n_updates``, ``value_loss``, ``td_abs``, ``beta_mean``, and the weights
        as ``risk_weight_min/max`` (``K omega``) and ``biv_weight_max`` (``B max w``), ``biv_ess_fraction``
        (effective batch size / B): all 1 for uniform weights. All but ``value_loss`` are also logged
        as ``train/<name>`` (SB3 logs the loss itself).

    References
    ----------
    Kim et al., arXiv 2408.02295, Section 4 and Algorithm 1; Raffin et al., JMLR 22 (2021) (SB3).

    Examples
    --------
    >>> model = GGDPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0,
    ...                policy_kwargs=dict(ensemble=3), device="cpu")
    >>> model = model.learn(64)
    >>> sorted(model.weight_log[-1])[:3]
    ['beta_mean', 'biv_ess_fraction', 'biv_weight_max']
    """

    def __init__(self, policy: str | type, env: Any, *, value_loss: str | None = "ggd_biev", biv_coef: float = 0.1,
                 min_ebs: float | None = None, risk_averse: bool = True, **kwargs):
        self._init_weighting(value_loss, biv_coef, min_ebs, risk_averse)
        if value_loss is not None:
            policy = _ensemble_policy(policy, GGDActorCriticPolicy)
            if kwargs.get("clip_range_vf") is not None:
                raise ValueError(f"clip_range_vf must be None with value_loss={value_loss!r}, "
                                 f"got {kwargs['clip_range_vf']!r}")
        super().__init__(policy, env, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.value_loss is not None:
            check_value_loss(self.value_loss, self.policy.ensemble)

    def _hook(self, returns: torch.Tensor, values_pred: torch.Tensor) -> torch.Tensor:
        if self.value_loss is None:
            return F.mse_loss(returns, values_pred)
        last = self.policy.value_net.last
        # SB3 passes values.flatten(), a view of the mean the head returned on this minibatch
        if last is None or values_pred.shape != last[1].shape[:1] or values_pred.data_ptr() != last[1].data_ptr():
            raise RuntimeError("PPO.train's value loss is not on the value head's last output; "
                               "estimators.td.sb3 does not support this stable-baselines3 version")
        return self._loss(returns, last[0])

    def train(self) -> None:
        with self._weighted(_sb3_ppo, self._hook, expect_calls=self.n_epochs > 0):
            super().train()


# ---------------------------------------------------------------------------------------------- SAC


class EnsembleCritic(ContinuousCritic):
    """SB3's ``ContinuousCritic`` whose ``n_critics`` Q-nets each have a second output (the raw extra head).

    ``forward`` returns the Q-values only, as SB3 expects, and keeps ``last`` (the full outputs and
    the returned tensors) for the value-loss hook. With ``target_subset = m`` set (on the target
    critic) it returns a random subset of ``m`` members, drawn from its own generator.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for q_net in self.q_networks:
            q_net[-1] = nn.Linear(q_net[-1].in_features, 2).to(q_net[-1].weight.device)
        self.target_subset: int | None = None
        self._gen = _global_generator()
        self.last: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = super().forward(obs, actions)
        q = tuple(o[:, :1] for o in out)
        self.last = (out, q)
        m = self.target_subset
        if m is not None and len(q) > m:
            q = tuple(q[i] for i in torch.randperm(len(q), generator=self._gen)[:m].tolist())
        return q

    def q1_forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return super().q1_forward(obs, actions)[:, :1]


class GGDSACPolicy(SACPolicy):
    """SB3's SAC ``MlpPolicy`` with :class:`EnsembleCritic` critics (default ``n_critics=5``).

    ``target_subset``: the number of target critics the TD target takes the min over (REDQ; None: all).
    """

    def __init__(self, *args, n_critics: int = 5, target_subset: int | None = 2, **kwargs):
        if not isinstance(n_critics, int) or n_critics < 1:
            raise ValueError(f"n_critics must be a positive int, got {n_critics!r}")
        if target_subset is not None and (not isinstance(target_subset, int) or target_subset < 1):
            raise ValueError(f"target_subset must be a positive int or None, got {target_subset!r}")
        super().__init__(*args, n_critics=n_critics, **kwargs)
        self.target_subset = target_subset
        self.critic_target.target_subset = target_subset

    @property
    def ensemble(self) -> int:
        return self.critic_kwargs["n_critics"]

    def make_critic(self, features_extractor=None) -> EnsembleCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return EnsembleCritic(**critic_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "target_subset": self.target_subset}


class GGDSAC(_WeightedValueLoss, SAC):
    """SB3's SAC with the critic loss :func:`~estimators.td.losses.value_loss` of kind ``value_loss``.

    Parameters
    ----------
    policy : "MlpPolicy" or type
        ``"MlpPolicy"`` becomes :class:`GGDSACPolicy` when ``value_loss`` is set (ensemble size
        ``policy_kwargs=dict(n_critics=K)``, default 5; ``target_subset``, default 2); any SB3 policy
        when it is None.
    env : gymnasium env, VecEnv or str
    value_loss : {"ggd_biev", "ggd_biev_pooled", "gauss_biv", "mse"} or None
        None trains as plain SB3 SAC. The loss replaces SB3's ``0.5 sum_k MSE_k`` as a whole.
    biv_coef, min_ebs, risk_averse
        As in :func:`~estimators.td.losses.value_loss`.
    **kwargs
        Passed to ``stable_baselines3.SAC``.

    Attributes
    ----------
    weight_log : list of dict
        As :attr:`GGDPPO.weight_log`, one row per ``train()`` call (per environment step by default).

    References
    ----------
    Kim et al., arXiv 2408.02295; Chen et al., ICLR 2021 (REDQ's target subset).

    Examples
    --------
    >>> model = GGDSAC("MlpPolicy", "Pendulum-v1", learning_starts=32, batch_size=16, seed=0, device="cpu",
    ...                policy_kwargs=dict(net_arch=[16]))
    >>> model = model.learn(40)
    >>> len(model.weight_log)
    8
    """

    def __init__(self, policy: str | type, env: Any, *, value_loss: str | None = "ggd_biev", biv_coef: float = 0.1,
                 min_ebs: float | None = None, risk_averse: bool = True, **kwargs):
        self._init_weighting(value_loss, biv_coef, min_ebs, risk_averse)
        if value_loss is not None:
            policy = _ensemble_policy(policy, GGDSACPolicy)
        super().__init__(policy, env, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.value_loss is not None:
            check_value_loss(self.value_loss, self.policy.ensemble)

    def _hook(self, current_q: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
        if self.value_loss is None:
            return F.mse_loss(current_q, target_q)
        last = self.critic.last
        k = next((i for i, q in enumerate(last[1]) if q is current_q), None) if last is not None else None
        if k is None:
            raise RuntimeError("SAC.train's critic loss is not on the critic's last output; "
                               "estimators.td.sb3 does not support this stable-baselines3 version")
        if k > 0:
            return current_q.new_zeros(())
        # SB3 sums 0.5 * mse_loss over the members: the whole ensemble loss, doubled, comes with member 0
        out = torch.stack(last[0], 0)  # (K, B, 2)
        return 2.0 * self._loss(target_q.reshape(-1), out)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        with self._weighted(_sb3_sac, self._hook, expect_calls=gradient_steps > 0):
            super().train(gradient_steps, batch_size)


def _ensemble_policy(policy: str | type, default: type) -> type:
    if policy == "MlpPolicy":
        return default
    if isinstance(policy, type) and issubclass(policy, default):
        return policy
    raise ValueError(f"with a value loss, policy must be 'MlpPolicy' or a subclass of {default.__name__}, "
                     f"got {policy!r}")
