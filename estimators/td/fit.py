"""Batched fitting of generalized Gaussian distributions: maximum likelihood and kurtosis inversion.

Many groups (e.g. one per state, per ensemble member or per Monte Carlo replication) are fitted at
once: the data are a tensor whose ``dim`` axis holds the samples of each group, and every per-group
update is a vectorised torch operation, so 1000 groups cost a few passes over the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from genstat.mc import normal_interval

from ._mle import fit_peaked, fit_smooth, prepare
from .ggd import GeneralizedGaussian, ggd_excess_kurtosis

__all__ = ["GGDFitResult", "GGDFit", "fit_ggd", "ggd_fisher_information", "invert_ggd_kurtosis"]

_BETA_MIN, _BETA_MAX = 0.05, 50.0
#: groups whose kurtosis start has beta below this use the sample median as location
_MEDIAN_BETA = 1.5


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


def _moment_fit(x: torch.Tensor, loc: torch.Tensor, buf: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Sample m2, m4 about ``loc``, kurtosis-inverted beta and alpha (float64, per group)."""
    d = torch.sub(x, loc.to(x.dtype).unsqueeze(-1), out=buf)
    m2 = _dot(d, d) / x.shape[-1]
    d.mul_(d)
    m4 = _dot(d, d) / x.shape[-1]
    if torch.any(m2 <= 0):
        raise ValueError("x has a group whose samples are all equal (zero spread): the scale is 0")
    beta = invert_ggd_kurtosis(m4 / m2.pow(2) - 3)
    alpha = torch.exp(0.5 * (m2.log() + torch.lgamma(1 / beta) - torch.lgamma(3 / beta)))
    return m2, m4, beta, alpha


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


def _row_blocks(rows: torch.Tensor, max_blocks: int = 16) -> list[tuple[int, int]] | None:
    """The True entries of a non-empty 1-d mask as ``[(start, stop), ...]``; None if more than ``max_blocks``."""
    idx = rows.nonzero().flatten()
    cut = idx[1:] != idx[:-1] + 1
    starts = torch.cat([idx[:1], idx[1:][cut]]).tolist()
    if len(starts) > max_blocks:
        return None
    stops = (torch.cat([idx[:-1][cut], idx[-1:]]) + 1).tolist()
    return list(zip(starts, stops))


def _row_median(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Lower medians (``Tensor.median``) of the rows of ``x`` where ``rows`` is True, float64.

    Rows that form a few contiguous blocks are read in place: a boolean-mask gather would copy them first.
    """
    blocks = _row_blocks(rows)
    if blocks is None:
        return x[rows].median(-1).values.double()
    return torch.cat([x[a:b].median(-1).values for a, b in blocks]).double()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products as one batched BLAS call (no elementwise temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1).double()


def _mle(x, loc, beta, loc_fixed: torch.Tensor, max_iter: int, tol: float, e: torch.Tensor):
    """Fisher scoring on the profile likelihood of ``log beta``, with Fisher-scoring location steps.

    The location's score ``sum sign(d)|d|^(beta-1) = sum e/d`` reuses ``e = |d|^beta`` of the beta
    step, so the data are only re-logged when a location's score exceeds two standard deviations.
    All elementwise work goes into preallocated buffers (``e`` is passed in, ``L`` and ``D`` made here).
    """
    G, n = x.shape
    dtype = x.dtype
    floor = torch.finfo(dtype).tiny ** 0.25
    eps = torch.finfo(dtype).eps
    slack = 100 * eps  # rounding noise of the profile likelihood
    t = beta.log()  # log beta, float64 per group
    best_g = torch.full((G,), -math.inf, dtype=torch.float64, device=x.device)
    prev_t = t.clone()
    converged = torch.zeros(G, dtype=torch.bool, device=x.device)
    loc_done = loc_fixed.clone()
    beta_done = torch.zeros(G, dtype=torch.bool, device=x.device)
    thr = torch.zeros(G, dtype=torch.float64, device=x.device)
    L = torch.empty_like(x)
    # 1/d only for the rows whose location is free, in a few contiguous blocks when they form them
    free = ~loc_fixed
    blocks = _row_blocks(free) if torch.any(free) else []
    if blocks is None:
        blocks = [(0, G)]
    offs = [0]
    for a, b_ in blocks:
        offs.append(offs[-1] + b_ - a)
    D = x.new_empty((offs[-1], n)) if blocks else None
    stale, it = True, 0
    mu_L = loc.clone()
    b_fin = torch.ones(G, dtype=torch.float64, device=x.device)
    S_fin = torch.ones(G, dtype=torch.float64, device=x.device)
    S = S1 = torch.zeros(G, dtype=torch.float64, device=x.device)
    prev_step = torch.full((G,), math.nan, dtype=torch.float64, device=x.device)  # no contraction seen yet
    for it in range(1, max_iter + 1):
        if stale:
            moved = loc != mu_L
            best_g = torch.where(moved, -math.inf, best_g)  # the profile changed with the location
            beta_done &= ~moved
            mu_L = loc.clone()
            torch.sub(x, loc.to(dtype).unsqueeze(-1), out=e)  # e holds d for now
            if D is not None:
                for (a, b_), o in zip(blocks, offs):
                    torch.reciprocal(e[a:b_], out=D[o:o + b_ - a])
                D.clamp_(-1 / floor, 1 / floor)
            torch.abs(e, out=L).clamp_(min=floor).log_()
            stale = False
        b = t.exp()
        # evaluate only the groups still moving (gathered when they are a minority); the others keep
        # their sums: they are converged and take no step
        pending = ~(beta_done & loc_done)
        n_pending = int(pending.sum())
        bd = b.to(dtype).unsqueeze(-1)
        if it == 1 or 2 * n_pending > G:
            evaluated = torch.ones_like(pending)
            torch.mul(L, bd, out=e).exp_()  # e = |d|^beta
            S = e.sum(-1).double()
            S1 = _dot(e, L)
        else:
            evaluated = pending
            idx = pending.nonzero().flatten()
            Lp = L.index_select(0, idx)
            ep = Lp.mul(bd[idx]).exp_()
            S = S.index_put((idx,), ep.sum(-1).double())
            S1 = S1.index_put((idx,), _dot(ep, Lp))
            if not torch.all(loc_done):
                e.index_copy_(0, idx, ep)  # the location score reads e
        A = torch.log(b * S / n)
        g = torch.log(b) - torch.lgamma(1 / b) - 1 / b - A / b  # profile log-likelihood / n (+ const)
        g = torch.where(evaluated, g, best_g)
        # backtrack where the last step lowered the profile likelihood (free: S was needed anyway)
        worse = evaluated & (g < best_g - slack * best_g.abs())
        if torch.any(worse):
            # a step already below the tolerance that still looks worse is rounding noise: stop there
            stuck = worse & ((t - prev_t).abs() < thr)
            beta_done |= stuck
            t = torch.where(stuck, prev_t, torch.where(worse, 0.5 * (t + prev_t), t))
            converged = beta_done & loc_done
            if torch.all(converged):
                break
            continue
        best_g = g
        b_fin = torch.where(evaluated, b, b_fin)
        S_fin = torch.where(evaluated, S, S_fin)
        A1 = 1 / b + S1 / S
        psi = torch.special.digamma(1 / b)
        gt = b * (1 / b + psi / b**2 + 1 / b**2 - A1 / b + A / b**2)  # d(profile)/d(log beta)
        # Fisher scoring: the expected curvature of the profile in log beta is the efficient information
        # I_bb - I_ab^2 / I_aa (no second sums over the data; the rate of convergence is O(1/sqrt(n)))
        info = ggd_fisher_information(b)
        i_eff = info[:, 1, 1] - info[:, 0, 1] ** 2 / info[:, 0, 0]
        step = torch.where(beta_done, 0.0, (gt / i_eff).clamp(-1.0, 1.0))
        prev_t = t
        t = (t + step).clamp(math.log(_BETA_MIN), math.log(_BETA_MAX))
        # stop once the error left after this step is below tol or 1e-2 of the standard error of log beta,
        # and *take* that last step without evaluating the profile there. Scoring contracts the error by
        # a factor rho = O(1/sqrt(n)) per step, so the error left is about rho |step| / (1 - rho), rho the
        # observed ratio of successive steps (or the step itself below the threshold, before a ratio
        # is seen); the 0.2 below leaves a margin for the noise in that ratio (checked against the MLE
        # iterated to 1e-7 standard errors: within 1e-2 of one for n = 200 ... 1e4). float32 sums carry
        # rounding noise of ~1e3 eps in the score, a small fraction of a standard error for any n
        thr = torch.clamp(1e-2 * (1 / (n * i_eff)).sqrt(), min=max(tol, 1000 * eps))
        rho = (step / prev_step).abs().clamp(max=0.5)
        prev_step = torch.where(beta_done, prev_step, step)
        newly = ~beta_done & ((step.abs() < thr) | ((step.abs() < 20 * thr) & (rho * step.abs() < 0.2 * thr)))
        if torch.any(newly):
            # S at the stepped beta to first order: d log S / d log beta = b S1 / S (error O(step^2))
            b_new = t.exp()
            S_new = S * torch.exp((t - prev_t) * b * S1 / S)
            b_fin = torch.where(newly, b_new, b_fin)
            S_fin = torch.where(newly, S_new, S_fin)
        beta_done |= newly
        if not torch.all(loc_done):
            # Fisher scoring for mu at the pre-step beta: the score is (b/alpha^b) sum sign(d)|d|^(b-1)
            # = (b/alpha^b) sum e/d, the information n b^2 Gamma(2-1/b) / (alpha^2 Gamma(1/b)) (b > 1/2)
            alpha = (b * S / n).pow(1 / b)
            edd = torch.zeros(G, dtype=torch.float64, device=x.device)  # sum e/d on the free rows
            for (a, b_), o in zip(blocks, offs):
                edd[a:b_] = _dot(e[a:b_], D[o:o + b_ - a])
            score = b / alpha**b * edd
            info_mu = b**2 * torch.exp(torch.lgamma((2 - 1 / b).clamp_min(1e-3)) - torch.lgamma(1 / b)) / alpha**2
            dmu = score / (n * info_mu)
            z = score / (n * info_mu).sqrt()  # the score in standard deviations
            # Within two standard deviations the scoring step is taken without re-logging the data:
            # a one-step estimator from a root-n consistent start is efficient, and alpha and beta,
            # fitted at mu_L, differ from their values at the new location by O(1/n) (mu is orthogonal).
            active = ~loc_done
            loc = torch.where(active, mu_L + dmu, loc)
            far = active & (z.abs() > 2.0) & (dmu.abs() > tol * alpha)
            loc_done |= active & ~far
            stale = bool(torch.any(far))
        converged = beta_done & loc_done
        if torch.all(converged):
            break
    # report beta after the accepted final step (or where the profile was last evaluated and accepted)
    # and alpha from the matching sums (first-order extrapolated to that step): no extra pass over the data
    alpha = (b_fin * S_fin / n).pow(1 / b_fin)
    return loc, alpha, b_fin, it, converged


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

    ``method="mle"``: maximum likelihood. The scale is profiled out
    (``alpha^beta = beta/n sum |x - mu|^beta``); ``log beta`` takes Fisher-scoring steps on the profile
    log-likelihood (with backtracking), started from the kurtosis estimate; the location takes
    Fisher-scoring steps from the mean, except for groups whose kurtosis start has ``beta <= 1.5``,
    which use the sample median (the likelihood has cusps in ``mu`` for ``beta <= 1``; see docs/td.md).
    Standard errors from the expected Fisher information (:func:`ggd_fisher_information`) at the
    estimates (the median's asymptotic standard error where the median is used).
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
        Maximum iterations of the MLE.
    tol : float
        Floor of the convergence tolerance on ``log beta`` steps (which otherwise stop at 1% of the
        standard error of ``log beta``) and on location steps relative to the scale.

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
        peaked = (beta <= _MEDIAN_BETA) if fix_loc is None else torch.zeros_like(beta, dtype=torch.bool)
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
                    back[idx] = b_s <= _MEDIAN_BETA
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
