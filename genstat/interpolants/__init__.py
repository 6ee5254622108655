"""Stochastic interpolants (Albergo, Boffi & Vanden-Eijnden 2023): paths, exact Gaussian-mixture
fields, losses and conversions, minibatch couplings, ODE/SDE samplers, likelihood, a training loop, and
conditional fields with classifier-free guidance."""
from __future__ import annotations

from .conditional import NULL_LABEL, guided, null_condition
from .couplings import COUPLINGS, couple
from .exact import ConditionalExactFields, ExactFields, conditional_exact_fields, exact_fields
from .fields import eta_from_score, interpolant_loss, score_from_eta, velocity_from_predictions, x1_from_velocity
from .fit import TIME_SAMPLINGS, FitResult, fit, sample_times
from .likelihood import LikelihoodResult, log_likelihood
from .paths import FIELDS, GAMMAS, PATHS, Interpolant
from .samplers import ODE_METHODS, SDE_METHODS, SampleResult, integrate, sample_ode, sample_sde

__all__ = [
    "COUPLINGS",
    "ConditionalExactFields",
    "ExactFields",
    "FIELDS",
    "FitResult",
    "GAMMAS",
    "Interpolant",
    "LikelihoodResult",
    "NULL_LABEL",
    "ODE_METHODS",
    "PATHS",
    "SDE_METHODS",
    "SampleResult",
    "TIME_SAMPLINGS",
    "conditional_exact_fields",
    "couple",
    "eta_from_score",
    "exact_fields",
    "fit",
    "guided",
    "integrate",
    "interpolant_loss",
    "log_likelihood",
    "null_condition",
    "sample_ode",
    "sample_sde",
    "sample_times",
    "score_from_eta",
    "velocity_from_predictions",
    "x1_from_velocity",
]
