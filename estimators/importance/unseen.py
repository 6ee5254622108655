"""Integrands never observed in a final sample: what an importance sample that missed a rare event
can honestly report.

A sample on which phi_j is 0 at every point gives the estimate 0 with a sample variance of 0; the
stderr of 0 is not supported by the sample (a rare event that was never seen). Such expectations
are reported with stderr NaN and the exact binomial upper bound for zero events in the effective
sample size of the importance weights (:func:`~estimators.importance.results.zero_hit_upper_bound`),
with a ``RuntimeWarning`` that names them. Internal module.
"""
from __future__ import annotations

import math
import warnings

import torch

from .results import zero_hit_upper_bound

__all__ = ["WeightTally", "flag_unseen"]


class WeightTally:
    """Running per-expectation counts over a final sample: points where the summand's integrand is
    nonzero, and log sum w, log sum w^2 of the importance weights (for the Kish ESS)."""

    def __init__(self):
        self.nonzero: torch.Tensor | None = None
        self.log_s1: torch.Tensor | None = None
        self.log_s2: torch.Tensor | None = None

    def add(self, y: torch.Tensor, log_w: torch.Tensor) -> None:
        """y (n, J) the integrands (0 outside the supports), log_w (n, J) or (n, 1) log f_j / q."""
        nz = (y != 0).sum(0).cpu()
        lw = log_w.expand_as(y)
        s1, s2 = torch.logsumexp(lw, 0).cpu(), torch.logsumexp(2 * lw, 0).cpu()
        if self.nonzero is None:
            self.nonzero, self.log_s1, self.log_s2 = nz, s1, s2
        else:
            self.nonzero = self.nonzero + nz
            self.log_s1, self.log_s2 = torch.logaddexp(self.log_s1, s1), torch.logaddexp(self.log_s2, s2)

    @property
    def ess(self) -> torch.Tensor:
        """(J,) Kish effective sample size ``(sum w)^2 / sum w^2``."""
        return torch.exp(2 * self.log_s1 - self.log_s2)


def flag_unseen(est: torch.Tensor, se: torch.Tensor, tally: WeightTally, n_final: int, level: float,
                stacklevel: int = 3) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Replace the stderr of 0 of the expectations whose integrand was 0 at every final point (and
    whose estimate is 0) by NaN and warn; returns (stderr, unseen_ess or None)."""
    if tally.nonzero is None:
        return se, None
    unseen = (tally.nonzero == 0) & (est.cpu() == 0) & (se.cpu() == 0)
    if not bool(unseen.any()):
        return se, None
    ess = torch.where(unseen, tally.ess, torch.full_like(tally.ess, math.nan))
    se = torch.where(unseen.to(se.device), torch.full_like(se, math.nan), se)
    idx = torch.nonzero(unseen)[:, 0].tolist()
    ub = zero_hit_upper_bound(ess[idx], level)
    shown = ", ".join(f"{j}: < {float(u):.3g}" for j, u in zip(idx[:5], ub[:5]))
    warnings.warn(
        f"expectation(s) {idx[:10]}: phi_j was 0 at every one of the {n_final} points of the final "
        "sample (a rare event never observed): estimate 0 with stderr NaN, not 0; upper "
        f"{level:.0%} confidence bounds from the effective sample size (the rule of three) {shown}; "
        "for rare-event probabilities use cross_entropy_rare_event",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return se, ess
