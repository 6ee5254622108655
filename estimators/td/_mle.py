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
#: near set of the peaked path: the K order statistics around the centre, of which the central
#: M are the candidate locations (the far points enter through a Taylor expansion of order _TAYLOR)
_NEAR, _INNER, _TAYLOR = 256, 32, 6


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


def _rows(x: torch.Tensor, rows: torch.Tensor | None, s: int, r: int) -> torch.Tensor:
    return x[s:s + r] if rows is None else x.index_select(0, rows[s:s + r])


def _smooth_sums(x: torch.Tensor, rows: torch.Tensor | None, mu: torch.Tensor, inv_s: torch.Tensor,
                 beta: torch.Tensor, with_mu: bool) -> torch.Tensor:
    """Sums (S, SL, SLL[, P1, Q1, P2]) of :func:`_profile_derivatives` for the given rows (all if None)."""
    n, dtype = x.shape[1], x.dtype
    R = x.shape[0] if rows is None else rows.numel()
    out = torch.empty((R, 6 if with_mu else 3), dtype=_F64, device=x.device)
    floor = torch.finfo(dtype).tiny ** 0.25
    step = max(1, _CHUNK // n)
    for s in range(0, R, step):
        r = min(step, R - s)
        xs = _rows(x, rows, s, r)
        d = torch.sub(xs, mu[s:s + r, None].to(dtype)).mul_(inv_s[s:s + r, None].to(dtype))
        L = d.abs().clamp_(min=floor).log_()
        e = torch.mul(L, beta[s:s + r, None].to(dtype)).exp_()
        t = torch.mul(e, L)
        o = out[s:s + r]
        o[:, 0] = e.sum(-1, dtype=_F64)
        o[:, 1] = t.sum(-1, dtype=_F64)
        o[:, 2] = t.mul_(L).sum(-1, dtype=_F64)
        if with_mu:
            D = d.reciprocal_().clamp_(-1 / floor, 1 / floor)
            torch.mul(e, D, out=t)
            o[:, 3] = t.sum(-1, dtype=_F64)
            o[:, 4] = L.mul_(t).sum(-1, dtype=_F64)
            o[:, 5] = t.mul_(D).sum(-1, dtype=_F64)
    return out


def _final_alpha(beta, logS, s0, n):
    """``alpha = s0 (beta S / n)^(1/beta)`` from the scaled ``log S``."""
    return s0 * torch.exp((torch.log(beta) + logS - math.log(n)) / beta)


def fit_smooth(x: torch.Tensor, mu: torch.Tensor, beta: torch.Tensor, s0: torch.Tensor, loc_free: bool,
               max_iter: int, tol: float) -> tuple[torch.Tensor, ...]:
    """Joint Newton in ``(mu, log beta)`` (or ``log beta`` alone with ``loc_free=False``) for all rows of ``x``.

    Returns ``(mu, alpha, beta, n_iter, converged)`` (float64 per row).
    """
    G, n = x.shape
    dev = x.device
    eps = torch.finfo(x.dtype).eps
    inv_s = 1 / s0
    t = beta.log()
    mu = mu.clone()
    acc_mu, acc_t = mu.clone(), t.clone()
    acc_g = torch.full((G,), -math.inf, dtype=_F64, device=dev)
    alpha = torch.full((G,), math.nan, dtype=_F64, device=dev)
    converged = torch.zeros(G, dtype=torch.bool, device=dev)
    active = torch.ones(G, dtype=torch.bool, device=dev)
    t_lo, t_hi = math.log(BETA_MIN), math.log(BETA_MAX)
    it = 0
    for it in range(1, max_iter + 1):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        rows = None if idx.numel() == G else idx
        m, tt = mu[idx], t[idx]
        b = tt.exp()
        sums = _smooth_sums(x, rows, m, inv_s[idx], b, loc_free)
        dv = _profile_derivatives(b, n, sums)
        g = dv["g"]
        # backtrack where the last step lowered the likelihood (beyond the rounding noise of g)
        slack = 100 * eps * g.abs().clamp(min=1.0)
        worse = g < acc_g[idx] - slack
        tiny = ((m - acc_mu[idx]).abs() * inv_s[idx] < 1e-13) & ((tt - acc_t[idx]).abs() < 1e-13)
        stuck = worse & tiny  # the step is at rounding level: the accepted point is the optimum
        back = worse & ~tiny
        ok = ~worse
        mu[idx] = torch.where(back, 0.5 * (m + acc_mu[idx]), m)
        t[idx] = torch.where(back, 0.5 * (tt + acc_t[idx]), tt)
        if stuck.any():
            # alpha of the accepted point was recorded when it was accepted
            si = idx[stuck]
            mu[si], t[si] = acc_mu[si], acc_t[si]
            converged[si] = True
            active[si] = False
        if not ok.any():
            continue
        # Newton step at the accepted points
        gt, gtt = dv["gt"], dv["gtt"]
        i_t, i_u = _expected_info(b, sums[:, 0], n)
        if loc_free:
            gu, guu, gut = dv["gu"], dv["guu"], dv["gut"]
            det = guu * gtt - gut**2
            newton = (guu < 0) & (gtt < 0) & (det > 0)
            du = torch.where(newton, -(gtt * gu - gut * gt) / det, gu / i_u)
            dt = torch.where(newton, -(guu * gt - gut * gu) / det, gt / i_t)
            du = torch.nan_to_num(du, nan=0.0).clamp(-1.0, 1.0)
        else:
            newton = gtt < 0
            gu = du = torch.zeros_like(gt)
            dt = torch.where(newton, -gt / gtt, gt / i_t)
        dt = dt.clamp(-1.0, 1.0)
        dt = (tt + dt).clamp(t_lo, t_hi) - tt
        gain = 0.5 * n * (gu * du + gt * dt)
        done = ok & newton & (gain.abs() < tol)
        # first-order update of log S for the final step (no further pass over the data)
        db = b * torch.expm1(dt)
        if loc_free:
            dlogS = (-b * sums[:, 3] * du + sums[:, 1] * db) / sums[:, 0]
        else:
            dlogS = sums[:, 1] * db / sums[:, 0]
        b_new = (tt + dt).exp()
        alpha_now = _final_alpha(b, dv["logS"], s0[idx], n)
        oi = idx[ok]
        acc_mu[oi], acc_t[oi], acc_g[oi] = m[ok], tt[ok], g[ok]
        alpha[oi] = alpha_now[ok]  # the accepted point's alpha (used if a later step is stuck)
        mu[oi] = (m + s0[idx] * du)[ok]
        t[oi] = (tt + dt)[ok]
        di = idx[done]
        alpha[di] = _final_alpha(b_new, dv["logS"] + dlogS, s0[idx], n)[done]
        converged[di] = True
        active[di] = False
    return mu, alpha, t.exp(), it, converged


# ------------------------------------------------------------------------------------------------ peaked
def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` sorted ascending (numpy's vectorised sort on the CPU is ~10x torch's)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return torch.sort(x, -1).values


def _peaked_sums(xs: torch.Tensor, c: torch.Tensor, inv_s: torch.Tensor, beta: torch.Tensor,
                 near: torch.Tensor) -> torch.Tensor:
    """Per row: ``S, SL, SLL`` over all points and the far moments ``M_k = sum_far e D^k``
    (``k = 0.._TAYLOR``; far: outside the columns ``near``) at location ``c``."""
    R, n = xs.shape
    dtype = xs.dtype
    out = torch.empty((R, 4 + _TAYLOR), dtype=_F64, device=xs.device)
    floor = torch.finfo(dtype).tiny ** 0.25
    step = max(1, _CHUNK // n)
    for s in range(0, R, step):
        r = min(step, R - s)
        d = torch.sub(xs[s:s + r], c[s:s + r, None].to(dtype)).mul_(inv_s[s:s + r, None].to(dtype))
        L = d.abs().clamp_(min=floor).log_()
        e = torch.mul(L, beta[s:s + r, None].to(dtype)).exp_()
        t = torch.mul(e, L)
        o = out[s:s + r]
        o[:, 0] = e.sum(-1, dtype=_F64)
        o[:, 1] = t.sum(-1, dtype=_F64)
        o[:, 2] = t.mul_(L).sum(-1, dtype=_F64)
        idx = near[s:s + r]
        e.scatter_(1, idx, 0.0)
        D = d.scatter_(1, idx, 1.0).reciprocal_()
        o[:, 3] = e.sum(-1, dtype=_F64)
        for k in range(1, _TAYLOR + 1):
            e.mul_(D)
            o[:, 3 + k] = e.sum(-1, dtype=_F64)
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
    ci = (pos[:, None] - M // 2 + torch.arange(M, device=y.device)).clamp(0, K - 1)
    cand = y.gather(1, ci)
    phi = _poly(a, cand) + _near_sum(y, cand, beta)
    zero = torch.zeros((R, 1), dtype=y.dtype, device=y.device)
    phi0 = (_poly(a, zero) + _near_sum(y, zero, beta))[:, 0]
    j = phi.argmin(1)
    best = phi.gather(1, j[:, None])[:, 0]
    delta = cand.gather(1, j[:, None])[:, 0]
    smooth = beta > 1
    if smooth.any():
        # Phi is smooth and convex between data points: safeguarded Newton in the interval next to the
        # best data point on the side where Phi decreases
        ri = smooth.nonzero().flatten()
        ys, bs, aa = y[ri], beta[ri], a[ri]
        jj = ci.gather(1, j[:, None])[ri, 0]
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


def fit_peaked(x: torch.Tensor, beta: torch.Tensor, s0: torch.Tensor, max_iter: int, tol: float
               ) -> tuple[torch.Tensor, ...]:
    """Alternating exact location search and Newton steps in ``log beta`` (see the module docstring),
    from the lower median. Returns ``(mu, alpha, beta, n_iter, converged)``."""
    R, n = x.shape
    dev = x.device
    xs = _sorted_rows(x)
    K = min(_NEAR, n)
    c = xs[:, (n - 1) // 2].double().clone()  # .double() of float64 data is a view into xs
    inv_s = 1 / s0
    t = beta.log()
    t_lo, t_hi = math.log(BETA_MIN), math.log(BETA_MAX)
    alpha = torch.full((R,), math.nan, dtype=_F64, device=dev)
    converged = torch.zeros(R, dtype=torch.bool, device=dev)
    active = torch.ones(R, dtype=torch.bool, device=dev)
    ar = torch.arange(K, device=dev)
    it = 0
    for it in range(1, max_iter + 1):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        xa = xs if idx.numel() == R else xs[idx]
        ca, ta, isa = c[idx], t[idx], inv_s[idx]
        b = ta.exp()
        pos = torch.searchsorted(xa, ca.to(xa.dtype)[:, None]).squeeze(1)
        lo = (pos - K // 2).clamp(0, n - K)
        near = lo[:, None] + ar
        sums = _peaked_sums(xa, ca, isa, b, near)
        dv = _profile_derivatives(b, n, sums[:, :3])
        i_t, _ = _expected_info(b, sums[:, 0], n)
        gt, gtt = dv["gt"], dv["gtt"]
        dt = torch.where(gtt < 0, -gt / gtt, gt / i_t).clamp(-1.0, 1.0)
        dt = (ta + dt).clamp(t_lo, t_hi) - ta
        gain_t = 0.5 * n * gt * dt
        y = (xa.gather(1, near).double() - ca[:, None]) * isa[:, None]
        # a location drop of phi_tol in S changes the log-likelihood by n/b phi_tol/S = tol/100
        delta, drop = _local_location(y, pos - lo, sums[:, 3:], b, 0.01 * tol * b * sums[:, 0] / n)
        gain_u = n / b * drop / sums[:, 0]
        done = (gain_t.abs() < tol) & (gain_u < tol)
        move = ~done | (gain_u >= tol)
        c[idx] = torch.where(move, ca + delta / isa, ca)
        t[idx] = ta + dt
        db = b * torch.expm1(dt)
        logS = dv["logS"] + sums[:, 1] * db / sums[:, 0]
        di = idx[done]
        alpha[di] = _final_alpha((ta + dt).exp(), logS, s0[idx], n)[done]
        converged[di] = True
        active[di] = False
    return c, alpha, t.exp(), it, converged
