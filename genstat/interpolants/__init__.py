"""Stochastic interpolants (Albergo, Boffi & Vanden-Eijnden 2023): paths, exact Gaussian-mixture
fields, losses and conversions, minibatch couplings, ODE/SDE samplers, likelihood and a training loop."""
from __future__ import annotations

from .couplings import COUPLINGS, couple
from .exact import ExactFields, exact_fields
from .fields import eta_from_score, interpolant_loss, score_from_eta, velocity_from_predictions, x1_from_velocity
from .fit import TIME_SAMPLINGS, FitResult, fit, sample_times
from .likelihood import LikelihoodResult, log_likelihood
from .paths import FIELDS, GAMMAS, PATHS, Interpolant
from .samplers import ODE_METHODS, SDE_METHODS, SampleResult, integrate, sample_ode, sample_sde

__all__ = [
    "COUPLINGS",
    "ExactFields",
    "FIELDS",
    "FitResult",
    "GAMMAS",
    "Interpolant",
    "LikelihoodResult",
    "ODE_METHODS",
    "PATHS",
    "SDE_METHODS",
    "SampleResult",
    "TIME_SAMPLINGS",
    "couple",
    "eta_from_score",
    "exact_fields",
    "fit",
    "integrate",
    "interpolant_loss",
    "log_likelihood",
    "sample_ode",
    "sample_sde",
    "sample_times",
    "score_from_eta",
    "velocity_from_predictions",
    "x1_from_velocity",
]
