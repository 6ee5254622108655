"""The experiment runner: YAML configs, registered experiment kinds, run directories.

This is the top layer: kinds (one file per library module) import the library; no library module
imports this package.
"""
from .config import ExperimentConfig, ConfigError, load_config
from .registry import KIND_MODULES, experiment, get_kind, list_kinds
from .runner import Run, run_experiment

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "KIND_MODULES",
    "Run",
    "experiment",
    "get_kind",
    "list_kinds",
    "load_config",
    "run_experiment",
]
