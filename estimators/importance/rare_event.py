"""Rare-event probabilities by multilevel (adaptive-threshold) cross-entropy importance sampling.

p = P(g(X) >= t) (or ``<=``) for X ~ f, with p far below 1 / budget. A Gaussian proposal fitted to
the event directly cannot be had: a sample from f never sees it. Rubinstein's multilevel
cross-entropy method walks there through intermediate events {g >= gamma_k}: at level k draw n
points from the current proposal q_k (q_0 = f), set gamma_k to the (1 - rho)-quantile of g among
them (capped at t), and refit q_{k+1} by weighted maximum likelihood on the elite points
{g >= gamma_k} with weights f / q_k (the cross-entropy projection of f 1{g >= gamma_k} onto the
family); stop when gamma_k reaches t. Each level multiplies the reached probability by about rho,
so about log(p) / log(rho) levels are needed. A fresh final sample from the last proposal (with a
defensive share of f) gives the unbiased estimate

    p_hat = (1/m) sum_i f(X_i) / q(X_i) 1{g(X_i) >= t},   X_i ~ q = (1 - delta) g_K + delta f,

and its plain i.i.d. standard error; all weights are computed in log space.

References
----------
Rubinstein (1997), "Optimization of computer simulation models with rare events", Eur. J. Oper.
Res. 99 (the multilevel algorithm); de Boer, Kroese, Mannor & Rubinstein (2005), "A tutorial on the
cross-entropy method", Ann. Oper. Res. 134, Sec. 3.1 (the CE method for rare-event simulation);
Hesterberg (1995), "Weighted average importance sampling and defensive mixture distributions",
Technometrics 37 (the defensive share).
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Literal

import torch

from genstat.mc import pareto_khat

from .aiscv import FrozenProposal, _ratio, check_generator
from .proposals import DEFAULT_COV_FLOOR, InputSet, draw, fit_cross_entropy, safe_log_prob
from .results import RareEventResult, zero_hit_upper_bound

__all__ = ["cross_entropy_rare_event"]

D = torch.distributions


class _Product(D.Distribution):
    """Independent univariate marginals (a list, entries with batch_shape () or (k,)) as one
    distribution with event_shape (d,)."""

    arg_constraints = {}
    support = D.constraints.real_vector
    has_rsample = False

    def __init__(self, parts: list):
        self.parts = parts
        self.widths = [1 if m.batch_shape == () else int(m.batch_shape[0]) for m in parts]
        super().__init__(torch.Size([]), torch.Size([sum(self.widths)]), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([m.mean.reshape(-1).to(torch.float64) for m in self.parts])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        out, o = 0.0, 0
        for m, w in zip(self.parts, self.widths):
            xs = x[..., o] if m.batch_shape == () else x[..., o : o + w]
            lp = safe_log_prob(m, xs.to(m.mean.dtype)).to(torch.float64)
            out = out + (lp if m.batch_shape == () else lp.sum(-1))
            o += w
        return out

    def sample_with(self, n: int, generator: torch.Generator) -> torch.Tensor:
        cols = []
        for m in self.parts:
            xm = draw(m, n, generator).to(torch.float64)
            cols.append(xm[:, None] if m.batch_shape == () else xm)
        return torch.cat(cols, 1)


def _joint(inputs) -> D.Distribution:
    """One distribution of X: a list of univariate marginals or a batch_shape (d,) one become their
    product; a Distribution with batch_shape () (e.g. ``MultivariateNormal``) is used as is."""
    if isinstance(inputs, (list, tuple)) and len(inputs) > 0:
        for i, m in enumerate(inputs):
            if not isinstance(m, D.Distribution) or m.event_shape != () or len(m.batch_shape) > 1:
                raise TypeError(
                    f"inputs[{i}] must be a univariate torch Distribution (event_shape (), batch_shape () "
                    f"or (k,)), got {m!r}"
                )
        return _Product(list(inputs))
    if isinstance(inputs, D.Distribution):
        if inputs.batch_shape == ():
            return inputs
        if len(inputs.batch_shape) == 1 and inputs.event_shape == ():
            return _Product([inputs])
        raise ValueError(
            "inputs must have batch_shape () (any event_shape () or (d,)) or be independent marginals "
            f"(batch_shape (d,), event_shape ()), got batch_shape {tuple(inputs.batch_shape)} and "
            f"event_shape {tuple(inputs.event_shape)}"
        )
    raise TypeError(
        f"inputs must be a torch Distribution or a non-empty list of univariate ones, got {type(inputs).__name__}"
    )


def _check_options(budget, alternative, n_per_level, rho, family, defensive, max_adaptive_fraction, batch_size,
                   d: int) -> tuple[int, int, int]:
    """The option checks of :func:`cross_entropy_rare_event`; returns (points per level, elite
    points per level, adaptation budget)."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if family not in ("gaussian", "mixture2"):
        raise ValueError(f"family must be 'gaussian' or 'mixture2', got {family!r}")
    if not 0.0 < float(rho) <= 0.5:
        raise ValueError(f"rho must be in (0, 0.5], got {rho}")
    if not 0.0 <= float(defensive) < 1.0:
        raise ValueError(f"defensive must be in [0, 1), got {defensive}")
    if not 0.0 < float(max_adaptive_fraction) < 1.0:
        raise ValueError(f"max_adaptive_fraction must be in (0, 1), got {max_adaptive_fraction}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
    n = budget // 10 if n_per_level is None else n_per_level
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_per_level must be None or an int >= 1, got {n_per_level!r}")
    n_elite = math.ceil(float(rho) * n)
    max_adapt = int(float(max_adaptive_fraction) * budget)
    if n_elite < d + 1 or n > max_adapt or budget - n < 2:
        raise ValueError(
            f"budget={budget} is too small: levels of n_per_level={n} points (rho * n_per_level = {n_elite} "
            f"elite points, need >= d + 1 = {d + 1}), one level within max_adaptive_fraction * budget = "
            f"{max_adapt}, and >= 2 points left for the final sample"
        )
    return n, n_elite, max_adapt


def _scores(g: Callable, x: torch.Tensor, logf: torch.Tensor, sign: float, batch_size: int | None,
            dtype: torch.dtype) -> torch.Tensor:
    """(n,) float64 ``sign * g(x)``, evaluated in batches; ``-inf`` (never in the event) where the
    input density is 0, and there ``g`` is not called (it may be undefined outside the support)."""
    inside = ~torch.isneginf(logf)
    s = torch.full_like(logf, -math.inf)
    xin = x[inside].to(dtype)
    m = xin.shape[0]
    step = m if batch_size is None else batch_size
    parts = []
    for a in range(0, m, max(step, 1)):
        xb = xin[a : a + step]
        y = g(xb)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"g must return a torch.Tensor, got {type(y).__name__}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (xb.shape[0],):
            raise ValueError(f"g must return shape ({xb.shape[0]},) for inputs of shape {tuple(xb.shape)}, "
                             f"got {tuple(y.shape)}")
        parts.append(y.to(torch.float64).to(s.device))
    if parts:
        y = torch.cat(parts)
        bad = torch.isnan(y)
        if bool(bad.any()):
            raise ValueError(f"g returned {int(bad.sum())} NaN value(s) where the input density is positive")
        s[inside] = sign * y
    return s


def _level(s: torch.Tensor, logw: torch.Tensor, target: float, n_elite: int):
    """One threshold step: gamma = min(target, (1 - rho)-quantile of s) and the cross-entropy
    weights ``f / q`` on the elite points ``s >= gamma`` (0 elsewhere), rescaled by their largest."""
    gamma = min(target, float(torch.topk(s, n_elite).values[-1]))
    elite = (s >= gamma) & ~torch.isneginf(logw)
    lw = torch.where(elite, logw, torch.full_like(logw, -math.inf))
    top = lw.max()
    v = torch.exp(lw - top) if bool(torch.isfinite(top)) else elite.to(torch.float64)
    return gamma, v


def _sample(prop: FrozenProposal | None, n: int, gen: torch.Generator, inp: InputSet):
    """n points from ``prop`` (the inputs when None) and their log f and log q, each (n,)."""
    x = inp.sample_mean(n, gen).to(torch.float64) if prop is None else prop.sample(n, gen, inp)
    logf = inp.log_prob(x.to(inp.dtype))[:, 0]
    logq = logf if prop is None else prop.log_prob(prop.log_components(x), logf)
    return x, logf, logq


def cross_entropy_rare_event(
    g: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    threshold: float,
    budget: int,
    *,
    alternative: Literal["greater", "less"] = "greater",
    n_per_level: int | None = None,
    rho: float = 0.1,
    family: Literal["gaussian", "mixture2"] = "gaussian",
    defensive: float = 0.1,
    max_adaptive_fraction: float = 0.7,
    cov_floor: float = DEFAULT_COV_FLOOR,
    batch_size: int | None = None,
    level: float = 0.95,
    generator: torch.Generator,
) -> RareEventResult:
    """Estimate a rare-event probability P(g(X) >= threshold) by multilevel cross-entropy IS.

    Parameters
    ----------
    g : callable
        Performance function ``g(x) -> (n,)`` for x of shape (n, d) (univariate inputs: (n, 1)),
        vectorised over the n points. It is not called where the input density is 0.
    inputs : Distribution or list of Distribution
        The law f of X: one distribution with batch_shape () (event shape () or (d,), e.g. a
        ``MultivariateNormal`` or an ``Independent``), independent marginals as one distribution
        with batch_shape (d,) and event_shape (), or a list of univariate distributions.
    threshold : float
        t, the target level of the event.
    budget : int
        Total calls of ``g`` (points): the levels and the final sample together.
    alternative : {"greater", "less"}
        The event {g(X) >= t} or {g(X) <= t}.
    n_per_level : int, optional
        Points per cross-entropy level (default ``budget // 10``).
    rho : float
        Elite fraction: each intermediate threshold is the (1 - rho)-quantile of g on its level.
    family : {"gaussian", "mixture2"}
        Proposal family of :mod:`~estimators.importance.proposals`: one Gaussian (weighted mean and
        covariance of the elite points) or a 2-component Gaussian mixture (weighted EM; for events
        with two separated failure regions).
    defensive : float
        Share delta of f in every proposal after the first, q = (1 - delta) g_k + delta f: the
        importance weights are then at most 1 / delta. Without it a Gaussian fitted to a thin
        failure region has lighter tails than f there, and f / q has infinite variance.
    max_adaptive_fraction : float
        At most this share of ``budget`` goes to the levels; the rest is the final sample. When the
        threshold is not reached within it, the final sample still gives an unbiased estimate
        from the last proposal, with a ``RuntimeWarning``.
    cov_floor : float
        Relative covariance floor of each fit (as in :func:`~estimators.importance.aiscv`).
    batch_size : int, optional
        Points per call of ``g`` (default: a whole level or the whole final sample at once).
    level : float
        Default confidence level of the result's intervals.
    generator : torch.Generator
        The only source of randomness.

    Returns
    -------
    RareEventResult
        ``estimate``, ``stderr`` (of the final sample), ``n_samples``, ``ess`` (Kish ESS of the
        final importance weights f / q), ``pareto_k`` (of the summands' tail), the intermediate
        ``thresholds`` and whether the target was ``reached``. When no final point falls in the
        event the estimate is 0, its stderr NaN, and ``confidence_interval`` gives
        ``(0, 1 - (1 - level)^(1 / ess))`` (the exact binomial bound for zero events in ``ess``
        draws from f; 3 / ess at 95%, the rule of three), with a ``RuntimeWarning``.

    Raises
    ------
    ValueError
        Bad options, a budget too small for one level and a final sample, g of the wrong shape or
        NaN, importance weights that overflow.

    References
    ----------
    Rubinstein (1997) (multilevel CE for rare events); de Boer, Kroese, Mannor & Rubinstein (2005),
    Sec. 3.1; Hesterberg (1995) (defensive mixtures).

    Examples
    --------
    >>> import math, torch
    >>> from scipy import stats
    >>> from estimators.importance import cross_entropy_rare_event
    >>> f = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    >>> t = math.sqrt(2) * stats.norm.isf(1e-5)  # P(X1 + X2 >= t) = 1e-5
    >>> r = cross_entropy_rare_event(lambda x: x.sum(1), f, t, 10_000, generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.estimate - 1e-5) < 5 * r.stderr), r.reached
    (True, True)
    """
    t0 = time.perf_counter()
    gen = check_generator(generator)
    if not callable(g):
        raise TypeError(f"g must be callable, got {type(g).__name__}")
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold}")
    inp = InputSet(_joint(inputs))
    n_level, n_elite, max_adapt = _check_options(budget, alternative, n_per_level, rho, family, defensive,
                                                 max_adaptive_fraction, batch_size, inp.d)
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    sign = 1.0 if alternative == "greater" else -1.0
    target = sign * t
    comps = 1 if family == "gaussian" else 2
    one = torch.ones(1, dtype=torch.float64, device=gen.device)

    prop: FrozenProposal | None = None
    thresholds: list[float] = []
    used, reached = 0, False
    while used + n_level <= max_adapt:
        x, logf, logq = _sample(prop, n_level, gen, inp)
        s = _scores(g, x, logf, sign, batch_size, inp.dtype)
        used += n_level
        gamma, v = _level(s, logf - logq, target, n_elite)
        fam = fit_cross_entropy(x, v[:, None], components=comps, cov_floor=cov_floor)
        prop = FrozenProposal(fam, one, 0 * one, float(defensive))
        thresholds.append(sign * gamma)
        if gamma >= target:
            reached = True
            break
    if not reached:
        warnings.warn(
            f"the cross-entropy levels did not reach the threshold {t:.6g} within max_adaptive_fraction * "
            f"budget = {max_adapt} calls ({len(thresholds)} levels of {n_level}, last intermediate threshold "
            f"{thresholds[-1]:.6g}); the final estimate is unbiased but may be poor: raise the budget or rho",
            RuntimeWarning, stacklevel=2,
        )

    # the fresh final sample from the last proposal
    n_final = budget - used
    x, logf, logq = _sample(prop, n_final, gen, inp)
    s = _scores(g, x, logf, sign, batch_size, inp.dtype)
    hit = s >= target
    logw = logf - logq
    y = torch.where(hit, _ratio(logf, logq, "importance weight"), torch.zeros_like(logf))
    est = y.mean()
    se = y.std() / math.sqrt(n_final)
    ess = torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0))
    n_hits = int(hit.sum())
    khat = pareto_khat(torch.where(hit, logw, torch.full_like(logw, -math.inf)).cpu())
    if n_hits == 0:
        se = torch.full_like(se, math.nan)
        ub = zero_hit_upper_bound(ess.cpu(), level)
        warnings.warn(
            f"no point of the final sample ({n_final} points) fell in the event: the estimate is 0 and its "
            f"stderr is NaN (not 0); upper {level:.0%} confidence bound {float(ub):.3g} (exact binomial "
            f"bound in the effective sample size {float(ess):.1f}, the rule of three)",
            RuntimeWarning, stacklevel=2,
        )
    return RareEventResult(
        estimate=est.cpu(), stderr=se.cpu(), n_samples=used + n_final, ess=ess.cpu(), n_adaptive=used,
        n_final=n_final, n_hits=n_hits, threshold=t, alternative=alternative, thresholds=tuple(thresholds),
        reached=reached, pareto_k=khat, method="cross_entropy", wall_time=time.perf_counter() - t0,
        level=float(level),
    )
