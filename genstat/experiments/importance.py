"""Experiment kinds of adaptive importance sampling with control variates (estimators.importance).

* ``importance.moments``: Gaussian moments E[X^{2j}], j = 1..J (paper Sec. 5.1): relative sd, bias,
  sum w Var against plain MC (closed form and replicated), time per run.
* ``importance.cantilever``: the cantilever beam with J input distributions (paper Sec. 5.2):
  sum Var of aISCV against separate MC, one reweighted mixture sample and separate adaptive IS.
* ``importance.sobol``: Sobol' indices of Ishigami (or the linear-Gaussian model) at equal model
  calls: aISCV (i.i.d. or RQMC final sample), i.i.d. pick-freeze, our QMC wrapper and a single
  ``scipy.stats.sobol_indices`` run (the anchor), over seeded replications.
* ``importance.bench``: (a) time per aISCV run on the Gaussian moments (anchor: the authors' code,
  8-12 s per run, REFERENCE.md §4); (b) the Sobol' comparison as sd ratios per index vs scipy.
* ``importance.rare_event``: rare-event probabilities with exact answers (p = 4e-5 by default) at a
  fixed budget: multilevel cross-entropy IS against aISCV (its honest no-hit bound) and plain MC,
  relative sd, coverage of the 95% interval and runs reported as 0 +- 0, over seeded replications.
"""
from __future__ import annotations

import math
import statistics
import time
import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from estimators.importance import (
    aiscv,
    cantilever_beam,
    cross_entropy_rare_event,
    gaussian_moments,
    is_separate,
    ishigami,
    ishigami_indices,
    linear_gaussian,
    mc_multi,
    mixture_reweighting,
    sobol_indices,
)
from genstat.mc import block_generator

from .bounds import MAX_LIST, MAX_REPEATS, MAX_SAMPLES, MAX_WIDTH, Seed
from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["MomentsParams", "CantileverParams", "SobolParams", "BenchParams", "RareEventParams"]

AUTHORS_SECONDS_PER_RUN = (8.0, 12.0)  # REFERENCE.md §4, measured on the 2-core machine


def _dfact(k: int) -> float:
    return float(math.prod(range(1, k, 2)))  # (k-1)!!


# --------------------------------------------------------------------------- Gaussian moments
class MomentsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    J: int = Field(10, ge=1, le=15)
    budget: int = Field(20_000, ge=200, le=MAX_SAMPLES)
    reps: int = Field(50, ge=2, le=MAX_REPEATS)
    family: Literal["gaussian", "mixture2"] = "gaussian"
    defensive: float = Field(0.0, ge=0, lt=1)
    weights: Literal["exact", "relative"] = "exact"
    patience: int = Field(2, ge=1, le=MAX_REPEATS)


def _moments_runs(p: MomentsParams, run: Run, stream: int = 0):
    prob = gaussian_moments(p.J)
    w = prob.weights if p.weights == "exact" else "relative"
    est, se, times, n_ad = [], [], [], []
    for rep in run.progress(range(p.reps), total=p.reps, desc="aiscv"):
        t0 = time.perf_counter()
        r = aiscv(prob.phis, prob.inputs, p.budget, weights=w, family=p.family, defensive=p.defensive,
                  patience=p.patience, generator=block_generator(run.seed, rep, stream=stream))
        times.append(time.perf_counter() - t0)
        est.append(r.estimate)
        se.append(r.stderr)
        n_ad.append(r.n_adaptive)
        run.metric(rep=rep, wall_time=times[-1], n_adaptive=r.n_adaptive, chosen=r.chosen_iteration)
    return prob, torch.stack(est), torch.stack(se), times, n_ad


@experiment("importance.moments", MomentsParams, help="aISCV on Gaussian moments E[X^2j] vs plain MC (paper 5.1)")
def run_moments(p: MomentsParams, run: Run) -> None:
    prob, est, se, times, n_ad = _moments_runs(p, run)
    truth, w = prob.truth, prob.weights
    mc_var = torch.tensor([(_dfact(4 * j) - _dfact(2 * j) ** 2) / p.budget for j in range(1, p.J + 1)],
                          dtype=torch.float64)
    rows = []
    for j in range(p.J):
        sd = float(est[:, j].std())
        rows.append({"expectation": prob.names[j], "truth": float(truth[j]), "mean": float(est[:, j].mean()),
                     "rel_sd": sd / float(truth[j]), "mean_rel_stderr": float(se[:, j].mean() / truth[j]),
                     "bias_z": float((est[:, j].mean() - truth[j]) / (sd / math.sqrt(p.reps))),
                     "coverage95": float(((est[:, j] - truth[j]).abs() <= 1.96 * se[:, j]).double().mean()),
                     "mc_rel_sd": math.sqrt(float(mc_var[j])) / float(truth[j])})
    table = pd.DataFrame(rows)
    run.add_results(table)
    ours = float((w * est.var(0)).sum())
    mc = float((w * mc_var).sum())
    summary = pd.DataFrame([{"method": f"aiscv (patience {p.patience})", "sum_w_var": ours, "ratio_mc_over_method": mc / ours,
                             "median_seconds": statistics.median(times), "mean_n_adaptive": float(np.mean(n_ad)),
                             "reps": p.reps},
                            {"method": "mc (exact variance)", "sum_w_var": mc, "ratio_mc_over_method": 1.0,
                             "median_seconds": float("nan"), "mean_n_adaptive": 0.0, "reps": 0}])
    run.save_table(summary, "summary")
    run.save_text(markdown_table(table) + "\n" + markdown_table(summary), "table.md")
    run.log(markdown_table(table) + "\n" + markdown_table(summary))


# --------------------------------------------------------------------------- cantilever beam
class CantileverParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    J: int = Field(100, ge=2, le=MAX_WIDTH)
    budget: int = Field(20_000, ge=1000, le=MAX_SAMPLES)
    reps: int = Field(20, ge=2, le=MAX_REPEATS)
    lhs_seed: Seed = 0
    patience: int = Field(2, ge=1, le=MAX_REPEATS)
    methods: list[Literal["aiscv", "mc_multi", "mixture_reweighting", "is_separate"]] = Field(
        default_factory=lambda: ["aiscv", "mc_multi", "mixture_reweighting", "is_separate"], max_length=MAX_LIST)


_METHODS = {"aiscv": aiscv, "mc_multi": mc_multi, "mixture_reweighting": mixture_reweighting,
            "is_separate": is_separate}


@experiment("importance.cantilever", CantileverParams, help="aISCV on the cantilever beam, J input laws (paper 5.2)")
def run_cantilever(p: CantileverParams, run: Run) -> None:
    prob = cantilever_beam(p.J, seed=p.lhs_seed)
    rows = []
    for k, name in enumerate(p.methods):
        fn = _METHODS[name]
        kw = {"weights": "absolute", "patience": p.patience} if name == "aiscv" else {}
        est, se, times = [], [], []
        for rep in run.progress(range(p.reps), total=p.reps, desc=name):
            t0 = time.perf_counter()
            r = fn(prob.phis, prob.inputs, p.budget, generator=block_generator(run.seed, rep, stream=k), **kw)
            times.append(time.perf_counter() - t0)
            est.append(r.estimate)
            se.append(r.stderr)
        est, se = torch.stack(est), torch.stack(se)
        rows.append({"method": name, "sum_var_reps": float(est.var(0).sum()),
                     "sum_var_reported": float((se**2).mean(0).sum()), "median_seconds": statistics.median(times),
                     "reps": p.reps, "_mean": est.mean(0)})
        run.log(f"{name}: sum Var {rows[-1]['sum_var_reps']:.3e} (reported {rows[-1]['sum_var_reported']:.3e}), "
                f"{rows[-1]['median_seconds']:.2f} s/run")
    ref = next((r for r in rows if r["method"] == "aiscv"), rows[0])
    for r in rows:
        r["ratio_over_aiscv"] = r["sum_var_reps"] / ref["sum_var_reps"]
        r["ratio_over_aiscv_reported"] = r["sum_var_reported"] / ref["sum_var_reported"]
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "_mean"} for r in rows])
    run.add_results(table)
    run.save_text(markdown_table(table), "table.md")
    run.log(markdown_table(table))


# --------------------------------------------------------------------------- Sobol' indices
class SobolParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: Literal["ishigami", "linear"] = "ishigami"
    budget: int = Field(10_240, ge=200, le=MAX_SAMPLES)
    reps: int = Field(30, ge=2, le=MAX_REPEATS)
    methods: list[Literal["saltelli", "aiscv", "aiscv_rqmc", "qmc", "scipy", "salib"]] = Field(
        default_factory=lambda: ["saltelli", "aiscv", "aiscv_rqmc", "qmc", "scipy"], max_length=MAX_LIST)


def _sobol_problem(model: str):
    if model == "ishigami":
        pi = torch.tensor(math.pi, dtype=torch.float64)
        s1, st = ishigami_indices()
        return ishigami, [torch.distributions.Uniform(-pi, pi)] * 3, s1, st
    f, inputs, s = linear_gaussian([1.0, -2.0, 0.5], [1.0, 0.0, 3.0], [1.0, 0.5, 2.0])
    return f, inputs, s, s


def _scipy_single(model, inputs, budget: int, d: int, seed: int, salib: bool = False):
    """One scipy.stats.sobol_indices run (or SALib's Saltelli sampler) with n = 2^k, n (d+2) <= budget."""
    n = 2 ** int(math.floor(math.log2(budget // (d + 2))))
    ppf = [lambda v, m=m: m.icdf(torch.as_tensor(v, dtype=torch.float64)) for m in inputs]

    def to_x(u: np.ndarray) -> torch.Tensor:  # u: (n, d) uniforms
        return torch.stack([ppf[i](u[:, i]) for i in range(d)], 1)

    if not salib:
        res = stats.sobol_indices(func=lambda x: model(to_x(x.T)).numpy()[None], n=n,
                                  dists=[stats.uniform()] * d, rng=np.random.default_rng(seed))
        return torch.as_tensor(np.ravel(res.first_order)), torch.as_tensor(np.ravel(res.total_order)), n * (d + 2)
    from SALib.analyze import sobol as sa_analyze  # optional (pyproject extra "bench")
    from SALib.sample import sobol as sa_sample

    problem = {"num_vars": d, "names": [f"x{i}" for i in range(d)], "bounds": [[0.0, 1.0]] * d}
    u = sa_sample.sample(problem, n, calc_second_order=False, seed=seed)
    y = model(to_x(u)).numpy()
    res = sa_analyze.analyze(problem, y, calc_second_order=False, seed=seed)
    return torch.as_tensor(res["S1"]), torch.as_tensor(res["ST"]), u.shape[0]


def _sobol_table(p: SobolParams, run: Run) -> pd.DataFrame:
    model, inputs, s1, st = _sobol_problem(p.model)
    d = len(inputs)
    rows = []
    for k, method in enumerate(p.methods):
        S, T, times, calls = [], [], [], 0
        for rep in run.progress(range(p.reps), total=p.reps, desc=method):
            g = block_generator(run.seed, rep, stream=100 + k)
            t0 = time.perf_counter()
            if method in ("scipy", "salib"):
                try:
                    a, b, calls = _scipy_single(model, inputs, p.budget, d, int(torch.randint(0, 2**31, (1,), generator=g)),
                                                salib=method == "salib")
                except ImportError:
                    run.log("SALib is not installed: skipped")
                    break
            else:
                meth, final = ("aiscv", "rqmc") if method == "aiscv_rqmc" else (method, "iid")
                r = sobol_indices(model, inputs, p.budget, method=meth, final=final, generator=g)
                a, b, calls = r.first_order, r.total, r.n_calls
            times.append(time.perf_counter() - t0)
            S.append(a)
            T.append(b)
        if not S:
            continue
        S, T = torch.stack(S), torch.stack(T)
        for kind, E, truth in (("S1", S, s1), ("ST", T, st)):
            for i in range(d):
                rows.append({"method": method, "index": f"{kind}_{i + 1}", "truth": float(truth[i]),
                             "mean": float(E[:, i].mean()), "sd": float(E[:, i].std()),
                             "mean_abs_error": float((E[:, i] - truth[i]).abs().mean()), "n_calls": calls,
                             "median_seconds": statistics.median(times), "reps": len(times)})
        run.add_results(rows[-2 * d:])
    return pd.DataFrame(rows)


@experiment("importance.sobol", SobolParams, help="Sobol' indices (Ishigami/linear) at equal calls: aISCV vs MC vs QMC")
def run_sobol(p: SobolParams, run: Run) -> None:
    table = _sobol_table(p, run)
    run.save_text(markdown_table(table), "table.md")
    run.log(markdown_table(table))


# --------------------------------------------------------------------------- benchmark
class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    speed_reps: int = Field(20, ge=1, le=MAX_REPEATS)
    moments_budget: int = Field(20_000, ge=200, le=MAX_SAMPLES)
    sobol: SobolParams = Field(default_factory=lambda: SobolParams(
        methods=["aiscv", "aiscv_rqmc", "saltelli", "qmc", "scipy", "salib"]))


@experiment("importance.bench", BenchParams, help="aISCV speed vs the authors' code; Sobol' sd ratios vs scipy QMC")
def run_bench(p: BenchParams, run: Run) -> None:
    mp = MomentsParams(budget=p.moments_budget, reps=max(p.speed_reps, 2))
    _, _, _, times, _ = _moments_runs(mp, run, stream=7)
    med = statistics.median(times)
    speed = pd.DataFrame([{"case": "gaussian_moments_J10", "budget": p.moments_budget, "median_seconds": med,
                           "authors_seconds_low": AUTHORS_SECONDS_PER_RUN[0],
                           "authors_seconds_high": AUTHORS_SECONDS_PER_RUN[1],
                           "speedup_low": AUTHORS_SECONDS_PER_RUN[0] / med, "target_seconds": 0.5}])
    run.add_results(speed.assign(part="speed"))
    table = _sobol_table(p.sobol, run)
    anchor = table[table.method == "scipy"].set_index("index")
    ratios = []
    for method in table.method.unique():
        sub = table[table.method == method].set_index("index")
        for idx in sub.index:
            ratios.append({"method": method, "index": idx, "sd": sub.loc[idx, "sd"],
                           "sd_ratio_vs_scipy": sub.loc[idx, "sd"] / anchor.loc[idx, "sd"],
                           "mae_ratio_vs_scipy": sub.loc[idx, "mean_abs_error"] / anchor.loc[idx, "mean_abs_error"]})
    ratios = pd.DataFrame(ratios)
    run.save_table(ratios, "sobol_ratios")
    md = markdown_table(speed) + "\n" + markdown_table(ratios)
    run.save_text(md, "table.md")
    run.log(md)


# --------------------------------------------------------------------------- rare events
class RareEventParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    p: float = Field(4e-5, gt=0, lt=0.5)
    budget: int = Field(10_000, ge=200, le=MAX_SAMPLES)
    reps: int = Field(100, ge=2, le=MAX_REPEATS)
    problems: list[Literal["linear_d2", "sphere_d3", "linear_d10"]] = Field(
        default_factory=lambda: ["linear_d2", "sphere_d3", "linear_d10"], max_length=MAX_LIST)
    methods: list[Literal["cross_entropy", "cross_entropy_nodefense", "aiscv", "mc"]] = Field(
        default_factory=lambda: ["cross_entropy", "aiscv", "mc"], max_length=MAX_LIST)
    rho: float = Field(0.1, gt=0, le=0.5)
    defensive: float = Field(0.1, ge=0, lt=1)


def _rare_problem(name: str, p: float):
    """(g, inputs, threshold, exact p): P(sum X_i >= sqrt(d) Phi^{-1}(1 - p)) = p, or
    P(||X||^2 >= chi2_d^{-1}(1 - p)) = p, X ~ N(0, I_d)."""
    kind, d = name.split("_d")
    d = int(d)
    f = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
    if kind == "linear":
        return (lambda x: x.sum(1)), f, math.sqrt(d) * float(stats.norm.isf(p)), p
    c = float(stats.chi2.isf(p, d))
    return (lambda x: (x**2).sum(1)), f, c, float(stats.chi2.sf(c, d))


@experiment("importance.rare_event", RareEventParams,
            help="rare-event probabilities (p = 4e-5, 1e4 calls): multilevel cross-entropy IS vs aISCV and MC")
def run_rare_event(p: RareEventParams, run: Run) -> None:
    rows = []
    for i, name in enumerate(p.problems):
        g, f, t, truth = _rare_problem(name, p.p)
        for k, method in enumerate(p.methods):
            if method == "mc":  # exact: the binomial relative sd, no replications needed
                rows.append({"problem": name, "method": "mc (exact)", "truth": truth, "mean": truth,
                             "rel_sd": math.sqrt((1 - truth) / (truth * p.budget)), "mean_rel_stderr": float("nan"),
                             "coverage95": float("nan"), "zero_pm_zero": float("nan"), "no_hit": float("nan"),
                             "mean_levels": 0.0, "reached": float("nan"), "n_calls": p.budget,
                             "median_seconds": float("nan"), "reps": 0})
                continue
            est, se, cover, levels, reached, times, no_hit, zero = [], [], 0, [], 0, [], 0, 0
            for rep in run.progress(range(p.reps), total=p.reps, desc=f"{name} {method}"):
                gen = block_generator(run.seed, rep, stream=100 * i + k)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    if method == "aiscv":
                        r = aiscv(lambda x: (g(x) >= t).to(torch.float64)[:, None], f, p.budget, generator=gen)
                        e, s, hits = float(r.estimate[0]), float(r.stderr[0]), r.unseen_ess is None
                        lo, hi = (float(v[0]) for v in r.confidence_interval())
                        n_lev, ok = 0, True
                    else:
                        r = cross_entropy_rare_event(
                            g, f, t, p.budget, rho=p.rho, generator=gen,
                            defensive=0.0 if method == "cross_entropy_nodefense" else p.defensive)
                        e, s, hits = float(r.estimate), float(r.stderr), r.n_hits > 0
                        lo, hi = (float(v) for v in r.confidence_interval())
                        n_lev, ok = r.n_levels, r.reached
                times.append(time.perf_counter() - t0)
                est.append(e)
                se.append(s)
                cover += int(lo <= truth <= hi)
                no_hit += int(not hits)
                zero += int(e == 0.0 and s == 0.0)
                levels.append(n_lev)
                reached += int(ok)
                run.metric(rep=rep, problem=name, method=method, estimate=e, stderr=s)
            est_t = torch.tensor(est, dtype=torch.float64)
            se_t = torch.tensor(se, dtype=torch.float64)
            rows.append({"problem": name, "method": method, "truth": truth, "mean": float(est_t.mean()),
                         "rel_sd": float(est_t.std()) / truth, "mean_rel_stderr": float(se_t.nanmean()) / truth,
                         "coverage95": cover / p.reps, "zero_pm_zero": zero, "no_hit": no_hit,
                         "mean_levels": float(np.mean(levels)), "reached": reached / p.reps, "n_calls": p.budget,
                         "median_seconds": statistics.median(times), "reps": p.reps})
            run.log(f"{name} {method}: rel sd {rows[-1]['rel_sd']:.3g}, coverage {rows[-1]['coverage95']:.2f}, "
                    f"{no_hit} runs without a hit")
    table = pd.DataFrame(rows)
    run.add_results(table)
    run.save_text(markdown_table(table), "table.md")
    run.log(markdown_table(table))
