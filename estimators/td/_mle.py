"""The joint maximum-likelihood engine behind :func:`estimators.td.fit_ggd`.

With the scale profiled out (``alpha^beta = beta/n sum |x - mu|^beta``) the log-likelihood per
observation is ``g(mu, beta) = h(beta) - log(S(mu, beta)) / beta`` with ``S = sum |x - mu|^beta``.
Two regimes need different location updates:

* smooth groups (kurtosis start ``beta_0 > 1.5``): joint Newton steps in ``(mu, log beta)`` with the exact
  gradient and Hessian of ``g``, from sums over the data (:func:`_smooth_sums`), with backtracking;
* peaked groups (``beta_0 <= 1.5``): for ``beta <= 1`` the likelihood in ``mu`` has a cusp at every data
  point and its maximum is at one of them; near ``beta = 1`` it is close to piecewise linear. Their
  location is solved *exactly* on a window of order statistics around the current centre, with the
  rest of the data entering through a Taylor expansion in the location shift (:func:`_local_location`);
  ``log beta`` takes Newton steps on the profile at that location. The rounds alternate until neither moves.

Both stop when the log-likelihood gain predicted for the next step is below ``tol`` (total over the
group's samples); that last step is taken without another pass over the data. Every pass runs over
row chunks that stay in cache and works on ``(x - mu) / s0`` (``s0`` the sample standard deviation) so
that ``|d|^beta`` neither overflows nor underflows for any data scale.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__: list[str] = []

BETA_MIN, BETA_MAX = 0.05, 50.0
_CHUNK = 1 << 16  # elements per chunk of rows: a chunk's temporaries stay in the L2 cache
_F64 = torch.float64
#: elementwise work dtype of the passes over the data (sums are accumulated in float64 where noted)
_WORK = torch.float32
_TRACE = False
#: near set of the peaked path: the K order statistics around the centre, of which the central
#: M are the candidate locations (the far points enter through a Taylor expansion of order _TAYLOR)
_NEAR, _INNER, _TAYLOR = 256, 32, 6
#: coarse candidates beyond each edge of the window: every _STRIDE-th point, _COARSE of them
_STRIDE, _COARSE = 4, 16
#: at most this many Newton steps in log beta at the median before the location search starts
_PHASE_A = 1


def _block(n: int) -> int | None:
    """The largest divisor of ``n`` in [32, 128] (None if there is none)."""
    return next((b for b in range(128, 31, -1) if n % b == 0), None)


def _rowsum(a: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """Float64 row sums of a contiguous float32 (rows, n) tensor.

    ``exact=False``: torch's float32 sum (relative error ~1e-7; enough for the Newton steps, whose
    error it moves by ~1e-5 standard errors). ``exact=True``: float32 sums over ~100-column blocks,
    then float64 across blocks (relative error ~1e-8 of the summands' magnitude; used where signed sums
    with cancellation are compared, the far moments of the location search), ~2x the cost.
    """
    if not exact:
        return a.sum(-1).double()
    r, n = a.shape
    b = _block(n)
    if b is None:
        return a.sum(-1, dtype=_F64)
    return a.view(r, b, n // b).sum(1).sum(-1, dtype=_F64)


def _profile_derivatives(beta: torch.Tensor, n: int, s: torch.Tensor) -> dict[str, torch.Tensor]:
    """``g`` and its derivatives in ``t = log beta`` (and the scaled location ``u`` if ``s`` has 6 columns).

    ``s`` holds per-row sums ``S = sum e``, ``SL = sum e L``, ``SLL = sum e L^2`` and optionally
    ``P1 = sum e D``, ``Q1 = sum e L D``, ``P2 = sum e D^2``, with ``d = (x - mu)/s0``, ``e = |d|^beta``,
    ``L = log|d|``, ``D = 1/d``. ``g = h(beta) - log(S)/beta`` with
    ``h = log b - lgamma(1/b) - 1/b - (log b - log n)/b``.
    """
    b = beta
    S, SL, SLL = s[:, 0], s[:, 1], s[:, 2]
    lb, ln = torch.log(b), math.log(n)
    logS = torch.log(S)
    psi = torch.special.digamma(1 / b)
    tri = torch.special.polygamma(1, 1 / b)
    rL, rLL = SL / S, SLL / S
    g = lb - torch.lgamma(1 / b) - 1 / b - (lb - ln) / b - logS / b
    gb = 1 / b + psi / b**2 + (lb - ln + logS) / b**2 - rL / b
    h2 = -1 / b**2 - tri / b**4 - 2 * psi / b**3 + 1 / b**3 - 2 * (lb - ln) / b**3
    gbb = h2 - 2 * logS / b**3 + 2 * rL / b**2 - (rLL - rL**2) / b
    out = {"g": g, "logS": logS, "gt": b * gb, "gtt": b * b * gbb + b * gb}
    if s.shape[1] == 6:
        P1, Q1, P2 = s[:, 3], s[:, 4], s[:, 5]
        out["gu"] = P1 / S
        out["guu"] = -(b - 1) * P2 / S + b * (P1 / S) ** 2
        out["gut"] = b * (Q1 / S - P1 * SL / S**2)
    return out


def _expected_info(beta: torch.Tensor, S: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected information per observation of ``t = log beta`` (efficient, scale profiled out) and of
    the scaled location ``u`` (NaN for ``beta <= 1/2``): the fallback when the observed Hessian is not
    negative definite."""
    from .fit import ggd_fisher_information

    info = ggd_fisher_information(beta)
    i_t = info[..., 1, 1] - info[..., 0, 1] ** 2 / info[..., 0, 0]
    a = 1 / beta
    alpha_s = (beta * S / n).pow(a)
    i_u = beta**2 * torch.exp(torch.lgamma((2 - a).clamp_min(1e-3)) - torch.lgamma(a)) / alpha_s**2
    return i_t, torch.where(beta > 0.5, i_u, torch.nan)


def prepare(x: torch.Tensor, loc0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x - loc0`` as a float32 copy, with the per-row second and fourth moments about ``loc0`` (float64).

    The centring is done in ``x``'s dtype (exact enough for data far from the origin); the passes of the
    fits below run on this copy (float32 elementwise work is ~2.5x faster than float64 and, with the
    sums accumulated as noted, moves the estimates by far less than a standard error: see docs/td.md).
    """
    G, n = x.shape
    xc = torch.empty((G, n), dtype=_WORK, device=x.device)
    m2 = torch.empty(G, dtype=_F64, device=x.device)
    m4 = torch.empty(G, dtype=_F64, device=x.device)
    step = max(1, _CHUNK // n)
    for s in range(0, G, step):
        r = min(step, G - s)
        d = torch.sub(x[s:s + r], loc0[s:s + r, None].to(x.dtype))
        d2 = torch.square(d.double())  # float64 (d^4 of float32 data overflows beyond |d| ~ 1e9); a new tensor
        m2[s:s + r] = d2.sum(-1, dtype=_F64) / n
        m4[s:s + r] = d2.mul_(d2).sum(-1, dtype=_F64) / n
        xc[s:s + r] = d
    return xc, m2, m4


def _smooth_sums(xc: torch.Tensor, rows: torch.Tensor | None, u: torch.Tensor, beta: torch.Tensor,
                 with_mu: bool) -> torch.Tensor:
    """Sums (S, SL, SLL[, P1, Q1, P2]) of :func:`_profile_derivatives` at the scaled location ``u`` for
    the given rows (all if None) of the centred, scaled float32 data ``xc``."""
    n = xc.shape[1]
    R = xc.shape[0] if rows is None else rows.numel()
    out = torch.empty((R, 6 if with_mu else 3), dtype=_F64, device=xc.device)
    floor = torch.finfo(_WORK).tiny ** 0.25
    step = max(1, _CHUNK // n)
    uw, bw = u.to(_WORK)[:, None], beta.to(_WORK)[:, None]
    for s in range(0, R, step):
        r = min(step, R - s)
        xs = xc[s:s + r] if rows is None else xc.index_select(0, rows[s:s + r])
        d = torch.sub(xs, uw[s:s + r])
        L = d.abs().clamp_(min=floor).log_()
        e = torch.mul(L, bw[s:s + r]).exp_()
        t = torch.mul(e, L)
        o = out[s:s + r]
        o[:, 0] = _rowsum(e)
        o[:, 1] = _rowsum(t)
        o[:, 2] = _rowsum(t.mul_(L))
        if with_mu:
            D = d.reciprocal_().clamp_(-1 / floor, 1 / floor)
            torch.mul(e, D, out=t)
            o[:, 3] = _rowsum(t)
            o[:, 4] = _rowsum(L.mul_(t))
            o[:, 5] = _rowsum(t.mul_(D))
    return out


def _gain_tol(tol: float, n: int) -> float:
    """The stopping threshold on the log-likelihood gain predicted for a Newton step, which is then
    taken without another pass over the data.

    Newton's method converges quadratically: a step of ``s`` standard errors (gain ``s^2/2``) leaves an
    error of ~``c s^2 / sqrt(n)`` standard errors (``c`` the ratio of third to second derivatives of the
    log-likelihood per observation, O(1) here), i.e. a residual gain ~``2 c^2 gain^2 / n``. Below
    ``sqrt(n tol) / 10`` that residual is below ``tol`` (for ``c <= 3``). The floor ``1e-13 n`` is the
    resolution of the float32 passes (sums with relative error ~1e-7 give Newton steps that gain
    ~``1e-14 n`` by noise alone).
    """
    return max(tol, 1e-13 * n, math.sqrt(n * tol) / 10)


def _final_alpha(beta, logS, s0, n):
    """``alpha = s0 (beta S / n)^(1/beta)`` from the scaled ``log S``."""
    return s0 * torch.exp((torch.log(beta) + logS - math.log(n)) / beta)


def fit_smooth(xc: torch.Tensor, beta: torch.Tensor, loc_free: bool, max_iter: int, tol: float
               ) -> tuple[torch.Tensor, ...]:
    """Joint Newton in ``(u, log beta)`` (or ``log beta`` alone with ``loc_free=False``) for all rows of
    the centred, scaled data ``xc``, from ``u = 0``.

    Returns ``(u, alpha, beta, n_iter, converged)`` (float64 per row; ``u`` and ``alpha`` in the scaled units).
    """
    G, n = xc.shape
    dev = xc.device
    eps = torch.finfo(_WORK).eps
    t = beta.log()
    u = torch.zeros(G, dtype=_F64, device=dev)
    acc_u, acc_t = u.clone(), t.clone()
    acc_g = torch.full((G,), -math.inf, dtype=_F64, device=dev)
    alpha = torch.full((G,), math.nan, dtype=_F64, device=dev)
    converged = torch.zeros(G, dtype=torch.bool, device=dev)
    active = torch.ones(G, dtype=torch.bool, device=dev)
    t_lo, t_hi = math.log(BETA_MIN), math.log(BETA_MAX)
    ones = torch.ones(G, dtype=_F64, device=dev)
    it = 0
    for it in range(1, max_iter + 1):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        rows = None if idx.numel() == G else idx
        m, tt = u[idx], t[idx]
        b = tt.exp()
        sums = _smooth_sums(xc, rows, m, b, loc_free)
        dv = _profile_derivatives(b, n, sums)
        g = dv["g"]
        # backtrack where the last step lowered the likelihood (beyond the rounding noise of g)
        slack = 100 * eps * g.abs().clamp(min=1.0)
        worse = g < acc_g[idx] - slack
        tiny = ((m - acc_u[idx]).abs() < 1e-12) & ((tt - acc_t[idx]).abs() < 1e-12)
        stuck = worse & tiny  # the step is at rounding level: the accepted point is the optimum
        back = worse & ~tiny
        ok = ~worse
        u[idx] = torch.where(back, 0.5 * (m + acc_u[idx]), m)
        t[idx] = torch.where(back, 0.5 * (tt + acc_t[idx]), tt)
        if stuck.any():
            si = idx[stuck]  # alpha of the accepted point was recorded when it was accepted
            u[si], t[si] = acc_u[si], acc_t[si]
            converged[si] = True
            active[si] = False
        if not ok.any():
            continue
        gt, gtt = dv["gt"], dv["gtt"]
        i_t, i_u = _expected_info(b, sums[:, 0], n)
        if loc_free:
            gu, guu, gut = dv["gu"], dv["guu"], dv["gut"]
            det = guu * gtt - gut**2
            newton = (guu < 0) & (gtt < 0) & (det > 0)
            du = torch.where(newton, -(gtt * gu - gut * gt) / det, gu / i_u)
            dt = torch.where(newton, -(guu * gt - gut * gu) / det, gt / i_t)
            du = torch.nan_to_num(du, nan=0.0)
        else:
            newton = gtt < 0
            gu = du = torch.zeros_like(gt)
            dt = torch.where(newton, -gt / gtt, gt / i_t)
        # at a bound of beta with the step pointing out: optimise the location alone (projected Newton)
        pinned = ((tt >= t_hi - 1e-12) & (dt > 0)) | ((tt <= t_lo + 1e-12) & (dt < 0))
        if loc_free and bool(pinned.any()):
            gu, guu = dv["gu"], dv["guu"]
            du = torch.where(pinned, torch.where(guu < 0, -gu / guu, gu / i_u).nan_to_num(0.0), du)
            dt = torch.where(pinned, 0.0, dt)
            gt = torch.where(pinned, 0.0, gt)
        elif bool(pinned.any()):
            dt = torch.where(pinned, 0.0, dt)
            gt = torch.where(pinned, 0.0, gt)
        # shorten the step as a whole (keeping its direction) to at most 1 in u and t and inside the bounds
        shrink = 1 / torch.maximum(torch.maximum(du.abs(), dt.abs()), torch.ones_like(dt))
        room = torch.where(dt > 0, t_hi - tt, tt - t_lo) / dt.abs().clamp_min(1e-300)
        shrink = torch.minimum(shrink, room.clamp(0.0, 1.0))
        du, dt = du * shrink, dt * shrink
        gain = 0.5 * n * (gu * du + gt * dt)
        # Newton's quadratic convergence (which lets the relaxed threshold stop a step early) needs a
        # smooth location Hessian, sum |d|^(beta - 2): beta >= 2; below, the strict threshold
        thr = torch.where(newton & ~pinned & (b >= 2), _gain_tol(tol, n), max(tol, 1e-13 * n))
        done = ok & (gain.abs() < thr)
        # first-order update of log S for the final step (no further pass over the data)
        db = b * torch.expm1(dt)
        dlogS = ((-b * sums[:, 3] * du) if loc_free else 0.0) + sums[:, 1] * db
        dlogS = dlogS / sums[:, 0]
        alpha_now = _final_alpha(b, dv["logS"], ones[idx], n)
        oi = idx[ok]
        acc_u[oi], acc_t[oi], acc_g[oi] = m[ok], tt[ok], g[ok]
        alpha[oi] = alpha_now[ok]  # the accepted point's alpha (used if a later step is stuck)
        u[oi] = (m + du)[ok]
        t[oi] = (tt + dt)[ok]
        di = idx[done]
        alpha[di] = _final_alpha((tt + dt).exp(), dv["logS"] + dlogS, ones[idx], n)[done]
        converged[di] = True
        active[di] = False
    return u, alpha, t.exp(), it, converged


# ------------------------------------------------------------------------------------------------ peaked
def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` sorted ascending (numpy's vectorised sort on the CPU is ~10x torch's)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return torch.sort(x, -1).values


def _peaked_sums(xs: torch.Tensor, rows: torch.Tensor | None, u: torch.Tensor, beta: torch.Tensor,
                 near: torch.Tensor) -> torch.Tensor:
    """Per row of the sorted, centred, scaled float32 data ``xs`` at the scaled location ``u``: ``S, SL,
    SLL`` over all points and the far moments ``M_k = sum_far e D^k`` (``k = 0.._TAYLOR``; far: outside
    the columns ``near``). ``M_1 ... M_6`` are summed with :func:`_rowsum`'s ``exact=True``: the location
    search compares their variation over the candidate locations, where float32 sums would be too noisy."""
    n = xs.shape[1]
    R = xs.shape[0] if rows is None else rows.numel()
    out = torch.empty((R, 4 + _TAYLOR), dtype=_F64, device=xs.device)
    floor = torch.finfo(_WORK).tiny ** 0.25
    step = max(1, _CHUNK // n)
    uw, bw = u.to(_WORK)[:, None], beta.to(_WORK)[:, None]
    for s in range(0, R, step):
        r = min(step, R - s)
        xr = xs[s:s + r] if rows is None else xs.index_select(0, rows[s:s + r])
        d = torch.sub(xr, uw[s:s + r])
        L = d.abs().clamp_(min=floor).log_()
        e = torch.mul(L, bw[s:s + r]).exp_()
        t = torch.mul(e, L)
        o = out[s:s + r]
        o[:, 0] = _rowsum(e)
        o[:, 1] = _rowsum(t)
        o[:, 2] = _rowsum(t.mul_(L))
        idx = near[s:s + r]
        e.scatter_(1, idx, 0.0)
        D = d.scatter_(1, idx, 1.0).reciprocal_()
        o[:, 3] = _rowsum(e)  # M_0 cancels from every comparison of candidate locations
        for k in range(1, _TAYLOR + 1):
            e.mul_(D)
            o[:, 3 + k] = _rowsum(e, True)
    return out


def _binomials(beta: torch.Tensor, order: int) -> torch.Tensor:
    """``binom(beta, k)`` for ``k = 0..order``, shape ``beta.shape + (order + 1,)``."""
    cols = [torch.ones_like(beta)]
    for k in range(1, order + 1):
        cols.append(cols[-1] * (beta - (k - 1)) / k)
    return torch.stack(cols, -1)


def _far_poly(far: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Coefficients ``a_k`` (R, K+1) of the far points' ``sum |d - delta|^beta = sum_k a_k delta^k``:
    ``|d - delta|^beta = |d|^beta (1 - delta/d)^beta = sum_k binom(beta, k) (-delta)^k |d|^beta d^-k``,
    so ``a_k = binom(beta, k) (-1)^k M_k`` with the far moments ``M_k = sum_far |d|^beta d^-k``."""
    order = far.shape[1] - 1
    sign = torch.tensor([(-1.0) ** k for k in range(order + 1)], dtype=far.dtype, device=far.device)
    return _binomials(beta, order) * sign * far


def _poly(a: torch.Tensor, delta: torch.Tensor, deriv: int = 0) -> torch.Tensor:
    """``sum_k a_k delta^k`` (or its ``deriv``-th derivative) by Horner; ``a`` (R, K+1), ``delta`` (R, m)."""
    order = a.shape[1] - 1
    out = torch.zeros_like(delta)
    for k in range(order, deriv - 1, -1):
        fall = math.prod(range(k - deriv + 1, k + 1))  # k (k-1) ... (k - deriv + 1)
        out = out * delta + a[:, k:k + 1] * fall
    return out


def _near_sum(y: torch.Tensor, delta: torch.Tensor, beta: torch.Tensor, power_shift: float = 0.0,
              signed: bool = False) -> torch.Tensor:
    """``sum_i |y_i - delta_j|^(beta - power_shift)`` (times ``sign(y_i - delta_j)`` if ``signed``),
    shape (R, m), for near points ``y`` (R, K) and candidates ``delta`` (R, m)."""
    diff = y[:, None, :] - delta[:, :, None]
    v = diff.abs().log_().mul_((beta - power_shift)[:, None, None]).exp_()
    if signed:
        v = v * diff.sign()
    return v.sum(-1)


def _near_sums(y: torch.Tensor, cand: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """:func:`_near_sum` over chunks of rows whose (rows, candidates, K) temporaries fit in cache."""
    step = max(1, _CHUNK // (y.shape[1] * cand.shape[1]))
    return torch.cat([_near_sum(y[s:s + step], cand[s:s + step], beta[s:s + step])
                      for s in range(0, y.shape[0], step)])


def _local_location(y: torch.Tensor, pos: torch.Tensor, far: torch.Tensor, beta: torch.Tensor,
                         phi_tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``Phi(delta) = sum_i |y_i - delta|^beta`` (near points exactly, far ones by Taylor)
    over the candidate window: the data points ``y[pos - M/2 : pos + M/2]`` for ``beta <= 1`` (the
    minimum sits on one of them), plus the smooth minimum next to the best one for ``beta > 1``.

    The interior search stops once convexity bounds what is left, ``|Phi'(z)| (hi - lo) < phi_tol``.
    Returns ``(delta, drop)``: the minimiser and ``Phi(0) - Phi(delta) >= 0`` (0 and 0 if the centre wins).
    """
    R, K = y.shape
    M = min(_INNER, K)
    a = _far_poly(far, beta)
    # candidates: every point of the window; where its best is at an edge, also every _STRIDE-th
    # point beyond that edge out to _COARSE of them (a coarse move; the next round, centred there,
    # compares the points around it accurately)
    ci = (pos[:, None] + torch.arange(M, device=y.device) - M // 2).clamp(0, K - 1)
    cand = y.gather(1, ci)
    phi = _poly(a, cand) + _near_sums(y, cand, beta)
    zero = torch.zeros((R, 1), dtype=y.dtype, device=y.device)
    phi0 = (_poly(a, zero) + _near_sum(y, zero, beta))[:, 0]
    j = phi.argmin(1)
    best = phi.gather(1, j[:, None])[:, 0]
    delta = cand.gather(1, j[:, None])[:, 0]
    jk = ci.gather(1, j[:, None])[:, 0]  # the best point's index in y
    side = torch.where((j == 0) & (ci[:, 0] > 0), -1, torch.where((j == M - 1) & (ci[:, M - 1] < K - 1), 1, 0))
    coarse = torch.zeros(R, dtype=torch.bool, device=y.device)
    if bool((side != 0).any()):
        ei = (side != 0).nonzero().flatten()
        steps = _STRIDE * torch.arange(1, _COARSE + 1, device=y.device)
        cc = (jk[ei, None] + side[ei, None] * steps).clamp(0, K - 1)
        cv = y[ei].gather(1, cc)
        cphi = _poly(a[ei], cv) + _near_sums(y[ei], cv, beta[ei])
        cj = cphi.argmin(1)
        cbest = cphi.gather(1, cj[:, None])[:, 0]
        take = cbest < best[ei]
        ti = ei[take]
        best[ti] = cbest[take]
        delta[ti] = cv.gather(1, cj[:, None])[:, 0][take]
        jk[ti] = cc.gather(1, cj[:, None])[:, 0][take]
        coarse[ti] = True
    smooth = (beta > 1) & ~coarse
    if smooth.any():
        # Phi is smooth and convex between data points: safeguarded Newton in the interval next to the
        # best data point on the side where Phi decreases
        ri = smooth.nonzero().flatten()
        ys, bs, aa = y[ri], beta[ri], a[ri]
        jj = jk[ri]
        z0 = delta[ri][:, None]
        slope = _poly(aa, z0, 1) - bs[:, None] * _near_sum(ys, z0, bs, 1.0, signed=True)
        other = torch.where(slope[:, 0] < 0, jj + 1, jj - 1).clamp(0, K - 1)
        lo_b, hi_b = z0[:, 0], ys.gather(1, other[:, None])[:, 0]
        lo_b, hi_b = torch.minimum(lo_b, hi_b), torch.maximum(lo_b, hi_b)
        tol = 1e-13 * (hi_b - lo_b)
        ptol = phi_tol[ri]
        z = 0.5 * (lo_b + hi_b)
        live = torch.ones_like(z, dtype=torch.bool)
        for _ in range(60):
            li = live.nonzero().flatten()
            if li.numel() == 0:
                break
            zz, yl, bl, al = z[li, None], ys[li], bs[li], aa[li]
            f1 = (_poly(al, zz, 1) - bl[:, None] * _near_sum(yl, zz, bl, 1.0, signed=True))[:, 0]
            f2 = (_poly(al, zz, 2) + (bl * (bl - 1))[:, None] * _near_sum(yl, zz, bl, 2.0))[:, 0]
            zl, lo_l, hi_l = zz[:, 0], lo_b[li], hi_b[li]
            lo_l = torch.where(f1 < 0, zl, lo_l)
            hi_l = torch.where(f1 < 0, hi_l, zl)
            nz = zl - f1 / f2
            new = torch.where(torch.isfinite(nz) & (nz > lo_l) & (nz < hi_l), nz, 0.5 * (lo_l + hi_l))
            lo_b[li], hi_b[li], z[li] = lo_l, hi_l, new
            # convex: Phi(z) - min Phi <= |Phi'(z)| (hi - lo); nothing left worth a step below phi_tol
            live[li] = ((new - zl).abs() > tol[li]) & (f1.abs() * (hi_l - lo_l) > ptol[li])
        zz = z[:, None]
        phiz = (_poly(aa, zz) + _near_sum(ys, zz, bs))[:, 0]
        better = phiz < best[ri]
        best[ri] = torch.where(better, phiz, best[ri])
        delta[ri] = torch.where(better, z, delta[ri])
    keep = best >= phi0
    return torch.where(keep, 0.0, delta), torch.where(keep, 0.0, phi0 - best)


def fit_peaked(x: torch.Tensor, loc0: torch.Tensor, s0: torch.Tensor, beta: torch.Tensor, max_iter: int,
               tol: float) -> tuple[torch.Tensor, ...]:
    """Alternating exact location search and Newton steps in ``log beta`` (see the module docstring),
    from the lower median. ``x`` holds the rows in the input dtype; the passes run on a sorted float32
    copy centred at ``loc0`` and scaled by ``s0``, the location search on the exact order statistics.

    Returns ``(mu, alpha, beta, n_iter, converged)`` (float64 per row, ``mu`` and ``alpha`` in data units).
    """
    R, n = x.shape
    dev = x.device
    xs = _sorted_rows(x)
    xs32 = torch.empty(xs.shape, dtype=_WORK, device=dev)
    step = max(1, _CHUNK // n)
    for s in range(0, R, step):  # the centred, scaled float32 copy, in cache-sized chunks
        xs32[s:s + step] = (xs[s:s + step] - loc0[s:s + step, None].to(xs.dtype)).div_(s0[s:s + step, None].to(xs.dtype))
    K = min(_NEAR, n)
    c = xs[:, (n - 1) // 2].double().clone()  # .double() of float64 data would be a view into xs
    inv_s = 1 / s0
    t = beta.log()
    t_lo, t_hi = math.log(BETA_MIN), math.log(BETA_MAX)
    alpha = torch.full((R,), math.nan, dtype=_F64, device=dev)
    converged = torch.zeros(R, dtype=torch.bool, device=dev)
    active = torch.ones(R, dtype=torch.bool, device=dev)
    ar = torch.arange(K, device=dev)
    # first Newton steps in log beta at the median, with the cheap sums (no far moments, no location
    # search): the kurtosis start is often 10% off, and the location search is wasted until beta settles
    u0 = (c - loc0) * inv_s
    it = 0
    for _ in range(min(_PHASE_A, max_iter - 1)):
        b = t.exp()
        dv = _profile_derivatives(b, n, _smooth_sums(xs32, None, u0, b, False))
        i_t, _ = _expected_info(b, dv["logS"].exp(), n)
        dt = torch.where(dv["gtt"] < 0, -dv["gt"] / dv["gtt"], dv["gt"] / i_t).clamp(-1.0, 1.0)
        t = (t + dt).clamp(t_lo, t_hi)
        it += 1
        if bool((dt.abs() < 0.02).all()):
            break
    for it in range(it + 1, max_iter + 1):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        rows = None if idx.numel() == R else idx
        ca, ta, isa = c[idx], t[idx], inv_s[idx]
        b = ta.exp()
        pos = torch.searchsorted(xs, c.to(xs.dtype)[:, None]).squeeze(1)[idx]
        lo = (pos - K // 2).clamp(0, n - K)
        near = lo[:, None] + ar
        sums = _peaked_sums(xs32, rows, (ca - loc0[idx]) * isa, b, near)
        dv = _profile_derivatives(b, n, sums[:, :3])
        i_t, _ = _expected_info(b, sums[:, 0], n)
        gt, gtt = dv["gt"], dv["gtt"]
        dt = torch.where(gtt < 0, -gt / gtt, gt / i_t).clamp(-1.0, 1.0)
        dt = (ta + dt).clamp(t_lo, t_hi) - ta
        gain_t = 0.5 * n * gt * dt
        y = (xs[idx[:, None], near].double() - ca[:, None]) * isa[:, None]
        # a location drop of phi_tol in S changes the log-likelihood by n/b phi_tol/S = tol/100
        delta, drop = _local_location(y, pos - lo, sums[:, 3:], b, 0.01 * tol * b * sums[:, 0] / n)
        gain_u = n / b * drop / sums[:, 0]
        # the location move is discrete (not a Newton step): it must gain less than tol itself
        done = (gain_t.abs() < max(tol, 1e-13 * n)) & (gain_u < max(tol, 1e-13 * n))
        c[idx] = torch.where(done, ca, ca + delta / isa)
        t[idx] = ta + dt
        db = b * torch.expm1(dt)
        logS = dv["logS"] + sums[:, 1] * db / sums[:, 0]
        di = idx[done]
        alpha[di] = _final_alpha((ta + dt).exp(), logS, s0[idx], n)[done]
        converged[di] = True
        active[di] = False
        if _TRACE:
            print(f"round {it}: active {idx.numel()}, moved {int((delta != 0).sum())}, "
                  f"max gain_t {float(gain_t.abs().max()):.3g}, max gain_u {float(gain_u.max()):.3g}")
    return c, alpha, t.exp(), it, converged
