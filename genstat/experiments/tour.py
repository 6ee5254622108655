"""The module tour of the quickstart: one small, exact-answer check per genstat module.

Each check calls the public library API on a problem whose answer is known in closed form (or by
a trusted reference) and returns a row: module, check, value, reference, pass flag, seconds.
Imports are local so that ``genstat list`` stays fast.
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
    fields = exact_fields(Interpolant("linear", gamma="brownian"), src, tgt)
    g = block_generator(seed, 0, "cpu", stream=11)
    x0 = src.sample(1000, g)
    res = sample_ode(fields.velocity, x0, method="dopri5")
    w2 = wasserstein2(res.samples, tgt.sample(1000, g), y_ref=tgt.sample(1000, g))
    return dict(module="interpolants", check="exact-velocity ODE N(0,I) -> 8 gaussians: W2 vs noise floor",
                value=float(w2.estimate), reference=float(w2.floor),
                passed=float(w2.estimate) < 1.5 * float(w2.floor) + 0.05, detail=f"dopri5, {res.nfe} NFE")


def _lightsb(seed: int, device: torch.device) -> dict:
    from genstat.lightsb import LightSB, cbw2_uvp, random_gaussian_eot
    from genstat.mc import block_generator

    eot = random_gaussian_eot(4, 1.0, seed=seed)
    model = LightSB(4, 1, 1.0, dtype=torch.float64)
    model.fit(eot.sample_source, eot.sample_target, steps=300, batch_size=512,
              generator=block_generator(seed, 0, "cpu", stream=12))
    r = cbw2_uvp(model, eot, n_test=500, seed=seed)
    return dict(module="lightsb", check="LightSB (K=1, full) vs closed-form Gaussian EOT, d=4, eps=1: cBW2-UVP %",
                value=float(r.estimate), reference=0.3, passed=float(r.estimate) < 1.0, detail="300 steps")


def _gauge(seed: int, device: torch.device) -> dict:
    from genstat.gauge import linear_gauge_decomposition, nonconservativity
    from genstat.mc import block_generator

    g = block_generator(seed, 0, "cpu", stream=13)
    d = 6
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    sigma = a @ a.T / d + torch.eye(d, dtype=torch.float64)
    m = -torch.linalg.inv(sigma) + 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
    dec = linear_gauge_decomposition(m, sigma)
    lyap = dec.Q @ sigma + sigma @ dec.Q - (m @ sigma + sigma @ m.T)
    x = torch.randn(256, d, generator=g, dtype=torch.float64)
    est = nonconservativity(lambda y: y @ m.T, x, n_probes=64, generator=g)
    exact = float(torch.linalg.norm(m - m.T) / (2 * torch.linalg.norm(m)))
    ok = float(lyap.abs().max()) < 1e-10 and abs(float(est.estimate) - exact) < 5 * float(est.stderr) + 1e-12
    return dict(module="gauge", check="non-conservativity rho of a linear field (JVP+VJP probes) vs exact",
                value=float(est.estimate), reference=exact, passed=ok,
                detail=f"stderr {float(est.stderr):.2g}; Lyapunov residual {float(lyap.abs().max()):.1e}")


def _importance(seed: int, device: torch.device) -> dict:
    from estimators.importance import aiscv, gaussian_moments
    from genstat.mc import block_generator

    prob = gaussian_moments()
    r = aiscv(prob.phis, prob.inputs, 20_000, generator=block_generator(seed, 0, "cpu", stream=14))
    # exact plain-MC variance: Var(X^2j) = (4j-1)!! - ((2j-1)!!)^2, so sum_j Var_j / I_j^2 / N
    dfact = lambda k: math.prod(range(k, 0, -2))
    mc_sum = sum(dfact(4 * j - 1) / dfact(2 * j - 1) ** 2 - 1 for j in range(1, 11)) / 20_000
    w = 1.0 / prob.truth**2
    ratio = mc_sum / float((w * r.stderr**2).sum())
    z = ((r.estimate - prob.truth) / r.stderr).abs().max()
    return dict(module="importance", check="aISCV E[X^2j], j=1..10, N=2e4: sum w*Var, exact plain MC / aISCV",
                value=ratio, reference=1e3, passed=ratio > 1e3 and float(z) < 5,
                detail=f"max rel sd {float((r.stderr / r.estimate).max()):.3%}, max |z| {float(z):.2f}")


def _cumulants(seed: int, device: torch.device) -> dict:
    from estimators.cumulants import SignalConfig, size_power

    size = size_power("c40_c42", SignalConfig(kind="noise"), snr_db=None, n_trials=1000, seed=seed)
    power = size_power("c40_c42", SignalConfig(kind="single_carrier", modulation="qpsk"), snr_db=0.0,
                       n_trials=500, seed=seed)
    s = float(size.rejections[0]) / size.n_trials
    p = float(power.rejections[0]) / power.n_trials
    return dict(module="cumulants", check="chi2 cumulant Gaussianity test, N=1024: size on noise / power on QPSK 0 dB",
                value=s, reference=0.05, passed=0.025 < s < 0.08 and p > 0.85, detail=f"power {p:.3f}")


def _td(seed: int, device: torch.device) -> dict:
    from estimators.td import GeneralizedGaussian, fit_ggd
    from genstat.mc import block_generator

    g = block_generator(seed, 0, "cpu", stream=15)
    dist = GeneralizedGaussian(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64),
                               torch.tensor(1.5, dtype=torch.float64))
    x = dist.sample((100, 10_000), generator=g)
    fit = fit_ggd(x)
    z = float(((fit.beta - 1.5) / fit.beta_stderr).mean() * math.sqrt(100))
    return dict(module="td", check="batched GGD MLE, 100 groups x 1e4: mean beta-hat (true 1.5)",
                value=float(fit.beta.mean()), reference=1.5, passed=abs(z) < 5, detail=f"pooled z {z:+.2f}")


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
        row = TOUR[name](seed, device)
    except Exception as exc:  # reported in the table and the log, not swallowed
        row = dict(module=name, check="(error)", value=float("nan"), reference=float("nan"), passed=False,
                   detail=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - t0
    return row
