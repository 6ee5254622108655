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
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from estimators.importance import (
    aiscv,
    cantilever_beam,
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

__all__ = ["MomentsParams", "CantileverParams", "SobolParams", "BenchParams"]

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
