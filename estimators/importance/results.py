"""Result types of :mod:`estimators.importance`."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from scipy import stats

from genstat.mc import normal_interval

__all__ = ["AdaptationStep", "MultiExpectationResult"]


def interval(
    estimate: torch.Tensor, stderr: torch.Tensor, level: float, df: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``estimate ± q stderr``: q the normal quantile (``df=None``) or Student's t with ``df``.

    A stderr from R independent replicates (RQMC randomisations) is a chi-square with R - 1
    degrees of freedom times the true one, so the t quantile gives exact coverage for normal
    replicate means; the normal quantile under-covers (R = 8, 95%: 1.96 against 2.36).
    """
    if df is None:
        return normal_interval(estimate, stderr, level)
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be None or an int >= 1, got {df!r}")
    q = float(stats.t.ppf(0.5 + 0.5 * float(level), df))
    return estimate - q * stderr, estimate + q * stderr


@dataclass(frozen=True, slots=True)
class AdaptationStep:
    """One iteration of the aISCV adaptation.

    Attributes
    ----------
    iteration : int
        k (0 is the initial sample from the inputs).
    n_calls : int
        Cumulative calls of ``phis`` (points) after this iteration.
    alpha : Tensor, shape (J,)
        Mixture weights of the sampling density of this iteration.
    beta : Tensor, shape (J,)
        Control-variate coefficients fitted on this iteration's batch.
    variance : Tensor, shape (J,)
        Per-point variance of the aISCV summand on this batch (sigma^2_{j,k}).
    criterion : float
        ``sum_j w_j sigma^2_{j,k} / (N - N_k)``: the predicted final variance of the stopping rule.
    alpha_gap : float
        Relative duality gap of the alpha-step (0 when not solved, e.g. k = 0).
    """

    iteration: int
    n_calls: int
    alpha: torch.Tensor
    beta: torch.Tensor
    variance: torch.Tensor
    criterion: float
    alpha_gap: float = 0.0


@dataclass(frozen=True, slots=True)
class MultiExpectationResult:
    """Estimates of J expectations I_j = E_{f_j}[phi_j(X)] from one adaptive sample.

    Attributes
    ----------
    estimate, stderr : Tensor, shape (J,)
        Estimates and standard errors (float64, CPU). For aISCV they come from the fresh final
        sample only, so the estimate is unbiased and the stderr is the plain i.i.d. one.
    n_samples : int
        Total calls of ``phis`` (adaptive + final).
    n_adaptive, n_final : int
        Calls spent in the adaptation and in the final sample.
    weights : Tensor, shape (J,)
        The criterion weights w_j of ``sum_j w_j Var(I_j)`` (used by the stopping rule).
    trace : tuple of AdaptationStep
        The adaptation history (empty for non-adaptive baselines).
    covariance : Tensor, shape (J, J), optional
        Estimated covariance of the estimates.
    method : str
        ``"aiscv"``, ``"mc_multi"``, ``"is_separate"``, ``"mixture_reweighting"``.
    wall_time : float
        Seconds.
    level : float
        Default confidence level.
    names : tuple of str, optional
        Names of the expectations.
    chosen_iteration : int
        Which iteration's sampler (and beta) was frozen for the final sample (0: the initial
        sampler fbar without control variates; -1: not adaptive).
    df : int, optional
        Degrees of freedom of the stderr when it comes from few independent replicates (the
        ``n_randomizations`` RQMC randomisations: R - 1); intervals then use Student's t with
        ``df`` degrees of freedom. None: the stderr rests on many points, intervals are normal.
    """

    estimate: torch.Tensor
    stderr: torch.Tensor
    n_samples: int
    n_adaptive: int
    n_final: int
    weights: torch.Tensor
    trace: tuple[AdaptationStep, ...] = ()
    covariance: torch.Tensor | None = None
    method: str = "aiscv"
    wall_time: float = 0.0
    level: float = 0.95
    names: tuple[str, ...] | None = field(default=None)
    chosen_iteration: int = -1
    df: int | None = None

    @property
    def rse(self) -> torch.Tensor:
        """Relative standard errors ``stderr / |estimate|``."""
        return self.stderr / self.estimate.abs()

    @property
    def weighted_variance(self) -> float:
        """The criterion ``sum_j w_j stderr_j^2`` (an estimate of ``sum_j w_j Var(I_j)``)."""
        return float((self.weights * self.stderr**2).sum())

    def confidence_interval(self, level: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Confidence intervals ``estimate ± q stderr`` (level defaults to ``self.level``).

        q is the normal quantile, or Student's t with ``self.df`` degrees of freedom when the
        stderr comes from few replicates (``final="rqmc"``).
        """
        return interval(self.estimate, self.stderr, self.level if level is None else level, self.df)

    def to_frame(self, level: float | None = None) -> pd.DataFrame:
        """One row per expectation: estimate, stderr, CI (``df``: its t degrees of freedom, None if
        normal), weight, calls, method, wall time."""
        lo, hi = self.confidence_interval(level)
        J = self.estimate.numel()
        names = list(self.names) if self.names is not None else list(range(J))
        return pd.DataFrame(
            {
                "expectation": names,
                "estimate": self.estimate.tolist(),
                "stderr": self.stderr.tolist(),
                "ci_low": lo.tolist(),
                "ci_high": hi.tolist(),
                "level": [self.level if level is None else level] * J,
                "df": [self.df] * J,
                "weight": self.weights.tolist(),
                "n_samples": [self.n_samples] * J,
                "n_adaptive": [self.n_adaptive] * J,
                "n_final": [self.n_final] * J,
                "method": [self.method] * J,
                "wall_time": [self.wall_time] * J,
            }
        )
