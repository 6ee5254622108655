"""genstat.gauge: gauge decomposition of score fields, non-conservativity and intrinsic dimension
(Horvat & Pfister, "On gauge freedom, conservativity and intrinsic dimensionality estimation in
diffusion models", ICLR 2024)."""
from __future__ import annotations

from .conservativity import NonconservativityResult, nonconservativity
from .decompose import (
    GaugeDecomposition,
    LinearGaugeDecomposition,
    MLPPotential,
    QuadraticPotential,
    decompose,
    gauge_residual,
    linear_gauge_decomposition,
)
from .dimension import IDEstimate, id_flipd, id_flow_jacobian, id_mle, id_score_svd, id_twonn, spectral_gap
from .flow import FlowResult, ProbabilityFlow
from .models import EnergyScore, FreeScore, ScoreFitResult, fit_score
from .sampling import langevin_sampler

__all__ = [
    "EnergyScore",
    "FlowResult",
    "FreeScore",
    "GaugeDecomposition",
    "IDEstimate",
    "LinearGaugeDecomposition",
    "MLPPotential",
    "NonconservativityResult",
    "ProbabilityFlow",
    "QuadraticPotential",
    "ScoreFitResult",
    "decompose",
    "fit_score",
    "gauge_residual",
    "id_flipd",
    "id_flow_jacobian",
    "id_mle",
    "id_score_svd",
    "id_twonn",
    "langevin_sampler",
    "linear_gauge_decomposition",
    "nonconservativity",
    "spectral_gap",
]
