"""Baselines for many expectations at once: plain MC, separate adaptive IS, one reweighted mixture.

All take the same arguments as :func:`~estimators.importance.aiscv.aiscv` (``phis``, ``inputs``,
``budget``, ``generator``) and return a :class:`MultiExpectationResult`, so they can be compared
at equal numbers of calls of ``phis``.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Literal

import torch

from genstat.mc import estimate as mc_estimate

from .aiscv import aiscv, call_phis, check_generator, draw_seed
from .proposals import InputSet, draw
from .results import MultiExpectationResult

__all__ = ["mc_multi", "is_separate", "mixture_reweighting"]


def _budget(budget, minimum: int = 2) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    if budget < minimum:
        raise ValueError(f"budget must be >= {minimum}, got {budget}")
    return budget


def _pack(res, J: int, method: str, t0: float, names, level: float, n_per: int | None = None) -> MultiExpectationResult:
    n = res.n_samples * (J if n_per is not None else 1)
    return MultiExpectationResult(
        estimate=res.estimate.reshape(J), stderr=res.stderr.reshape(J), n_samples=n, n_adaptive=0, n_final=n,
        weights=torch.ones(J, dtype=torch.float64), covariance=res.covariance, method=method,
        wall_time=time.perf_counter() - t0, level=level, names=tuple(names) if names is not None else None,
    )


def mc_multi(
    phis: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    budget: int,
    *,
    generator: torch.Generator,
    names: list[str] | tuple[str, ...] | None = None,
    level: float = 0.95,
) -> MultiExpectationResult:
    """Plain Monte Carlo: one sample from a shared input, or ``budget // J`` points from each f_j.

    Parameters
    ----------
    phis : callable
        ``phis(x) -> (n, J)``.
    inputs : Distribution or list of Distribution
        As in :func:`aiscv`.
    budget : int
        Total calls of ``phis`` (points).
    generator : torch.Generator
        Source of the block seed.

    Returns
    -------
    MultiExpectationResult
        ``weights`` are all 1 (report ``sum(w * stderr**2)`` with your own w).

    Examples
    --------
    >>> import torch
    >>> from estimators.importance import mc_multi
    >>> f = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    >>> r = mc_multi(lambda x: x**2, f, 10_000, generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.estimate[0] - 1) < 5 * r.stderr[0])
    True
    """
    t0 = time.perf_counter()
    gen = check_generator(generator)
    inp = InputSet(inputs)
    _budget(budget)
    lift = (lambda x: x[..., None]) if inp.univariate else (lambda x: x)
    if inp.shared:
        res = mc_estimate(lambda x: call_phis(phis, x, None, True), lambda n, g, d: lift(draw(inp.dists[0], n, g)),
                          budget, seed=draw_seed(gen), device=gen.device, level=level)
        return _pack(res, res.estimate.numel(), "mc_multi", t0, names, level)
    J = inp.J
    per = budget // J
    if per < 2:
        raise ValueError(f"budget={budget} gives fewer than 2 points per input distribution (J={J})")

    def sampler(n, g, dev):
        if inp.kind == "batched":
            return lift(draw(inp.dists[0], n, g))  # (n, J, d)
        return torch.stack([lift(draw(dj, n, g)) for dj in inp.dists], 1)

    def fn(x):
        n, _, d = x.shape
        y = call_phis(phis, x.reshape(n * J, d), J, True).reshape(n, J, J)
        return torch.diagonal(y, dim1=1, dim2=2)

    res = mc_estimate(fn, sampler, per, seed=draw_seed(gen), device=gen.device, level=level)
    return _pack(res, J, "mc_multi", t0, names, level, n_per=per)


def mixture_reweighting(
    phis: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    budget: int,
    *,
    generator: torch.Generator,
    names: list[str] | tuple[str, ...] | None = None,
    level: float = 0.95,
) -> MultiExpectationResult:
    """One sample from the equal mixture fbar of the inputs, reweighted by f_j / fbar for each j.

    With one shared input this is plain Monte Carlo.

    Examples
    --------
    >>> import torch
    >>> from estimators.importance import mixture_reweighting
    >>> D = torch.distributions
    >>> f = [D.Normal(torch.tensor(m, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)) for m in (0.0, 1.0)]
    >>> r = mixture_reweighting(lambda x: torch.cat([x**2, x**2], 1), f, 20_000, generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.estimate[1] - 2) < 5 * r.stderr[1])
    True
    """
    t0 = time.perf_counter()
    gen = check_generator(generator)
    inp = InputSet(inputs)
    _budget(budget)

    def fn(x):
        lf = inp.log_prob(x)
        y = call_phis(phis, x, inp.J, True, lf)  # phi_j counts as 0 where f_j = 0
        return y * torch.exp(lf - inp.log_mean(x, lf)[:, None])

    res = mc_estimate(fn, lambda n, g, d: inp.sample_mean(n, g), budget, seed=draw_seed(gen), device=gen.device,
                      level=level)
    return _pack(res, res.estimate.numel(), "mixture_reweighting", t0, names, level)


def is_separate(
    phis: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    budget: int,
    *,
    family: Literal["gaussian", "mixture2"] = "gaussian",
    defensive: float = 0.1,
    generator: torch.Generator,
    names: list[str] | tuple[str, ...] | None = None,
    level: float = 0.95,
    **kwargs,
) -> MultiExpectationResult:
    """One adaptive (cross-entropy) importance sampler per expectation, ``budget // J`` calls each.

    Each run is :func:`aiscv` with a single expectation (so alpha = 1 and the control variate is
    void): adaptive CE importance sampling with the same stopping rule and a fresh final sample.
    ``defensive`` defaults to 0.1 here: with ``budget // J`` points per expectation the CE fits rest
    on a few dozen points and, undefended, can give heavy-tailed weights whose variance the batch
    estimate misses. Extra keyword arguments go to :func:`aiscv`.

    Examples
    --------
    >>> import torch
    >>> from estimators.importance import is_separate
    >>> f = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    >>> r = is_separate(lambda x: torch.cat([x**2, x**4], 1), f, 8000, generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.estimate[1] - 3) < 5 * r.stderr[1])
    True
    """
    t0 = time.perf_counter()
    gen = check_generator(generator)
    inp = InputSet(inputs)
    _budget(budget)
    if inp.shared:
        x0 = inp.sample_mean(2, gen)
        J = call_phis(phis, x0.to(inp.dtype), None, True).shape[1]
    else:
        J = inp.J
    per = budget // J
    ests, ses, unseen, n_ad = [], [], [], 0
    for j in range(J):
        if inp.shared:
            fj = inp.dists[0]
        elif inp.kind == "list":
            fj = inp.dists[j]
        else:
            fj = _batch_item(inp.dists[0], j)
        r = aiscv(lambda x, j=j: phis(x)[:, j : j + 1], fj, per, weights="absolute", family=family,
                  defensive=defensive, generator=gen, level=level, **kwargs)
        ests.append(r.estimate[0])
        df = r.df  # the same for every j (None, or n_randomizations - 1 with final="rqmc")
        ses.append(r.stderr[0])
        unseen.append(math.nan if r.unseen_ess is None else float(r.unseen_ess[0]))
        n_ad += r.n_adaptive
    est, se = torch.stack(ests), torch.stack(ses)
    unseen_ess = torch.tensor(unseen, dtype=torch.float64)  # integrands never seen in their final sample
    unseen_ess = None if bool(torch.isnan(unseen_ess).all()) else unseen_ess
    return MultiExpectationResult(
        estimate=est, stderr=se, n_samples=per * J, n_adaptive=n_ad, n_final=per * J - n_ad,
        weights=torch.ones(J, dtype=torch.float64), covariance=torch.diag(se**2), method="is_separate",
        wall_time=time.perf_counter() - t0, level=level, names=tuple(names) if names is not None else None,
        df=df, unseen_ess=unseen_ess,
    )


def _batch_item(dist: torch.distributions.Distribution, j: int) -> torch.distributions.Distribution:
    """The j-th member of a distribution with batch_shape (J,) (``item`` if it defines one)."""
    item = getattr(dist, "item", None)
    if callable(item):
        return item(j)
    raise TypeError(
        f"is_separate needs a list of inputs or a batched distribution with an item(j) method, "
        f"got {type(dist).__name__}"
    )
