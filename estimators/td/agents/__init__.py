"""Small PPO and SAC agents with value ensembles and pluggable value losses (needs gymnasium)."""
from .common import ReturnNormalizer, TrainingResult
from .envs import ENV_NAMES, RandomForceScale, evaluate_policy, make_env, make_vector_env
from .nets import EnsembleLinear, EnsembleMLP
from .ppo import PPO, PPOConfig
from .sac import SAC, SACConfig

__all__ = [
    "ENV_NAMES",
    "EnsembleLinear",
    "EnsembleMLP",
    "PPO",
    "PPOConfig",
    "RandomForceScale",
    "ReturnNormalizer",
    "SAC",
    "SACConfig",
    "TrainingResult",
    "evaluate_policy",
    "make_env",
    "make_vector_env",
]
