"""Sobol' indices by pick-freeze: aISCV, i.i.d. Saltelli/Jansen, and scipy's randomised QMC.

With U = (A, B) in R^{2d} (independent standard normals, mapped to the inputs by
x_i = F_i^{-1}(Phi(u_i))), Y_A = g(A), Y_B = g(B) and Y_i = g(A with column i from B), the
2d + 1 expectations

    V_i  = E[Y_B (Y_i - Y_A)]          (Saltelli et al. 2010, first-order numerator)
    VT_i = E[(Y_A - Y_i)^2] / 2        (Jansen 1999, total numerator)
    V    = E[(Y_A - Y_B)^2] / 2        (output variance)

give S_i = V_i / V and ST_i = VT_i / V; each point costs d + 2 model calls. Demange-Chryst, Bachoc &
Morio (Sec. 4.1) estimate such pick-freeze expectations together with aISCV on U; we use the
Saltelli/Jansen numerators (shift-invariant, lower variance than the plain product form) on the
same U. Standard errors of the ratios by the delta method from the estimates' covariance.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats

from genstat.mc import estimate as mc_estimate

from .aiscv import aiscv, check_generator, draw_seed
from .results import interval

__all__ = ["SobolResult", "sobol_indices", "target_sobol_indices"]

D = torch.distributions


@dataclass(frozen=True, slots=True)
class SobolResult:
    """First-order and total Sobol' indices with standard errors.

    Attributes
    ----------
    first_order, total : Tensor, shape (d,)
        S_i and ST_i (NaN when the output variance is 0: the indices are then undefined).
    first_order_stderr, total_stderr : Tensor, shape (d,)
        Their standard errors (delta method; across randomisations for ``method="qmc"``).
    variance, variance_stderr : float
        The output variance V (of the indicator for target indices) and its standard error.
    n_calls : int
        Model evaluations spent.
    method : str
    wall_time : float
    level : float
    names : tuple of str, optional
    probability, probability_stderr : float, optional
        P(g(X) > t) for :func:`target_sobol_indices`.
    df : int, optional
        Degrees of freedom of the standard errors when they come from R randomisations
        (``method="qmc"`` or ``final="rqmc"``: R - 1); intervals then use Student's t. None: normal.
    """

    first_order: torch.Tensor
    total: torch.Tensor
    first_order_stderr: torch.Tensor
    total_stderr: torch.Tensor
    variance: float
    variance_stderr: float
    n_calls: int
    method: str
    wall_time: float = 0.0
    level: float = 0.95
    names: tuple[str, ...] | None = field(default=None)
    probability: float | None = None
    probability_stderr: float | None = None
    df: int | None = None

    def confidence_interval(self, level: float | None = None):
        """``((S_low, S_high), (ST_low, ST_high))`` at ``level``: normal intervals, or Student's t
        with ``self.df`` degrees of freedom when the stderr comes from few randomisations."""
        lv = self.level if level is None else level
        return (interval(self.first_order, self.first_order_stderr, lv, self.df),
                interval(self.total, self.total_stderr, lv, self.df))

    def to_frame(self, level: float | None = None) -> pd.DataFrame:
        """Tidy table: one row per (input, index kind), with the CI, its level and ``df``."""
        (slo, shi), (tlo, thi) = self.confidence_interval(level)
        lv = self.level if level is None else level
        d = self.first_order.numel()
        names = list(self.names) if self.names is not None else [f"x{i + 1}" for i in range(d)]
        rows = []
        for kind, est, se, lo, hi in (("first_order", self.first_order, self.first_order_stderr, slo, shi),
                                      ("total", self.total, self.total_stderr, tlo, thi)):
            for i in range(d):
                rows.append({"input": names[i], "index": kind, "estimate": float(est[i]), "stderr": float(se[i]),
                             "ci_low": float(lo[i]), "ci_high": float(hi[i]), "level": lv, "df": self.df,
                             "n_calls": self.n_calls, "method": self.method, "wall_time": self.wall_time})
        return pd.DataFrame(rows)


def _as_independent(m: D.Distribution, where: str) -> D.Distribution:
    """``m`` as independent univariate marginals: event_shape () and batch_shape () or (k,).

    ``Independent`` is unwrapped; a ``MultivariateNormal`` (however parametrised) with a diagonal
    covariance is the product of its Normal marginals; a correlated one is refused (the
    pick-freeze identities below need independent inputs).
    """
    if isinstance(m, D.Independent) and m.reinterpreted_batch_ndims == 1:
        m = m.base_dist
    if isinstance(m, D.MultivariateNormal) and m.batch_shape == ():
        cov = m.covariance_matrix
        var = torch.diagonal(cov)
        off = (cov - torch.diag(var)).abs().max()
        if float(off) > 0:
            raise ValueError(
                f"{where} is a MultivariateNormal with correlated coordinates (largest |off-diagonal "
                f"covariance| {float(off):.3g}); these Sobol' indices need independent inputs"
            )
        return D.Normal(m.loc, var.sqrt())
    if m.event_shape == () and len(m.batch_shape) <= 1:
        return m
    raise TypeError(
        f"{where} must be a univariate torch Distribution, one with independent coordinates "
        f"(batch_shape (k,), or Independent of it) or a MultivariateNormal with diagonal covariance, "
        f"got {m!r}"
    )


class _Marginals:
    """Independent marginals: maps standard normals (or uniforms) to inputs column by column."""

    def __init__(self, inputs):
        if isinstance(inputs, (list, tuple)) and len(inputs) > 0:
            for i, m in enumerate(inputs):
                if not isinstance(m, D.Distribution):
                    raise TypeError(f"inputs[{i}] must be a univariate torch Distribution, got {m!r}")
            self.parts = [_as_independent(m, f"inputs[{i}]") for i, m in enumerate(inputs)]
        elif isinstance(inputs, D.Distribution):
            try:
                part = _as_independent(inputs, "inputs")
            except TypeError:
                raise ValueError("inputs must be a list of d univariate distributions or a distribution with "
                                 f"independent coordinates (batch_shape (d,)), got {inputs!r}") from None
            if part.batch_shape == ():
                raise ValueError(f"inputs must have d >= 1 independent coordinates, got the scalar {inputs!r}: "
                                 "pass a list")
            self.parts = [part]
        else:
            raise TypeError(f"inputs must be a Distribution or a list of them, got {type(inputs).__name__}")
        # columns of each part: a scalar marginal is one, a batched one (k,) is k
        self.widths = [1 if m.batch_shape == () else int(m.batch_shape[0]) for m in self.parts]
        self.d = sum(self.widths)

    def _one(self, m: D.Distribution, u: torch.Tensor, normal: bool) -> torch.Tensor:
        if normal and isinstance(m, D.Normal):
            return m.loc.to(u.dtype) + m.scale.to(u.dtype) * u
        v = torch.special.ndtr(u) if normal else u
        tiny = torch.finfo(u.dtype).eps
        v = v.clamp(tiny, 1 - tiny)
        if isinstance(m, D.Uniform):
            return m.low.to(u.dtype) + (m.high - m.low).to(u.dtype) * v
        return m.icdf(v.to(m.mean.dtype)).to(u.dtype)

    def transform(self, u: torch.Tensor, normal: bool = True) -> torch.Tensor:
        """(n, d) inputs from (n, d) standard normals (``normal``) or uniforms."""
        cols, o = [], 0
        for m, w in zip(self.parts, self.widths):
            if m.batch_shape == ():
                cols.append(self._one(m, u[:, o], normal)[:, None])
            else:
                cols.append(self._one(m, u[:, o : o + w], normal))
            o += w
        return torch.cat(cols, 1)


def _check_budget(budget, d: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    if budget < 10 * (d + 2):
        raise ValueError(f"budget must be >= 10*(d+2) = {10 * (d + 2)} model calls, got {budget}")
    return budget // (d + 2)


class _Range:
    """Smallest and largest output seen (to tell a constant output from an estimated V = 0)."""

    def __init__(self):
        self.lo, self.hi = math.inf, -math.inf

    def update(self, y: torch.Tensor) -> None:
        if y.numel():
            self.lo = min(self.lo, float(y.min()))
            self.hi = max(self.hi, float(y.max()))

    @property
    def constant(self) -> bool:
        return self.lo == self.hi


def _pick_freeze(model: Callable, marg: _Marginals, d: int, indicator: Callable | None, seen: _Range):
    """phis(U) -> (n, 2d+1 [+1]): the Saltelli/Jansen integrands on U = (A, B) in R^{2d}."""

    def phis(u: torch.Tensor) -> torch.Tensor:
        n = u.shape[0]
        A, B = u[:, :d], u[:, d:]
        AB = A[None].repeat(d, 1, 1)
        idx = torch.arange(d)
        AB[idx, :, idx] = B.T
        pts = torch.cat([A, B, AB.reshape(d * n, d)], 0)
        y = model(marg.transform(pts))
        if not isinstance(y, torch.Tensor) or y.shape != (n * (d + 2),):
            raise ValueError(f"model must return shape ({n * (d + 2)},) for ({n * (d + 2)}, {d}) inputs, "
                             f"got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        y = y.to(torch.float64)
        if indicator is not None:
            y = indicator(y)
        seen.update(y)
        ya, yb, yi = y[:n], y[n : 2 * n], y[2 * n :].reshape(d, n).T
        cols = [yb[:, None] * (yi - ya[:, None]), 0.5 * (ya[:, None] - yi) ** 2, 0.5 * (ya - yb)[:, None] ** 2]
        if indicator is not None:
            cols.append(ya[:, None])
        return torch.cat(cols, 1)

    return phis


def _ratios(est: torch.Tensor, cov: torch.Tensor, d: int):
    V = est[2 * d]
    num = est[: 2 * d]
    r = num / V
    var = (torch.diagonal(cov)[: 2 * d] - 2 * r * cov[: 2 * d, 2 * d] + r**2 * cov[2 * d, 2 * d]) / V**2
    se = var.clamp_min(0).sqrt()
    return r[:d], r[d:], se[:d], se[d:]


def sobol_indices(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    budget: int,
    *,
    method: Literal["aiscv", "saltelli", "qmc"] = "aiscv",
    final: Literal["iid", "rqmc"] = "iid",
    n_randomizations: int = 8,
    names: list[str] | tuple[str, ...] | None = None,
    level: float = 0.95,
    generator: torch.Generator,
) -> SobolResult:
    """First-order and total Sobol' indices of ``model`` under independent ``inputs``.

    Parameters
    ----------
    model : callable
        ``model(x) -> (n,)`` for x of shape (n, d).
    inputs : list of Distribution or Distribution
        d independent univariate marginals: a list (of univariate distributions, or of blocks of
        independent coordinates as below), or one distribution with batch_shape (d,) (possibly
        wrapped in ``Independent``), or a ``MultivariateNormal`` with a diagonal covariance (a
        correlated one raises ``ValueError``). Each needs ``icdf`` unless Normal or Uniform.
    budget : int
        Model evaluations (d + 2 per pick-freeze point).
    method : {"aiscv", "saltelli", "qmc"}
        aISCV on the 2d + 1 pick-freeze expectations; the same expectations by i.i.d. Monte Carlo;
        or ``scipy.stats.sobol_indices`` (scrambled Sobol', Saltelli 2010 / Jansen) repeated over
        ``n_randomizations`` independent scramblings of ``2^k`` points each (the largest k that fits).
    final : {"iid", "rqmc"}
        For ``method="aiscv"``: the fresh final sample i.i.d. or by randomised QMC through g_alpha.
    n_randomizations : int
        R >= 2 randomisations for ``method="qmc"`` and ``final="rqmc"``; their stderr has R - 1
        degrees of freedom (``df``), and the intervals use Student's t.
    names : list of str, optional
        Names of the d inputs.
    level : float
        Default confidence level of the result.
    generator : torch.Generator
        Source of randomness (scipy's seeds are drawn from it).

    Returns
    -------
    SobolResult
        If the output variance is 0 (a constant model) the indices are undefined: they are NaN
        and a ``RuntimeWarning`` says so.

    References
    ----------
    Saltelli et al. (2010), Comput. Phys. Commun. 181, Table 2 (f) and (j); Demange-Chryst, Bachoc &
    Morio (2023), Sec. 4.1 (aISCV for pick-freeze expectations).

    Examples
    --------
    >>> import torch
    >>> from estimators.importance import sobol_indices, linear_gaussian
    >>> model, inputs, truth = linear_gaussian([1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    >>> r = sobol_indices(model, inputs, 4000, method="saltelli", generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.first_order[1] - 0.8) < 5 * r.first_order_stderr[1])
    True
    """
    return _sobol(model, inputs, budget, method=method, final=final, n_randomizations=n_randomizations,
                  names=names, level=level, generator=generator, indicator=None)


def _sobol(model, inputs, budget, *, method, final, n_randomizations, names, level, generator,
           indicator: Callable | None) -> SobolResult:
    """:func:`sobol_indices` of ``model``, or of ``indicator(model)`` (target indices)."""
    t0 = time.perf_counter()
    gen = check_generator(generator)
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    marg = _Marginals(inputs)
    d = marg.d
    n = _check_budget(budget, d)
    if names is not None and len(names) != d:
        raise ValueError(f"names must have length {d}, got {len(names)}")
    if method not in ("aiscv", "saltelli", "qmc"):
        raise ValueError(f"method must be 'aiscv', 'saltelli' or 'qmc', got {method!r}")
    seen = _Range()
    phis = _pick_freeze(model, marg, d, indicator, seen)
    prob = prob_se = df = None
    # a constant output makes every integrand 0 and the inner estimators warn about symptoms
    # (a "rare event", 0/0): hold their warnings back and say what happened instead
    caught: list = []
    degenerate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if method in ("aiscv", "saltelli"):
                if method == "aiscv":
                    u = D.Independent(D.Normal(torch.zeros(2 * d, dtype=torch.float64, device=gen.device),
                                               torch.ones(2 * d, dtype=torch.float64, device=gen.device)), 1)
                    r = aiscv(phis, u, n, weights="absolute", final=final, n_randomizations=n_randomizations,
                              generator=gen, allow_negative=True, level=level)
                    est, cov, used, df = r.estimate, r.covariance, r.n_samples, r.df
                else:
                    seed = draw_seed(gen)
                    r = mc_estimate(phis, lambda m, g, dev: torch.randn(m, 2 * d, generator=g, device=dev,
                                                                      dtype=torch.float64), n, seed=seed, level=level)
                    est, cov, used = r.estimate, r.covariance, r.n_samples
                s1, st, s1_se, st_se = _ratios(est, cov, d)
                V, V_se = float(est[2 * d]), float(cov[2 * d, 2 * d].clamp_min(0).sqrt())
                if indicator is not None:
                    prob, prob_se = float(est[2 * d + 1]), float(cov[2 * d + 1, 2 * d + 1].clamp_min(0).sqrt())
                calls = used * (d + 2)
            else:
                if not isinstance(n_randomizations, int) or n_randomizations < 2:
                    raise ValueError(f"n_randomizations must be an int >= 2, got {n_randomizations}")
                m = 2 ** int(math.floor(math.log2(max(n // n_randomizations, 1))))
                if m < 8:
                    raise ValueError(f"budget={budget} too small for {n_randomizations} QMC randomizations "
                                     "of >= 8 points")

                def func(x: np.ndarray) -> np.ndarray:
                    y = model(marg.transform(torch.as_tensor(x.T, dtype=torch.float64), normal=False))
                    y = y.to(torch.float64)
                    if indicator is not None:
                        y = indicator(y)
                    seen.update(y)
                    return y.cpu().numpy()[None]

                S, T = [], []
                for _ in range(n_randomizations):
                    seed = draw_seed(gen)
                    res = stats.sobol_indices(func=func, n=m, dists=[stats.uniform()] * d,
                                              rng=np.random.default_rng(seed))
                    S.append(np.ravel(res.first_order))
                    T.append(np.ravel(res.total_order))
                S, T = torch.as_tensor(np.array(S)), torch.as_tensor(np.array(T))
                R = n_randomizations
                s1, st = S.mean(0), T.mean(0)
                s1_se, st_se = S.std(0) / math.sqrt(R), T.std(0) / math.sqrt(R)
                V, V_se, calls, df = float("nan"), float("nan"), R * m * (d + 2), R - 1
                if seen.constant:
                    V, V_se = 0.0, 0.0
        degenerate = seen.constant or V == 0.0
    finally:
        if not degenerate:  # a sound run (or one that raised): its warnings go out as they were
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if degenerate:
        what = "the indicator 1{model(x) > threshold}" if indicator is not None else "the model output"
        how = (f"was constant (= {seen.lo:.6g}) at all {int(calls)} evaluations" if seen.constant
               else "took the same value on both halves of every final pick-freeze pair")
        warnings.warn(
            f"{what} {how}: the estimated output variance V is 0, so the Sobol' indices V_i / V are "
            "undefined and returned as NaN", RuntimeWarning, stacklevel=3,
        )
        s1, st, s1_se, st_se = (torch.full((d,), math.nan, dtype=torch.float64) for _ in range(4))
    label = method if method != "aiscv" or final == "iid" else "aiscv_rqmc"
    return SobolResult(
        first_order=s1.cpu(), total=st.cpu(), first_order_stderr=s1_se.cpu(), total_stderr=st_se.cpu(),
        variance=V, variance_stderr=V_se, n_calls=int(calls), method=label, wall_time=time.perf_counter() - t0,
        level=float(level), names=tuple(names) if names is not None else None, probability=prob,
        probability_stderr=prob_se, df=df,
    )


def target_sobol_indices(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    threshold: float,
    budget: int,
    *,
    method: Literal["aiscv", "saltelli", "qmc"] = "aiscv",
    final: Literal["iid", "rqmc"] = "iid",
    n_randomizations: int = 8,
    names: list[str] | tuple[str, ...] | None = None,
    level: float = 0.95,
    generator: torch.Generator,
) -> SobolResult:
    """Target Sobol' indices: the Sobol' indices of the failure indicator 1{model(X) > threshold}.

    The pick-freeze integrands are then products of indicators (the first-order ones signed), the
    output variance is p(1 - p) and ``probability`` estimates p = P(model(X) > threshold).
    aISCV has no multilevel CE step: p must be reachable by the initial sample
    (p >~ 10 / (0.1 * budget / (d + 2))). Arguments as in :func:`sobol_indices`; an indicator
    that is constant on the sample (p = 0 or 1 as far as seen) gives NaN indices with a
    ``RuntimeWarning``.

    References
    ----------
    Marrel & Chabridon (2021), "Statistical developments for target and conditional sensitivity
    analysis", Reliab. Eng. Syst. Saf. 214; Demange-Chryst, Bachoc & Morio (2023), Sec. 4.

    Examples
    --------
    >>> import torch
    >>> from estimators.importance import target_sobol_indices, linear_gaussian
    >>> model, inputs, _ = linear_gaussian([1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    >>> r = target_sobol_indices(model, inputs, 1.0, 8000, method="saltelli", generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.probability - 0.2398) < 5 * r.probability_stderr)
    True
    """
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold}")
    return _sobol(model, inputs, budget, method=method, final=final, n_randomizations=n_randomizations,
                  names=names, level=level, generator=generator, indicator=lambda y: (y > t).to(torch.float64))
