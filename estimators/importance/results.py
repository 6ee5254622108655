"""Result types of :mod:`estimators.importance`."""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import pandas as pd
import torch
from scipy import stats

from genstat.mc import normal_interval

__all__ = ["AdaptationStep", "MultiExpectationResult", "RareEventResult", "zero_hit_upper_bound"]


def zero_hit_upper_bound(ess: torch.Tensor, level: float) -> torch.Tensor:
    """``1 - (1 - level)^(1 / ess)``: the exact one-sided binomial (Clopper-Pearson) upper bound on
    p after 0 events in ``ess`` independent draws (``-log(1 - level) / ess``, 3 / ess at 95%: the
    rule of three).

    For an importance sample the draws are counted by the Kish effective sample size of the
    weights f / q (exact when q = f; an approximation otherwise).

    Examples
    --------
    >>> round(float(zero_hit_upper_bound(torch.tensor(1000.0), 0.95)) * 1000, 3)
    2.991
    """
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ess = torch.as_tensor(ess, dtype=torch.float64)
    return -torch.expm1(math.log1p(-float(level)) / ess)


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
    unseen_ess : Tensor, shape (J,), optional
        For the expectations whose integrand was 0 at every point of the final sample (a rare
        event never observed; their estimate is 0 and their stderr NaN, not 0): the Kish effective
        sample size of their importance weights f_j / g_alpha there; NaN for the others. Their
        interval is ``(0, 1 - (1 - level)^(1 / ess))``, the exact binomial upper bound for zero
        events (an upper bound on I_j when 0 <= phi_j <= 1, an event's indicator; in general on
        P(phi_j(X) != 0)). None when every integrand was seen.
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
    unseen_ess: torch.Tensor | None = None

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
        stderr comes from few replicates (``final="rqmc"``). An expectation never observed in the
        final sample (``unseen_ess``) gets ``(0, upper bound)`` instead.
        """
        lv = self.level if level is None else level
        lo, hi = interval(self.estimate, self.stderr, lv, self.df)
        if self.unseen_ess is not None:
            unseen = ~torch.isnan(self.unseen_ess)
            ub = zero_hit_upper_bound(self.unseen_ess, lv)
            lo = torch.where(unseen, torch.zeros_like(lo), lo)
            hi = torch.where(unseen, ub, hi)
        return lo, hi

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


@dataclass(frozen=True, slots=True)
class RareEventResult:
    """An estimate of a rare-event probability p = P(g(X) >= t) (or ``<=``) by multilevel
    cross-entropy importance sampling.

    Attributes
    ----------
    estimate, stderr : Tensor, shape ()
        The estimate and its standard error, from the fresh final sample only (float64, CPU).
        When no final point fell in the event (``n_hits == 0``) the estimate is 0 and the stderr
        NaN: a zero stderr would claim a certainty the sample does not have.
    n_samples : int
        Total calls of ``g`` (levels + final sample).
    ess : Tensor, shape ()
        Kish effective sample size of the final importance weights f / q (all final points).
    n_adaptive, n_final : int
        Calls spent on the cross-entropy levels and on the final sample.
    n_hits : int
        Final points in the event.
    threshold : float
        The target level t.
    alternative : str
        ``"greater"`` (event g >= t) or ``"less"`` (g <= t).
    thresholds : tuple of float
        The intermediate thresholds gamma_0, gamma_1, ... of the levels (the last equals t when
        ``reached``).
    reached : bool
        Whether the levels reached t (otherwise the final proposal was fitted to a lower level).
    pareto_k : float
        Pareto k-hat of the summands' right tail (``genstat.mc.pareto_khat``; NaN with too few
        hits): above ~0.7 the stderr is not to be trusted.
    method : str
        ``"cross_entropy"``.
    wall_time : float
        Seconds.
    level : float
        Default confidence level.
    """

    estimate: torch.Tensor
    stderr: torch.Tensor
    n_samples: int
    ess: torch.Tensor
    n_adaptive: int
    n_final: int
    n_hits: int
    threshold: float
    alternative: str = "greater"
    thresholds: tuple[float, ...] = ()
    reached: bool = True
    pareto_k: float = math.nan
    method: str = "cross_entropy"
    wall_time: float = 0.0
    level: float = 0.95

    @property
    def n_levels(self) -> int:
        """Number of cross-entropy levels run."""
        return len(self.thresholds)

    @property
    def rse(self) -> torch.Tensor:
        """Relative standard error ``stderr / estimate``."""
        return self.stderr / self.estimate.abs()

    def upper_bound(self, level: float | None = None) -> torch.Tensor:
        """With no hit: the one-sided upper confidence bound ``1 - (1 - level)^(1 / ess)``
        (:func:`zero_hit_upper_bound`); NaN when the event was observed."""
        ub = zero_hit_upper_bound(self.ess, self.level if level is None else level)
        return ub if self.n_hits == 0 else torch.full_like(ub, math.nan)

    def confidence_interval(self, level: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``estimate ± z stderr`` (normal quantile), or ``(0, upper_bound(level))`` with no hit."""
        lv = self.level if level is None else level
        if self.n_hits == 0:
            return torch.zeros_like(self.estimate), self.upper_bound(lv)
        return normal_interval(self.estimate, self.stderr, lv)

    def to_frame(self, level: float | None = None) -> pd.DataFrame:
        """One row: estimate, stderr, CI, level, calls, levels, hits, ESS, Pareto k-hat, method."""
        lo, hi = self.confidence_interval(level)
        return pd.DataFrame(
            {
                "estimate": [float(self.estimate)],
                "stderr": [float(self.stderr)],
                "ci_low": [float(lo)],
                "ci_high": [float(hi)],
                "level": [self.level if level is None else level],
                "threshold": [self.threshold],
                "alternative": [self.alternative],
                "n_samples": [self.n_samples],
                "n_adaptive": [self.n_adaptive],
                "n_final": [self.n_final],
                "n_levels": [self.n_levels],
                "n_hits": [self.n_hits],
                "reached": [self.reached],
                "ess": [float(self.ess)],
                "pareto_k": [self.pareto_k],
                "method": [self.method],
                "wall_time": [self.wall_time],
            }
        )
