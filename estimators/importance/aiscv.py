"""Adaptive importance sampling with control variates for many expectations (aISCV).

Demange-Chryst, Bachoc & Morio, "Efficient estimation of multiple expectations with the same
sample by adaptive importance sampling and control variates" (arXiv:2212.00568). For J
expectations I_j = E_{f_j}[phi_j(X)], one sample X_i ~ g_alpha = sum_m alpha_m g_m gives

    I_j = (1/n) sum_i [f_j phi_j - beta_j g_j](X_i) / g_alpha(X_i) + beta_j        (unbiased, any beta)

(paper eq. (3)); the optimal g_j = phi_j f_j / I_j, beta_j = I_j give zero variance, so
(alpha, beta, g_1..g_J) are adapted (Algorithm 1) and then frozen for a fresh final sample.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from scipy.special import ndtri

from genstat.mc import estimate as mc_estimate
from genstat.mc import RunningMoments

from .proposals import DEFAULT_COV_FLOOR, GaussianFamily, InputSet, fit_cross_entropy
from .results import AdaptationStep, MultiExpectationResult
from .simplex import minimize_on_simplex
from .unseen import WeightTally, flag_unseen

__all__ = ["aiscv", "FrozenProposal"]

_LOG_OVERFLOW = 700.0


def check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def draw_seed(gen: torch.Generator) -> int:
    """An integer seed drawn from ``gen`` (for samplers that take a seed, not a generator)."""
    return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())


def call_phis(
    phis: Callable, x: torch.Tensor, J: int | None, allow_negative: bool, logf: torch.Tensor | None = None
) -> torch.Tensor:
    """Evaluate ``phis`` on (n, d) points and validate: (n, J) finite float64, non-negative.

    ``logf`` (n, J) or (n, 1), the input log-densities at ``x``: where ``log f_j = -inf`` the
    importance weight of expectation j is 0, so phi_j counts as 0 there and is not validated (a
    Gaussian proposal puts some points outside a bounded support, where phi may be negative or
    NaN, e.g. sqrt(x) below 0). Points outside every support are not passed to ``phis`` at all.
    """
    n = x.shape[0]
    dead = None if logf is None else torch.isneginf(logf)
    if dead is not None and not bool(dead.any()):
        dead = None
    keep = None if dead is None else ~dead.all(1)  # rows inside some input's support
    if keep is not None and bool(keep.all()):
        keep = None
    if keep is not None and J is not None and not bool(keep.any()):
        return x.new_zeros((n, J), dtype=torch.float64)
    xin = x if keep is None else x[keep]
    m = xin.shape[0]
    y = phis(xin)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"phis must return a torch.Tensor, got {type(y).__name__}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != m or (J is not None and y.shape[1] != J):
        want = f"({m}, {J})" if J is not None else f"({m}, J)"
        raise ValueError(f"phis must return shape {want}, got {tuple(y.shape)}")
    y = y.to(torch.float64)
    if keep is not None:
        full = y.new_zeros((n, y.shape[1]))
        full[keep] = y
        y = full
    if dead is not None:
        y = y.masked_fill(dead, 0.0)
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        j = int(torch.nonzero(bad.any(0))[0, 0])
        raise ValueError(f"phis returned {int(bad.sum())} non-finite value(s) (NaN/inf), first in expectation {j}")
    if not allow_negative:
        neg = y < 0
        if bool(neg.any()):
            j = int(torch.nonzero(neg.any(0))[0, 0])
            lo = float(y[:, j].min())
            raise ValueError(
                f"phis returned negative values for expectation {j} (min {lo:.4g}) where its input "
                "density is positive; aISCV fits its proposals to phi_j f_j and needs phi_j >= 0: "
                "pass allow_negative=True for signed integrands (the proposals then target "
                "|phi_j| f_j; the estimate stays unbiased)"
            )
    return y


@dataclass(frozen=True, slots=True)
class FrozenProposal:
    """The final sampling density g_alpha = (1 - delta) sum_j alpha_j g_j + delta fbar and beta.

    ``family=None`` is the initial sampler fbar itself (no control variates: beta = 0).
    """

    family: GaussianFamily | None
    alpha: torch.Tensor
    beta: torch.Tensor
    defensive: float

    def log_components(self, x: torch.Tensor) -> torch.Tensor:
        """(n, J) log g_j(x) (None for the initial sampler)."""
        return None if self.family is None else self.family.log_prob(x)

    def log_prob(self, logG: torch.Tensor, log_fbar: torch.Tensor | None) -> torch.Tensor:
        """(n,) log g_alpha from the components' log-densities and (if defensive) log fbar."""
        if self.family is None:
            return log_fbar
        lg = torch.logsumexp(logG + torch.log(self.alpha)[None], 1)
        if self.defensive > 0:
            lg = torch.logaddexp(lg + math.log1p(-self.defensive), log_fbar + math.log(self.defensive))
        return lg

    def sample(self, n: int, generator: torch.Generator, inputs: InputSet) -> torch.Tensor:
        """(n, d) float64 i.i.d. draws from g_alpha."""
        if self.family is None:
            return inputs.sample_mean(n, generator).to(torch.float64)
        J = self.alpha.shape[0]
        p = (1 - self.defensive) * self.alpha
        if self.defensive > 0:
            p = torch.cat([p, p.new_tensor([self.defensive])])
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        x = self.family.sample(idx[idx < J], generator)
        n_def = int((idx == J).sum())
        if n_def:
            x = torch.cat([x, inputs.sample_mean(n_def, generator).to(torch.float64)], 0)
        return x

    def sample_qmc_stratified(self, counts: torch.Tensor, seed: int) -> torch.Tensor:
        """(sum counts, d) points: ``counts[m]`` scrambled-Sobol' points through Gaussian m."""
        d = self.family.mean.shape[-1]
        parts = []
        for j, c in enumerate(counts.tolist()):
            if c > 0:
                eng = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed + j)
                u = eng.draw(int(c), dtype=torch.float64).clamp(1e-15, 1 - 1e-15)
                eps = torch.as_tensor(ndtri(u.numpy())).to(self.alpha.device)
                parts.append(self.family.mean[j, 0] + eps @ self.family.scale_tril[j, 0].T)
        return torch.cat(parts, 0)

    def sample_qmc(self, n: int, seed: int) -> torch.Tensor:
        """(n, d) scrambled-Sobol' points pushed through g_alpha (component by the first
        coordinate's inverse CDF, Gaussian by the inverse normal CDF of the others)."""
        if self.defensive > 0 or self.family is None:
            raise ValueError("final='rqmc' needs defensive=0 (the inputs have no generic inverse CDF)")
        J, c, d = self.family.mean.shape
        w = (self.alpha[:, None] * self.family.log_pi.exp()).reshape(-1)
        cum = torch.cumsum(w / w.sum(), 0)
        eng = torch.quasirandom.SobolEngine(d + 1, scramble=True, seed=seed)
        u = eng.draw(n, dtype=torch.float64).to(self.alpha.device)
        comp = torch.searchsorted(cum, u[:, 0].contiguous()).clamp_max(J * c - 1)
        eps = torch.as_tensor(ndtri(u[:, 1:].clamp(1e-15, 1 - 1e-15).cpu().numpy()), device=u.device)
        mu = self.family.mean.reshape(J * c, d)[comp]
        L = self.family.scale_tril.reshape(J * c, d, d)[comp]
        return mu + (L @ eps[:, :, None])[:, :, 0]


def _allocate(alpha: torch.Tensor, m: int) -> torch.Tensor:
    """Largest-remainder rounding of m * alpha to integers summing to m (float64 counts)."""
    raw = alpha * m
    counts = torch.floor(raw)
    short = m - int(counts.sum())
    if short > 0:
        counts[torch.argsort(raw - counts, descending=True)[:short]] += 1
    return counts


def _weights0(weights, J: int, I0: torch.Tensor) -> tuple[torch.Tensor, str]:
    if isinstance(weights, str):
        if weights == "absolute":
            return torch.ones(J, dtype=torch.float64), "absolute"
        if weights == "relative":
            return _relative(I0), "relative"
        raise ValueError(f"weights must be 'relative', 'absolute' or a tensor of shape ({J},), got {weights!r}")
    w = torch.as_tensor(weights, dtype=torch.float64).cpu()
    if w.shape != (J,) or not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
        raise ValueError(f"weights must be a positive finite tensor of shape ({J},), got {w}")
    return w, "fixed"


def _relative(I: torch.Tensor) -> torch.Tensor:
    a = I.abs().cpu()
    scale = float(a.max()) if float(a.max()) > 0 else 1.0
    return 1.0 / a.clamp_min(1e-12 * scale) ** 2


def _ratio(log_num: torch.Tensor, log_den: torch.Tensor, what: str) -> torch.Tensor:
    d = log_num - log_den
    if bool((d > _LOG_OVERFLOW).any()):
        raise ValueError(
            f"{what} overflow (log ratio up to {float(d.max()):.1f}): the sampling density does not "
            "cover the inputs; use defensive > 0 or a larger batch"
        )
    return torch.exp(d)


def _check_options(budget, family, final, defensive, batch_fraction, patience, alpha_floor,
                   max_adaptive_fraction) -> None:
    """The option checks of :func:`aiscv` (before any call of ``phis``)."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int, got {type(budget).__name__}")
    if family not in ("gaussian", "mixture2"):
        raise ValueError(f"family must be 'gaussian' or 'mixture2', got {family!r}")
    if final not in ("iid", "rqmc"):
        raise ValueError(f"final must be 'iid' or 'rqmc', got {final!r}")
    if not 0.0 <= float(defensive) < 1.0:
        raise ValueError(f"defensive must be in [0, 1), got {defensive}")
    if not 0.0 < float(batch_fraction) < 0.5:
        raise ValueError(f"batch_fraction must be in (0, 0.5), got {batch_fraction}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be an int >= 1, got {patience!r}")
    if not 0.0 <= float(alpha_floor) < 1.0:
        raise ValueError(f"alpha_floor must be in [0, 1), got {alpha_floor}")
    if not 0.0 < float(max_adaptive_fraction) < 1.0:
        raise ValueError(f"max_adaptive_fraction must be in (0, 1), got {max_adaptive_fraction}")


def _alpha_step(Y, logf, logG, logh, log_fbar_all, beta, w, alpha, defensive: float, floor: float):
    """The alpha-step: mixture weights minimising ``sum_i sum_j w_j (f_j phi_j - beta_j g_j)^2 / (g_alpha h)``
    over the points so far (rows rescaled by ``s_i`` in log space); a :func:`minimize_on_simplex` result."""
    s = logG.max(1).values
    if defensive > 0:
        s = torch.maximum(s, log_fbar_all)
    u = Y * torch.exp((logf - s[:, None]).clamp_max(_LOG_OVERFLOW))
    gz = torch.exp(logG - s[:, None])
    num = ((u - beta[None] * gz) ** 2 * w[None]).sum(1)
    log_a = torch.log(num) + s - logh
    a = torch.exp(log_a - log_a.max()) if bool(torch.isfinite(log_a.max())) else torch.zeros_like(num)
    c = defensive * torch.exp(log_fbar_all - s) if defensive > 0 else None
    return minimize_on_simplex(a, (1 - defensive) * gz, c, alpha0=alpha, floor=floor)


def _beta_step(Yn, logfn, logGn, lga_n):
    """The beta-step on a fresh batch from g_alpha: least squares of ``f_j phi_j / g_alpha`` on the
    control variate ``g_j / g_alpha`` (mean 1); returns (beta, batch estimate, per-point variance)."""
    yv = Yn * _ratio(logfn, lga_n[:, None], "importance weight")
    zv = torch.exp(logGn - lga_n[:, None])
    zc, yc = zv - zv.mean(0), yv - yv.mean(0)
    vz = (zc**2).mean(0)
    ok = vz > 1e-12 * zv.mean(0) ** 2
    beta = torch.where(ok, (zc * yc).mean(0) / torch.where(ok, vz, torch.ones_like(vz)), yv.mean(0))
    summand = yv - beta[None] * zv + beta[None]
    return beta, summand.mean(0), summand.var(0)


def _to(inp: InputSet, x: torch.Tensor) -> torch.Tensor:
    """Points in the inputs' dtype."""
    return x.to(inp.dtype)


def _final_sample(prop: FrozenProposal, inp: InputSet, phis, J: int, allow_negative: bool, final: str, n_final: int,
                  n_randomizations: int, seed: int, level: float, gen: torch.Generator, tally: WeightTally):
    """The fresh final sample from the frozen sampler: i.i.d. through the engine, or R randomised QMC
    sequences; returns (estimate, stderr, covariance, points used). ``tally`` records where each
    phi_j was nonzero and the weights' ESS (for an integrand never seen)."""
    def summand_fn(x: torch.Tensor, prop: FrozenProposal = prop) -> torch.Tensor:
        x = x.to(torch.float64)
        lf = inp.log_prob(_to(inp, x))
        y = call_phis(phis, _to(inp, x), J, allow_negative, lf)
        lfb = inp.log_mean(_to(inp, x), lf) if prop.defensive > 0 else None
        lG = prop.log_components(x)
        lga = prop.log_prob(lG, lfb)
        tally.add(y, lf - lga[:, None])
        out = y * _ratio(lf, lga[:, None], "importance weight")
        if lG is None:
            return out
        return out - prop.beta[None] * torch.exp(lG - lga[:, None]) + prop.beta[None]

    if final == "iid":
        res = mc_estimate(
            summand_fn, lambda n, g, dev: prop.sample(n, g, inp), n_final, seed=seed % (2**62),
            device=gen.device, level=level,
        )
        est, se, cov = res.estimate.reshape(J), res.stderr.reshape(J), res.covariance
    else:
        if not isinstance(n_randomizations, int) or n_randomizations < 2:
            raise ValueError(f"n_randomizations must be an int >= 2, got {n_randomizations}")
        m = n_final // n_randomizations
        if m < 1:
            raise ValueError(f"budget too small for {n_randomizations} randomizations of the final sample")
        if prop.family.c == 1:
            # stratified over components: n_m = round(m alpha_m) points of component m, each an
            # independently scrambled Sobol' sequence; g_alpha uses the realised fractions n_m / m
            # (deterministic-mixture weights), so each randomisation is unbiased
            counts = _allocate(prop.alpha, m)
            prop = FrozenProposal(prop.family, counts / m, torch.where(counts > 0, prop.beta, 0.0), 0.0)
            draw_q = lambda r: prop.sample_qmc_stratified(counts, seed + r * (J + 1))  # noqa: E731
        else:
            draw_q = lambda r: prop.sample_qmc(m, seed + r)  # noqa: E731
        reps = torch.stack([summand_fn(draw_q(r), prop).mean(0) for r in range(n_randomizations)])
        mom = RunningMoments.from_batch(reps)
        est = mom.mean
        cov = mom.covariance() / n_randomizations
        se = torch.sqrt(torch.diagonal(cov).clamp_min(0))
        n_final = m * n_randomizations
    return est, se, cov, n_final


def _batch_sizes(budget: int, d: int, batch_fraction: float, max_adaptive_fraction: float) -> tuple[int, int]:
    """(points per batch, most points the adaptation may use); a budget too small for two batches raises."""
    nb, max_adapt = int(batch_fraction * budget), int(max_adaptive_fraction * budget)
    if nb < d + 2 or 2 * nb > max_adapt or budget - 2 * nb < 2:
        raise ValueError(
            f"budget={budget} is too small for one adaptation step: batches of "
            f"batch_fraction*budget={nb} points (need >= d+2={d + 2}) and two of them within "
            f"max_adaptive_fraction*budget={max_adapt}"
        )
    return nb, max_adapt


def _balance_log_density(logq: list[torch.Tensor], counts: list[int], used: int) -> torch.Tensor:
    """log h on all points: the balance heuristic h = sum_k (n_k / n) q_k over the proposals used so far."""
    share = torch.tensor(counts, dtype=torch.float64, device=logq[0].device) / used
    return torch.logsumexp(torch.stack(logq, 1) + torch.log(share)[None], 1)


def _extend_log_proposals(logq, proposals, prop, Xn, log_fbar_n, lga_n, logG, log_fbar_all) -> list[torch.Tensor]:
    """The balance-heuristic bookkeeping after a batch ``Xn`` from ``prop``: every earlier proposal's
    log-density appended on the new points, and ``prop``'s on all points as a new row."""
    logq = [torch.cat([q, p.log_prob(p.log_components(Xn), log_fbar_n)]) for q, p in zip(logq, proposals)]
    return logq + [torch.cat([prop.log_prob(logG, log_fbar_all), lga_n])]


def _chosen_iteration(batch_var: list[torch.Tensor], w: torch.Tensor, final: str) -> int:
    """The sampler with the smallest estimated criterion sum_j w_j sigma^2_{j,k} (RQMC needs a fitted one)."""
    scores = [float((w * v).sum()) for v in batch_var]
    chosen = min(range(len(scores)), key=scores.__getitem__)
    if final == "rqmc" and chosen == 0:
        chosen = 1 + min(range(len(scores) - 1), key=lambda i: scores[i + 1])
    return chosen


def aiscv(
    phis: Callable[[torch.Tensor], torch.Tensor],
    inputs,
    budget: int,
    *,
    weights: Literal["relative", "absolute"] | torch.Tensor = "relative",
    family: Literal["gaussian", "mixture2"] = "gaussian",
    defensive: float = 0.0,
    batch_fraction: float = 0.1,
    max_adaptive_fraction: float = 0.5,
    final: Literal["iid", "rqmc"] = "iid",
    n_randomizations: int = 8,
    cov_floor: float = DEFAULT_COV_FLOOR,
    alpha_floor: float = 1e-3,
    patience: int = 2,
    names: list[str] | tuple[str, ...] | None = None,
    level: float = 0.95,
    generator: torch.Generator,
    allow_negative: bool = False,
) -> MultiExpectationResult:
    """Estimate J expectations E_{f_j}[phi_j(X)] with one adaptive IS sample and control variates.

    Parameters
    ----------
    phis : callable
        ``phis(x) -> (n, J)`` non-negative integrands for x of shape (n, d) (univariate inputs: (n, 1)).
        Where an input density f_j is 0 (log-density -inf, e.g. outside the support of an
        Exponential, LogNormal or Uniform input that a Gaussian proposal overshoots) the importance
        weight is 0 and phi_j counts as 0: its value there is neither used nor validated, and
        points outside every support are not passed to ``phis``.
    inputs : Distribution or list of Distribution
        One input density shared by all J integrands, a distribution with ``batch_shape (J,)``, or
        a list of J distributions (event shape () or (d,)).
    budget : int
        Total calls of ``phis`` (points), adaptation and final sample together.
    weights : {"relative", "absolute"} or Tensor (J,)
        Criterion weights w_j of ``sum_j w_j Var(I_j)``: ``1/I_j^2`` (plug-in, updated with the
        current estimates), 1, or fixed positive values.
    family : {"gaussian", "mixture2"}
        Auxiliary family: one Gaussian per expectation (weighted moments) or a 2-component mixture
        (weighted EM).
    defensive : float
        Weight delta of the defensive component fbar (the input or the mixture of the inputs).
    batch_fraction : float
        Size of the initial sample and of each adaptive batch, as a fraction of ``budget``.
    max_adaptive_fraction : float
        Upper bound on the share of ``budget`` spent in the adaptation.
    final : {"iid", "rqmc"}
        The fresh final sample: i.i.d. through :func:`genstat.mc.estimate`, or randomised QMC
        (``n_randomizations`` scrambled Sobol' sequences pushed through g_alpha; stderr from their
        spread, so the result carries ``df = n_randomizations - 1`` and its intervals use
        Student's t).
    n_randomizations : int
        R >= 2 independent randomisations for ``final="rqmc"``.
    cov_floor : float
        Relative covariance floor added to every cross-entropy fit.
    patience : int
        Stop after this many consecutive iterations whose predicted final variance
        ``sum_j w_j sigma^2_{j,k} / (N - N_k)`` does not decrease. 1 is the paper's rule; the
        default 2 rides out one noisy batch (measured on the cantilever case: one bad batch would
        otherwise freeze an early proposal and double the final variance).
    alpha_floor : float
        Each mixture weight is kept >= ``alpha_floor / J`` after the alpha-step: a share
        ``alpha_floor`` of the sample spread over all components, so no g_j is left uncovered
        because the sample-based alpha objective missed its tail.
    generator : torch.Generator
        Source of randomness (the final i.i.d. stage is block-seeded from a seed drawn from it).
    allow_negative : bool
        Accept signed phi (the CE fit then targets |phi_j| f_j; estimator (3) stays unbiased). Without
        it a negative value raises ``ValueError``. Used by the Sobol' estimators.

    Returns
    -------
    MultiExpectationResult
        An expectation whose phi_j was 0 at every final point (a rare event never observed) is
        reported as 0 with stderr NaN (not 0), its ``unseen_ess`` set and the interval
        ``(0, upper bound)``, with a ``RuntimeWarning``; rare-event probabilities are better
        estimated by :func:`~estimators.importance.cross_entropy_rare_event`.

    References
    ----------
    Demange-Chryst, Bachoc & Morio (2023), eq. (3) (the estimator), Algorithm 1 (adaptation,
    balance-heuristic weights, stopping rule).

    Examples
    --------
    >>> import torch
    >>> from estimators.importance import aiscv
    >>> f = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    >>> r = aiscv(lambda x: torch.cat([x**2, x**4], 1), f, 4000, generator=torch.Generator().manual_seed(0))
    >>> bool(abs(r.estimate[1] - 3.0) < 5 * r.stderr[1])
    True
    """
    t0 = time.perf_counter()
    gen = check_generator(generator)
    if not callable(phis):
        raise TypeError(f"phis must be callable, got {type(phis).__name__}")
    _check_options(budget, family, final, defensive, batch_fraction, patience, alpha_floor, max_adaptive_fraction)
    inp = InputSet(inputs)
    N = budget
    nb, max_adapt = _batch_sizes(budget, inp.d, batch_fraction, max_adaptive_fraction)
    comps = 1 if family == "gaussian" else 2

    # --- iteration 0: a sample from the inputs (or their equal mixture)
    X = inp.sample_mean(nb, gen).to(torch.float64)
    logf = inp.log_prob(_to(inp, X))
    Y = call_phis(phis, _to(inp, X), inp.J, allow_negative, logf)
    J = Y.shape[1]
    if inp.J is not None and inp.J != J:
        raise ValueError(f"inputs describe {inp.J} densities but phis returns {J} columns")
    if names is not None and len(names) != J:
        raise ValueError(f"names must have length {J}, got {len(names)}")
    logq = [inp.log_mean(_to(inp, X), logf)]  # log-density of each proposal used, on all points
    counts = [nb]
    V = _ratio(logf, logq[0][:, None], "importance weight") * Y
    I_hat = V.mean(0)
    sigma2 = V.var(0)
    w, wmode = _weights0(weights, J, I_hat)
    w_dev = w.to(X.device)
    alpha = (w_dev.sqrt() * I_hat.abs())
    alpha = alpha / alpha.sum() if float(alpha.sum()) > 0 else torch.full((J,), 1.0 / J, dtype=torch.float64, device=X.device)
    beta = I_hat.clone()
    trace = [AdaptationStep(0, nb, alpha.cpu(), beta.cpu(), sigma2.cpu(), float((w_dev * sigma2).sum()) / (N - nb))]
    proposals: list[FrozenProposal] = [FrozenProposal(None, alpha, torch.zeros_like(beta), 1.0)]
    batch_var: list[torch.Tensor] = [sigma2]
    used = nb
    log_fbar_all = logq[0]

    misses = 0
    while used + nb <= max_adapt:
        k = len(proposals)
        # balance heuristic: h = sum_k (n_k / n) q_k over all proposals used so far
        logh = _balance_log_density(logq, counts, used)
        Wt = _ratio(logf, logh[:, None], "importance weight")
        fam = fit_cross_entropy(X, Wt * Y.abs(), components=comps, cov_floor=cov_floor)
        logG = fam.log_prob(X)
        sol = _alpha_step(Y, logf, logG, logh, log_fbar_all, beta, w_dev, alpha, defensive, alpha_floor / J)
        alpha = sol.alpha
        prop = FrozenProposal(fam, alpha, beta, float(defensive))
        # a new batch from g_alpha
        Xn = prop.sample(nb, gen, inp)
        logfn = inp.log_prob(_to(inp, Xn))
        Yn = call_phis(phis, _to(inp, Xn), J, allow_negative, logfn)
        log_fbar_n = inp.log_mean(_to(inp, Xn), logfn)
        logGn = fam.log_prob(Xn)
        lga_n = prop.log_prob(logGn, log_fbar_n)
        beta, est_k, var_k = _beta_step(Yn, logfn, logGn, lga_n)
        prop = FrozenProposal(fam, alpha, beta, float(defensive))
        # the balance-heuristic bookkeeping: every proposal on the new points, the new one on all
        logq = _extend_log_proposals(logq, proposals, prop, Xn, log_fbar_n, lga_n, logG, log_fbar_all)
        X, Y, logf = torch.cat([X, Xn]), torch.cat([Y, Yn]), torch.cat([logf, logfn])
        log_fbar_all = torch.cat([log_fbar_all, log_fbar_n])
        counts.append(nb)
        proposals.append(prop)
        batch_var.append(var_k)
        prev_used, used = used, used + nb
        if wmode == "relative":
            w_dev = _relative(est_k).to(X.device)
        crit_prev = float((w_dev * sigma2).sum()) / (N - prev_used)
        crit_new = float((w_dev * var_k).sum()) / (N - used)
        trace.append(AdaptationStep(k, used, alpha.cpu(), beta.cpu(), var_k.cpu(), crit_new, sol.gap))
        sigma2 = var_k
        misses = misses + 1 if crit_prev <= crit_new else 0
        if misses >= patience:
            break

    # freeze the sampler with the smallest estimated criterion sum_j w_j sigma^2_{j,k}, the initial
    # one (fbar, no control variate) included; the choice uses adaptation data only, so the final
    # sample stays fresh and the estimate unbiased
    chosen = _chosen_iteration(batch_var, w_dev, final)
    prop = proposals[chosen]
    n_final = N - used
    seed = draw_seed(gen)

    tally = WeightTally()
    est, se, cov, n_final = _final_sample(prop, inp, phis, J, allow_negative, final, n_final, n_randomizations,
                                          seed, level, gen, tally)
    # phi_j = 0 at every final point: 0 +- 0 is not supported by the sample (signed integrands, e.g.
    # Sobol' numerators of an input the model ignores, can be exactly 0 and keep it)
    unseen_ess = None
    if not allow_negative:
        se, unseen_ess = flag_unseen(est, se, tally, n_final, float(level))
    if wmode == "relative":
        w_dev = _relative(est)
    if unseen_ess is None and bool((~torch.isfinite(se)).any()):
        warnings.warn("some standard errors are not finite", RuntimeWarning, stacklevel=2)
    return MultiExpectationResult(
        estimate=est.cpu(), stderr=se.cpu(), n_samples=used + n_final, n_adaptive=used, n_final=n_final,
        weights=w_dev.cpu(), trace=tuple(trace), covariance=None if cov is None else cov.cpu(),
        method="aiscv" if final == "iid" else "aiscv_rqmc", wall_time=time.perf_counter() - t0,
        level=float(level), names=tuple(names) if names is not None else None, chosen_iteration=chosen,
        df=None if final == "iid" else n_randomizations - 1, unseen_ess=unseen_ess,
    )
