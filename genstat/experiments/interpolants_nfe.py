"""Experiment kind ``interpolants.nfe``: W2 against NFE for every ODE sampler (euler, heun, rk4,
Adams-Bashforth, the momentum samplers, dopri5 at several tolerances) on a learned 2-D field of one recipe
and on the exact field of a Gaussian-mixture pair, where the solver error itself is measured against a fine
RK4 solution."""
from __future__ import annotations

from typing import Annotated

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genstat.datasets import toy2d_sampler
from genstat.interpolants import Interpolant, sample_ode
from genstat.mc import block_generator
from genstat.metrics import wasserstein2

from .bounds import MAX_LIST, MAX_STEPS, Seed
from .interpolants import MAX_EVAL, MethodConfig, _build, _eval_sets, _train
from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["NFEParams", "run_nfe"]

# evaluations of the field per step once started, and the start-up evaluations (Heun steps of the multistep methods)
_NFE_PER_STEP = {"euler": (1, 0), "hb": (1, 0), "heun": (2, 0), "rk4": (4, 0), "ab2": (1, 1), "ghvb2": (1, 1),
                 "ab3": (1, 2), "ghvb3": (1, 2)}


class NFEParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    source: str = "8gaussians"
    target: str = "moons"
    method: MethodConfig = Field(default_factory=lambda: MethodConfig(
        coupling="ot", coupling_every=16, lr=1e-2, lr_schedule="cosine"))
    steps: int = Field(2000, ge=1, le=MAX_STEPS)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], max_length=MAX_LIST)
    n_eval: int = Field(2000, ge=10, le=MAX_EVAL)
    samplers: list[str] = Field(default_factory=lambda: list(_NFE_PER_STEP), max_length=MAX_LIST)
    nfe: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] = Field(default_factory=lambda: [4, 8, 16, 32, 64],
                                                                 min_length=1, max_length=MAX_LIST)
    momentum: float = Field(0.8, gt=0, le=1, description="beta of hb / ghvb2 / ghvb3")
    dopri5_tol: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [1e-1, 1e-2, 1e-3, 1e-4],
                                                                   max_length=MAX_LIST)
    exact_case: bool = Field(True, description="also the exact field N(0, I) -> 8-gaussians mixture")
    reference_steps: int = Field(1000, ge=10, le=MAX_STEPS, description="RK4 steps of the exact-case reference")

    @field_validator("samplers")
    @classmethod
    def _known_samplers(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in _NFE_PER_STEP]
        if bad:
            raise ValueError(f"samplers must be among {list(_NFE_PER_STEP)} (dopri5 is set by dopri5_tol), got {bad}")
        return v


def _curve(field, x0: torch.Tensor, p: NFEParams, score):
    """(sampler, nfe budget, result) for every fixed-step sampler whose budget fits, and dopri5 per tolerance;
    ``score(samples) -> dict`` gives the metrics."""
    rows = []
    for method in p.samplers:
        per, start = _NFE_PER_STEP[method]
        for budget in p.nfe:
            n_steps = (budget - start) // per
            if n_steps < 1:
                continue
            r = sample_ode(field, x0, steps=n_steps, method=method, momentum=p.momentum)
            rows.append(dict(sampler=method, budget=budget, nfe=r.nfe, **score(r.samples)))
    for tol in p.dopri5_tol:
        r = sample_ode(field, x0, method="dopri5", rtol=tol, atol=tol)
        rows.append(dict(sampler="dopri5", budget=r.nfe, nfe=r.nfe, tol=tol, **score(r.samples)))
    return rows


def _nfe_figure(run: Run, df: pd.DataFrame, metric: str, title: str, name: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    agg = df.groupby(["sampler", "nfe"], sort=False)[metric].mean().reset_index()
    for i, (sampler, g) in enumerate(agg.groupby("sampler", sort=False)):
        ax.loglog(g["nfe"], g[metric], marker="o", ms=3, lw=1, label=sampler, color=f"C{i}")
    if "floor" in df:
        ax.axhline(float(df["floor"].mean()), color="k", ls=":", lw=1, label="W2 noise floor")
    best = agg.loc[agg[metric].idxmin()]
    ax.set_xlabel("NFE")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}\nbest: {best['sampler']} at NFE {int(best['nfe'])}, {metric} {best[metric]:.3g}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    run.save_figure(fig, name)


@experiment("interpolants.nfe", NFEParams,
            help="W2 vs NFE of every ODE sampler (incl. Adams-Bashforth and momentum) on a learned and an exact field")
def run_nfe(p: NFEParams, run: Run) -> None:
    from genstat.datasets import GaussianMixture, eight_gaussians_mixture
    from genstat.interpolants import exact_fields

    m = p.method
    src, tgt = toy2d_sampler(p.source), toy2d_sampler(p.target)
    learned = []
    for seed in p.seeds:
        interp, model = _build(m, seed)
        rec = _train(m, interp, model, src, tgt, p.steps, seed, m.field)
        x0, y, y_ref = _eval_sets(p, seed)
        floor = wasserstein2(y, y_ref).estimate
        rows = _curve(model, x0, p, lambda xs, y=y: {"w2": wasserstein2(xs, y).estimate})
        for r in rows:
            r.update(case="learned", seed=seed, floor=floor, train_cpu_s=rec.cpu_time)
            run.add_results(r)
        learned += rows
        run.log(f"seed {seed}: " + ", ".join(f"{r['sampler']}@{r['nfe']} {r['w2']:.3f}" for r in rows
                                              if r["budget"] in (8, 16)))
    ldf = pd.DataFrame(learned)
    _nfe_figure(run, ldf, "w2", f"{p.source} -> {p.target}, learned field ({m.name}, {p.steps} steps, "
                f"{len(p.seeds)} seeds; momentum {p.momentum})", "w2_vs_nfe_learned")
    tables = {"learned": ldf}
    if p.exact_case:
        D64 = torch.float64
        gsrc = GaussianMixture(torch.ones(1, dtype=D64), torch.zeros(1, 2, dtype=D64), torch.ones(1, dtype=D64))
        gtgt = eight_gaussians_mixture(dtype=D64)
        F = exact_fields(Interpolant("linear", "none"), gsrc, gtgt)
        g = block_generator(run.seed, 1, stream=0)
        x0 = gsrc.sample(p.n_eval, g)
        y = gtgt.sample(p.n_eval, g)
        ref = sample_ode(F.velocity, x0, steps=p.reference_steps, method="rk4").samples
        floor = wasserstein2(gtgt.sample(p.n_eval, g), y).estimate

        def score(xs):
            return {"w2": wasserstein2(xs, y).estimate, "solver_rmse": float((xs - ref).pow(2).sum(1).mean().sqrt())}

        rows = _curve(F.velocity, x0, p, score)
        for r in rows:
            r.update(case="exact", seed=run.seed, floor=floor)
            run.add_results(r)
        edf = pd.DataFrame(rows)
        _nfe_figure(run, edf, "solver_rmse", "exact field N(0, I) -> 8-gaussians: RMS distance to a "
                    f"{p.reference_steps}-step RK4 solution", "solver_error_vs_nfe_exact")
        tables["exact"] = edf
    out = []
    for case, df in tables.items():
        metric = "solver_rmse" if case == "exact" else "w2"
        fixed = df[df["sampler"] != "dopri5"].pivot_table(index="sampler", columns="budget", values=metric,
                                                            aggfunc="mean", sort=False)
        fixed.columns = [f"NFE {c}" for c in fixed.columns]
        fixed.insert(0, "metric", metric)
        fixed.insert(0, "case", case)
        out.append(fixed.reset_index())
        dop = df[df["sampler"] == "dopri5"].groupby("tol").agg(nfe=("nfe", "mean"), value=(metric, "mean"))
        run.log(f"{case} dopri5: " + ", ".join(f"tol {t:g}: NFE {r.nfe:.0f} {metric} {r.value:.4f}"
                                                for t, r in dop.iterrows()))
    table = pd.concat(out, ignore_index=True)
    run.save_table(table, "nfe_table")
    run.save_text(markdown_table(table), "table.md")
