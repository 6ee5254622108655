"""Batched fitting of generalized Gaussian distributions: maximum likelihood and kurtosis inversion.

Many groups (e.g. one per state, per ensemble member or per Monte Carlo replication) are fitted at
once: the data are a tensor whose ``dim`` axis holds the samples of each group, and every per-group
update is a vectorised torch operation, so 1000 groups cost a few passes over the data. The
maximum-likelihood engine is :mod:`._mle`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from genstat.mc import normal_interval

from ._mle import BETA_MAX, BETA_MIN, fit_peaked, fit_smooth, prepare
from .ggd import GeneralizedGaussian, ggd_excess_kurtosis

__all__ = ["GGDFitResult", "GGDFit", "fit_ggd", "ggd_fisher_information", "invert_ggd_kurtosis"]

_BETA_MIN, _BETA_MAX = BETA_MIN, BETA_MAX
#: groups whose kurtosis start (or smooth-path estimate) has beta at most this take the exact
#: location search of the peaked path (see :mod:`._mle`)
_PEAKED_BETA = 1.5


@dataclass(frozen=True, slots=True)
class GGDFitResult:
    """Per-group GGD estimates and their standard errors.

    Attributes
    ----------
    loc, scale, beta : Tensor, shape (groups...)
        Estimates of ``mu``, ``alpha``, ``beta`` (the input's batch shape with ``dim`` removed).
    loc_stderr, scale_stderr, beta_stderr : Tensor
        Asymptotic standard errors (inverse Fisher information for ``method="mle"``, the delta method on
        the sample second and fourth moments for ``method="kurtosis"``). ``loc_stderr`` is 0 when the
        location was fixed and NaN for ``beta <= 1/2``, where the location's Fisher information is infinite.
    n_samples : int
        Samples per group.
    method : str
    n_iter : int
        Iterations used (0 for the kurtosis method).
    converged : Tensor of bool
    """

    loc: torch.Tensor
    scale: torch.Tensor
    beta: torch.Tensor
    loc_stderr: torch.Tensor
    scale_stderr: torch.Tensor
    beta_stderr: torch.Tensor
    n_samples: int
    method: str
    n_iter: int
    converged: torch.Tensor

    def distribution(self) -> GeneralizedGaussian:
        """The fitted distributions as one batched :class:`GeneralizedGaussian`."""
        return GeneralizedGaussian(self.loc, self.scale, self.beta)

    def confidence_interval(self, level: float = 0.95) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Normal (Wald) intervals ``{"loc": (lo, hi), "scale": ..., "beta": ...}``."""
        return {name: normal_interval(getattr(self, name), getattr(self, f"{name}_stderr"), level)
                for name in ("loc", "scale", "beta")}

    def to_frame(self) -> pd.DataFrame:
        """One row per group: ``group, loc, loc_stderr, scale, scale_stderr, beta, beta_stderr, converged``."""
        cols = {"group": list(range(self.beta.numel()))}
        for name in ("loc", "scale", "beta"):
            cols[name] = getattr(self, name).detach().reshape(-1).double().cpu().numpy()
            cols[f"{name}_stderr"] = getattr(self, f"{name}_stderr").detach().reshape(-1).double().cpu().numpy()
        cols["converged"] = self.converged.reshape(-1).cpu().numpy()
        return pd.DataFrame(cols)


#: the name used in the issue text
GGDFit = GGDFitResult


def ggd_fisher_information(beta: torch.Tensor) -> torch.Tensor:
    """Per-observation Fisher information of ``(log alpha, log beta)``, shape ``beta.shape + (2, 2)``.

    With ``a = 1/beta`` and ``u = |z|^beta ~ Gamma(a, 1)``: ``I_aa = beta``,
    ``I_ab = -(1 + digamma(1 + a))``, ``I_bb = a(a+1)[digamma(a+2)^2 + trigamma(a+2)] - (a digamma(a+1))^2``.
    The location is orthogonal to both (the density is symmetric); its information is
    ``beta^2 Gamma(2 - a) / (alpha^2 Gamma(a))``, finite only for ``beta > 1/2``.

    Examples
    --------
    >>> ggd_fisher_information(torch.tensor(2.0, dtype=torch.float64))[0, 0]
    tensor(2., dtype=torch.float64)
    """
    a = 1 / beta
    psi1 = torch.special.digamma(a + 1)
    psi2 = torch.special.digamma(a + 2)
    tri2 = torch.special.polygamma(1, a + 2)
    i_aa = beta
    i_ab = -(1 + psi1)
    i_bb = a * (a + 1) * (psi2.pow(2) + tri2) - (a * psi1).pow(2)
    row0 = torch.stack([i_aa, i_ab], -1)
    row1 = torch.stack([i_ab, i_bb], -1)
    return torch.stack([row0, row1], -2)


def invert_ggd_kurtosis(kurtosis: torch.Tensor, *, n_bisect: int = 64) -> torch.Tensor:
    """Solve ``excess_kurtosis(beta) = kurtosis`` for ``beta`` (bisection; the map is decreasing).

    Values outside the range reachable on ``[0.05, 50]`` are clipped to the ends of that interval.

    Examples
    --------
    >>> invert_ggd_kurtosis(torch.tensor([3.0, 0.0], dtype=torch.float64))
    tensor([1.0000, 2.0000], dtype=torch.float64)
    """
    k = torch.as_tensor(kurtosis)
    lo = torch.full_like(k, math.log(_BETA_MIN))
    hi = torch.full_like(k, math.log(_BETA_MAX))
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        too_peaked = ggd_excess_kurtosis(mid.exp()) > k  # beta too small
        lo = torch.where(too_peaked, mid, lo)
        hi = torch.where(too_peaked, hi, mid)
    return (0.5 * (lo + hi)).exp()


def _check_input(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the samples)")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim must be in [{-x.ndim}, {x.ndim}), got {dim}")
    xm = x.movedim(dim, -1)
    if xm.shape[-1] < 4:
        raise ValueError(f"x needs at least 4 samples per group along dim {dim}, got {xm.shape[-1]}")
    # a finite sum proves every entry finite; only an overflowing sum needs the elementwise check
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    batch = tuple(xm.shape[:-1])
    return xm.reshape(-1, xm.shape[-1]), batch


def _kurtosis_stderr(m2, m4, beta, alpha, n):
    """Delta-method standard errors of (alpha, beta) from the covariance of (m2, m4)."""
    lg = torch.lgamma
    mom = {k: alpha.pow(k) * torch.exp(lg((k + 1) / beta) - lg(1 / beta)) for k in (2, 4, 6, 8)}
    v22 = mom[4] - mom[2] ** 2
    v44 = mom[8] - mom[4] ** 2
    v24 = mom[6] - mom[2] * mom[4]
    dg = torch.special.digamma
    kappa3 = ggd_excess_kurtosis(beta) + 3
    dkappa = -kappa3 / beta**2 * (5 * dg(5 / beta) + dg(1 / beta) - 6 * dg(3 / beta))
    hprime = 1 / dkappa
    db_dm2 = hprime * (-2 * m4 / m2**3)
    db_dm4 = hprime / m2**2
    c = -0.5 / beta**2 * (dg(1 / beta) - 3 * dg(3 / beta))
    dla_dm2 = 0.5 / m2 + c * db_dm2
    dla_dm4 = c * db_dm4
    var_b = (db_dm2**2 * v22 + 2 * db_dm2 * db_dm4 * v24 + db_dm4**2 * v44) / n
    var_la = (dla_dm2**2 * v22 + 2 * dla_dm2 * dla_dm4 * v24 + dla_dm4**2 * v44) / n
    return alpha * var_la.sqrt(), var_b.sqrt()


def fit_ggd(
    x: torch.Tensor,
    *,
    dim: int = -1,
    method: Literal["mle", "kurtosis"] = "mle",
    fix_loc: float | torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> GGDFitResult:
    r"""Fit ``GGD(loc, scale, beta)`` to every group of samples in ``x`` at once.

    ``method="mle"``: the joint maximum-likelihood estimate of ``(loc, scale, beta)`` (``beta`` in
    [0.05, 50]). The scale is profiled out (``alpha^beta = beta/n sum |x - mu|^beta``). Groups whose
    kurtosis start has ``beta > 1.5`` take joint Newton steps in ``(mu, log beta)`` from the mean,
    with backtracking. The others, where the likelihood in ``mu`` has a cusp at every data point
    (``beta <= 1``) or is close to piecewise linear, alternate Newton steps in ``log beta`` with an exact
    location search over the order statistics around the current location (the rest of the data
    entering through a Taylor expansion), from the median. Both stop when the next step would gain less
    than ``tol`` in log-likelihood (see :mod:`estimators.td._mle` and docs/td.md). Standard errors from
    the expected Fisher information (:func:`ggd_fisher_information`) at the estimates; for
    ``beta <= 1`` the location's is the median's (conservative: the likelihood is not regular there).
    ``method="kurtosis"``: ``beta`` solves ``excess_kurtosis(beta) = m4/m2^2 - 3``, ``alpha`` matches
    the variance, ``loc`` is the mean; standard errors by the delta method.

    Parameters
    ----------
    x : Tensor
        Samples; the axis ``dim`` holds each group's samples (at least 4), the others index groups.
    dim : int
        Sample axis (default last).
    method : {"mle", "kurtosis"}
    fix_loc : float or Tensor, optional
        A known location (scalar or one per group); then only ``scale`` and ``beta`` are fitted.
    max_iter : int
        Maximum iterations (passes over the data) of the MLE.
    tol : float
        Convergence tolerance: the log-likelihood gain (summed over a group's samples) below which a
        step ends the iteration. Every group's log-likelihood is then within ``~tol`` of its (local)
        maximum; the float32 passes put a floor of ``1e-13 n`` under it.

    Returns
    -------
    GGDFitResult
        Per-group ``loc``, ``scale``, ``beta`` and standard errors, in ``x``'s dtype and device.

    References
    ----------
    Kim et al. 2024 (arXiv 2408.02295), eq. (1); Varanasi & Aazhang, "Parametric generalized Gaussian
    density estimation", JASA 1989 (the profile likelihood and Fisher information).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = GeneralizedGaussian(0.0, 1.0, torch.tensor([0.5, 4.0], dtype=torch.float64)).sample((20000,), generator=g)
    >>> fit = fit_ggd(x, dim=0)
    >>> [round(v, 2) for v in fit.beta.tolist()]  # scipy.stats.gennorm.fit gives 3.82 on group 2 too
    [0.51, 3.82]
    """
    if method not in ("mle", "kurtosis"):
        raise ValueError(f"method must be 'mle' or 'kurtosis', got {method!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    flat, batch = _check_input(x, dim)
    G, n = flat.shape
    f64 = dict(dtype=torch.float64, device=x.device)
    if fix_loc is not None:
        loc0 = torch.as_tensor(fix_loc, **f64)
        if not torch.isfinite(loc0).all():
            raise ValueError(f"fix_loc must be finite, got {fix_loc!r}")
        try:
            loc0 = loc0.expand(batch).reshape(G).clone()
        except RuntimeError as exc:
            raise ValueError(f"fix_loc must broadcast to the group shape {batch}, got shape "
                             f"{tuple(loc0.shape)}") from exc
    else:
        loc0 = flat.mean(-1, dtype=torch.float64)
    xc, m2, m4 = prepare(flat, loc0)
    if torch.any(m2 <= 0):
        raise ValueError("x has a group whose samples are all equal (zero spread): the scale is 0")
    beta = invert_ggd_kurtosis(m4 / m2.pow(2) - 3)
    alpha = torch.exp(0.5 * (m2.log() + torch.lgamma(1 / beta) - torch.lgamma(3 / beta)))
    if method == "kurtosis":
        loc = loc0
        scale_se, beta_se = _kurtosis_stderr(m2, m4, beta, alpha, n)
        loc_se = torch.zeros_like(loc) if fix_loc is not None else (m2 / n).sqrt()
        n_iter, converged = 0, torch.ones(G, dtype=torch.bool, device=x.device)
    else:
        s0 = m2.sqrt()
        xc.mul_((1 / s0).to(xc.dtype)[:, None])
        peaked = (beta <= _PEAKED_BETA) if fix_loc is None else torch.zeros_like(beta, dtype=torch.bool)
        loc, alpha, beta_hat = loc0.clone(), torch.empty_like(beta), torch.empty_like(beta)
        converged = torch.zeros(G, dtype=torch.bool, device=x.device)
        n_iter = 0
        for fn in ("smooth", "peaked"):
            rows = ~peaked if fn == "smooth" else peaked
            if not rows.any():
                continue
            idx = rows.nonzero().flatten()
            every = idx.numel() == G
            if fn == "smooth":
                u, a_s, b_s, it, conv = fit_smooth(xc if every else xc.index_select(0, idx), beta[idx],
                                                   fix_loc is None, max_iter, tol)
                loc[idx], alpha[idx] = loc0[idx] + s0[idx] * u, s0[idx] * a_s
                if fix_loc is None:
                    # a noisy kurtosis start can send a peaked group here; Newton in the location is
                    # unreliable once the likelihood is close to piecewise linear in it: redo those
                    back = torch.zeros_like(peaked)
                    back[idx] = b_s <= _PEAKED_BETA
                    peaked = peaked | back
                    beta = torch.where(back, b_s.new_zeros(G).index_put((idx,), b_s), beta)
            else:
                sub = flat if every else flat.index_select(0, idx)
                loc[idx], alpha[idx], b_s, it, conv = fit_peaked(sub, loc0[idx], s0[idx], beta[idx], max_iter, tol)
            beta_hat[idx], converged[idx] = b_s, conv
            n_iter = max(n_iter, it)
        beta = beta_hat
        cov = torch.linalg.inv(ggd_fisher_information(beta)) / n
        scale_se = alpha * cov[:, 0, 0].sqrt()
        beta_se = beta * cov[:, 1, 1].sqrt()
        a = 1 / beta
        info_mu = torch.where(beta > 0.5, beta**2 * torch.exp(torch.lgamma((2 - a).clamp_min(1e-3))
                                                                 - torch.lgamma(a)) / alpha**2, torch.nan)
        # for beta <= 1 the location's likelihood has cusps and, near 1/2, unbounded information: the
        # asymptotic 1/(n I) is far too optimistic at any n we see. Report the median's standard error
        # alpha Gamma(1/beta) / (beta sqrt(n)) there, a conservative bound (the MLE is at least as efficient)
        se_median = alpha * torch.exp(torch.lgamma(a)) / (beta * math.sqrt(n))
        loc_se = torch.where(beta > 1, (1 / (n * info_mu)).sqrt(), se_median)
        if fix_loc is not None:
            loc_se = torch.zeros_like(loc)

    def out(v: torch.Tensor) -> torch.Tensor:
        return v.to(x.dtype).reshape(batch)

    return GGDFitResult(loc=out(loc), scale=out(alpha), beta=out(beta), loc_stderr=out(loc_se),
                        scale_stderr=out(scale_se), beta_stderr=out(beta_se), n_samples=n, method=method,
                        n_iter=n_iter, converged=converged.reshape(batch))
