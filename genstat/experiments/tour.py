"""The module tour of the quickstart: one small, exact-answer check per genstat module.

Each check calls the public library API on a problem whose answer is known in closed form (or by
a trusted reference) and returns a row:

- ``value``: what the check measured;
- ``truth``: the exact value of that quantity when there is one (NaN otherwise);
- ``bound``: the number the pass rule compares against;
- ``rule``: the pass rule in words, with ``bound`` spelled out;
- ``passed``, ``detail``, ``device`` (where it computed) and ``seconds``.

Every rule is a 5-standard-error bound or a margin far from the expected value, so a correct
library fails a check with probability well below 1e-3 per seed. Imports are local so that
``genstat list`` stays fast.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

__all__ = ["TOUR", "run_check"]


def _interpolants(seed: int, device: torch.device) -> dict:
    from genstat.datasets import GaussianMixture, eight_gaussians_mixture
    from genstat.interpolants import Interpolant, exact_fields, sample_ode
    from genstat.metrics import wasserstein2
    from genstat.mc import block_generator

    dt = torch.float64
    src = GaussianMixture(torch.ones(1, dtype=dt), torch.zeros(1, 2, dtype=dt), torch.eye(2, dtype=dt)[None])
    tgt = eight_gaussians_mixture(dtype=dt)
    src_d, tgt_d = src.to(device=device), tgt.to(device=device)
    fields = exact_fields(Interpolant("linear", gamma="brownian"), src_d, tgt_d)
    g = block_generator(seed, 0, device, stream=11)
    x0 = src_d.sample(1000, g)
    res = sample_ode(fields.velocity, x0, method="dopri5")
    w2 = wasserstein2(res.samples.cpu(), tgt_d.sample(1000, g).cpu(), y_ref=tgt_d.sample(1000, g).cpu())
    bound = 1.5 * float(w2.floor) + 0.05
    return dict(module="interpolants", check="exact-velocity ODE N(0,I) -> 8 gaussians: W2 to target samples",
                value=float(w2.estimate), truth=math.nan, bound=bound,
                rule=f"W2 < 1.5 x noise floor ({float(w2.floor):.3g}) + 0.05 = {bound:.3g}",
                passed=float(w2.estimate) < bound, detail=f"dopri5, {res.nfe} NFE", device=str(device))


def _lightsb(seed: int, device: torch.device) -> dict:
    from genstat.lightsb import LightSB, cbw2_uvp, random_gaussian_eot
    from genstat.mc import block_generator

    eot = random_gaussian_eot(4, 1.0, seed=seed)
    g_cpu = block_generator(seed, 0, "cpu", stream=12)  # the oracle samples on the CPU

    def source(n, g, d):
        return eot.sample_source(n, g_cpu).to(d)

    def target(n, g, d):
        return eot.sample_target(n, g_cpu).to(d)

    model = LightSB(4, 1, 1.0, dtype=torch.float64, device=device)
    model.fit(source, target, steps=300, batch_size=512, generator=block_generator(seed, 0, device, stream=12))
    r = cbw2_uvp(model.to("cpu"), eot, n_test=500, seed=seed)
    return dict(module="lightsb", check="LightSB (K=1, full) vs closed-form Gaussian EOT, d=4, eps=1: cBW2-UVP %",
                value=float(r.estimate), truth=0.0, bound=1.0,
                rule="cBW2-UVP < 1.0 % (0 is the exact plan; the paper's LightSB reaches ~0.3 %)",
                passed=float(r.estimate) < 1.0, detail="300 steps; evaluated on cpu", device=str(device))


def _gauge(seed: int, device: torch.device) -> dict:
    from genstat.gauge import linear_gauge_decomposition, nonconservativity
    from genstat.mc import block_generator

    g = block_generator(seed, 0, device, stream=13)
    d, kw = 6, dict(dtype=torch.float64, device=device)
    a = torch.randn(d, d, generator=g, **kw)
    sigma = a @ a.T / d + torch.eye(d, **kw)
    m = -torch.linalg.inv(sigma) + 0.3 * torch.randn(d, d, generator=g, **kw)
    dec = linear_gauge_decomposition(m, sigma)
    lyap = float((dec.Q @ sigma + sigma @ dec.Q - (m @ sigma + sigma @ m.T)).abs().max())
    x = torch.randn(256, d, generator=g, **kw)
    est = nonconservativity(lambda y: y @ m.T, x, n_probes=64, generator=g)
    exact = float(torch.linalg.norm(m - m.T) / (2 * torch.linalg.norm(m)))
    bound = 5 * float(est.stderr) + 1e-12
    ok = lyap < 1e-10 and abs(float(est.estimate) - exact) < bound
    return dict(module="gauge", check="non-conservativity rho of a linear field (JVP+VJP probes) vs exact",
                value=float(est.estimate), truth=exact, bound=bound,
                rule=f"|value - truth| < 5 stderr = {bound:.3g}, and Lyapunov residual < 1e-10",
                passed=ok, detail=f"stderr {float(est.stderr):.2g}; Lyapunov residual {lyap:.1e}", device=str(device))


def _importance(seed: int, device: torch.device) -> dict:
    from estimators.importance import aiscv, gaussian_moments
    from genstat.mc import block_generator

    # the Gaussian-moments problem is defined on the CPU (its input laws have no device option)
    prob = gaussian_moments()
    r = aiscv(prob.phis, prob.inputs, 20_000, generator=block_generator(seed, 0, "cpu", stream=14))
    # exact plain-MC variance: Var(X^2j) = (4j-1)!! - ((2j-1)!!)^2, so sum_j Var_j / I_j^2 / N
    dfact = lambda k: math.prod(range(k, 0, -2))  # noqa: E731
    mc_sum = sum(dfact(4 * j - 1) / dfact(2 * j - 1) ** 2 - 1 for j in range(1, 11)) / 20_000
    w = 1.0 / prob.truth**2
    ratio = mc_sum / float((w * r.stderr**2).sum())
    z = float(((r.estimate - prob.truth) / r.stderr).abs().max())
    return dict(module="importance", check="aISCV E[X^2j], j=1..10, N=2e4: sum w*Var, exact plain MC / aISCV",
                value=ratio, truth=math.nan, bound=1e3,
                rule="variance ratio > 1000, and every |estimate - truth| < 5 stderr",
                passed=ratio > 1e3 and z < 5,
                detail=f"max rel sd {float((r.stderr / r.estimate).max()):.3%}, max |z| {z:.2f}", device="cpu")


def _cumulants(seed: int, device: torch.device) -> dict:
    from estimators.cumulants import SignalConfig, size_power

    n_size = 1000
    size = size_power("c40_c42", SignalConfig(kind="noise"), snr_db=None, n_trials=n_size, seed=seed,
                      device=device)
    power = size_power("c40_c42", SignalConfig(kind="single_carrier", modulation="qpsk"), snr_db=0.0,
                       n_trials=500, seed=seed, device=device)
    s = float(size.rejections[0]) / size.n_trials
    p = float(power.rejections[0]) / power.n_trials
    bound = 5 * math.sqrt(0.05 * 0.95 / n_size)
    return dict(module="cumulants", check="chi2 cumulant Gaussianity test, N=1024: size on noise at alpha 0.05",
                value=s, truth=0.05, bound=bound,
                rule=f"|size - 0.05| < 5 binomial sd = {bound:.3g}, and power on QPSK 0 dB > 0.85",
                passed=abs(s - 0.05) < bound and p > 0.85, detail=f"power {p:.3f}", device=str(device))


def _td(seed: int, device: torch.device) -> dict:
    from estimators.td import GeneralizedGaussian, fit_ggd
    from genstat.mc import block_generator

    g = block_generator(seed, 0, device, stream=15)
    kw = dict(dtype=torch.float64, device=device)
    dist = GeneralizedGaussian(torch.tensor(0.0, **kw), torch.tensor(1.0, **kw), torch.tensor(1.5, **kw))
    x = dist.sample((100, 10_000), generator=g)
    fit = fit_ggd(x)
    beta = fit.beta.double().cpu()
    se = float(fit.beta_stderr.double().cpu().pow(2).mean().sqrt() / math.sqrt(100))
    bound = 5 * se
    return dict(module="td", check="batched GGD MLE, 100 groups x 1e4: mean beta-hat (true 1.5)",
                value=float(beta.mean()), truth=1.5, bound=bound,
                rule=f"|mean beta-hat - 1.5| < 5 stderr of the mean = {bound:.3g}",
                passed=abs(float(beta.mean()) - 1.5) < bound,
                detail=f"z {(float(beta.mean()) - 1.5) / se:+.2f}", device=str(device))


TOUR: dict[str, Callable[[int, torch.device], dict]] = {
    "interpolants": _interpolants,
    "lightsb": _lightsb,
    "gauge": _gauge,
    "importance": _importance,
    "cumulants": _cumulants,
    "td": _td,
}


def run_check(name: str, seed: int, device: torch.device) -> dict:
    """Run one tour check; failures are reported as rows (the tour never hides an exception)."""
    t0 = time.perf_counter()
    try:
        row = TOUR[name](seed, torch.device(device))
    except Exception as exc:  # reported in the table and the log, not swallowed
        row = dict(module=name, check="(error)", value=math.nan, truth=math.nan, bound=math.nan,
                   rule="runs without an exception", passed=False, detail=f"{type(exc).__name__}: {exc}",
                   device=str(device))
    row["seconds"] = time.perf_counter() - t0
    return row
