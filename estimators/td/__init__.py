"""estimators.td: generalized-Gaussian TD-error modelling and weighting (Kim et al. 2024, arXiv 2408.02295).

- :mod:`.ggd`: the :class:`GeneralizedGaussian` distribution; :mod:`.fit`: batched :func:`fit_ggd`.
- :mod:`.weights`: batch inverse-variance weights (:func:`biv_weights`) and :func:`biev_variance`.
- :mod:`.losses`: :func:`ggd_nll`, :func:`risk_averse_weights`, :func:`value_loss`.
- :mod:`.agents`: small PPO and SAC agents with value ensembles (imported on demand; needs gymnasium).
"""
from __future__ import annotations

import importlib

from .fit import GGDFit, GGDFitResult, fit_ggd, ggd_fisher_information, invert_ggd_kurtosis
from .ggd import GeneralizedGaussian, gammaincinv, ggd_excess_kurtosis
from .losses import VALUE_LOSS_KINDS, gaussian_nll, ggd_nll, risk_averse_weights, value_loss
from .weights import biev_variance, biv_weights, biv_xi, effective_batch_size, ensemble_excess_kurtosis

__all__ = [
    "GGDFit",
    "GGDFitResult",
    "GeneralizedGaussian",
    "VALUE_LOSS_KINDS",
    "agents",
    "biev_variance",
    "biv_weights",
    "biv_xi",
    "effective_batch_size",
    "ensemble_excess_kurtosis",
    "fit_ggd",
    "gammaincinv",
    "gaussian_nll",
    "ggd_excess_kurtosis",
    "ggd_fisher_information",
    "ggd_nll",
    "invert_ggd_kurtosis",
    "risk_averse_weights",
    "value_loss",
]


def __getattr__(name: str):
    if name == "agents":
        return importlib.import_module("estimators.td.agents")
    raise AttributeError(f"module 'estimators.td' has no attribute {name!r}")
