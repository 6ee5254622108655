"""Result type of the Monte Carlo engine."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from scipy import stats

__all__ = ["MCResult", "normal_interval"]


def normal_interval(
    estimate: torch.Tensor, stderr: torch.Tensor, level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-sided normal confidence interval ``estimate ± z_{(1+level)/2} · stderr``."""
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = float(stats.norm.ppf(0.5 + 0.5 * float(level)))
    return estimate - z * stderr, estimate + z * stderr


@dataclass(frozen=True, slots=True)
class MCResult:
    """A Monte Carlo estimate of one or several expectations.

    Attributes
    ----------
    estimate : Tensor, shape () or (k,)
        Estimates, float64 on CPU.
    stderr : Tensor, same shape
        Standard errors of the estimates.
    n_samples : int
        Number of samples drawn.
    ess : Tensor or None
        Kish effective sample size of the importance weights (None when unweighted).
    wall_time : float
        Seconds spent in :func:`genstat.mc.estimate`.
    covariance : Tensor, shape (k, k)
        Estimated covariance matrix of the estimator (``stderr**2`` on its diagonal).
    level : float
        The default confidence level.
    n_blocks : int
        Number of RNG blocks drawn.
    converged : bool or None
        With ``target_rse``: whether every relative standard error reached the target.
    names : tuple of str or None
        Component names (rows of :meth:`to_frame`).
    n_pilot : int
        With ``target_rse``: samples of the pilot stage that sized the run (not in the estimate).
    pareto_k : float or None
        Importance sampling: Pareto k-hat of the weights' right tail (Vehtari et al. 2024); above
        :attr:`khat_threshold` the estimate and its stderr are unreliable. None when unweighted.
    """

    estimate: torch.Tensor
    stderr: torch.Tensor
    n_samples: int
    ess: torch.Tensor | None = None
    wall_time: float = 0.0
    covariance: torch.Tensor | None = None
    level: float = 0.95
    n_blocks: int = 0
    converged: bool | None = None
    names: tuple[str, ...] | None = field(default=None)
    n_pilot: int = 0
    pareto_k: float | None = None

    @property
    def khat_threshold(self) -> float:
        """Reliability threshold ``min(1 - 1/log10(n), 0.7)`` for :attr:`pareto_k`."""
        from .diagnostics import khat_threshold

        return khat_threshold(self.n_samples)

    @property
    def rse(self) -> torch.Tensor:
        """Relative standard error ``stderr / |estimate|``."""
        return self.stderr / self.estimate.abs()

    def confidence_interval(self, level: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normal-approximation confidence interval at ``level`` (default: the result's level)."""
        return normal_interval(self.estimate, self.stderr, self.level if level is None else level)

    def to_frame(self, level: float | None = None) -> pd.DataFrame:
        """Tidy table, one row per component: estimate, stderr, CI bounds, n_samples, ess, wall_time."""
        lo, hi = self.confidence_interval(level)
        est = self.estimate.reshape(-1)
        k = est.numel()
        names = list(self.names) if self.names is not None else list(range(k))
        ess = self.ess.reshape(-1).expand(k).tolist() if self.ess is not None else [None] * k
        khat = [self.pareto_k] * k
        return pd.DataFrame(
            {
                "component": names,
                "estimate": est.tolist(),
                "stderr": self.stderr.reshape(-1).tolist(),
                "ci_low": lo.reshape(-1).tolist(),
                "ci_high": hi.reshape(-1).tolist(),
                "level": [self.level if level is None else level] * k,
                "n_samples": [self.n_samples] * k,
                "ess": ess,
                "pareto_k": khat,
                "wall_time": [self.wall_time] * k,
            }
        )
