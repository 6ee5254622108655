"""Experiment kinds of the Light Schroedinger Bridge module (genstat.lightsb).

- ``lightsb.gaussian``: LightSB against the closed-form Gaussian EOT oracle.
- ``lightsb.benchmark``: the Gushchin et al. EOT benchmark grid (d x eps), several model configs,
  an anchor configuration and POT Sinkhorn in the same run, with ratios.
"""
from __future__ import annotations

import time
from typing import Annotated, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from .bounds import MAX_BATCH, MAX_LIST, MAX_LR, MAX_SAMPLES, MAX_SCALE, MAX_STEPS, MAX_WIDTH, Dim, Epsilon, Seed
from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["ModelSpec", "GaussianParams", "BenchmarkParams", "BenchParams", "PAPER_CBW2_UVP"]

#: LightSB's cBW2-UVP (%) in Korotin et al. (ICLR 2024), Table 2, keyed by (eps, d)
PAPER_CBW2_UVP = {
    (0.1, 2): 0.03, (0.1, 16): 0.08, (0.1, 64): 0.28, (0.1, 128): 0.60,
    (1.0, 2): 0.05, (1.0, 16): 0.09, (1.0, 64): 0.24, (1.0, 128): 0.62,
    (10.0, 2): 0.07, (10.0, 16): 0.11, (10.0, 64): 0.21, (10.0, 128): 0.37,
}


#: Sinkhorn baseline samples: POT holds an n x n cost matrix
MAX_SINKHORN = 2**16

LR = Annotated[float, Field(gt=0, le=MAX_LR)]


class ModelSpec(BaseModel):
    """One LightSB training configuration."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = "lightsb-full-k10"
    n_potentials: int = Field(10, ge=1, le=MAX_WIDTH)
    covariance: Literal["full", "diagonal"] = "full"
    steps: int = Field(2000, ge=1, le=MAX_STEPS)
    batch_size: int = Field(1024, ge=1, le=MAX_BATCH)
    lr: LR | Annotated[dict[Epsilon, LR], Field(max_length=MAX_LIST)] | None = Field(
        None, description="None: 3e-2 min(1, eps); or {eps: lr}")
    init: Literal["potential", "reference"] = "potential"
    spread: float = Field(2.0, gt=0, le=MAX_SCALE)
    init_scale: float = Field(1.0, gt=0, le=MAX_SCALE)
    dtype: Literal["float32", "float64"] = "float32"
    min_lr_ratio: float = Field(1e-2, ge=0, le=1, description="cosine floor (1: constant lr, as the paper's code)")
    warmup: float = Field(0.05, ge=0, lt=1)
    lower_lr_ratio: float | None = Field(None, gt=0, le=MAX_SCALE,
                                         description="lr ratio of the off-diagonal Cholesky entries (None: 1/sqrt(d))")
    dims: Annotated[list[Dim], Field(max_length=MAX_LIST)] | None = Field(
        None, description="run this model only for these d (None: all)")

    def lr_for(self, eps: float) -> float | None:
        if isinstance(self.lr, dict):
            for key, val in self.lr.items():
                if abs(float(key) - eps) <= 1e-9 * max(1.0, eps):
                    return float(val)
            raise ValueError(f"model {self.name!r}: lr has no entry for eps={eps}")
        return self.lr


class GaussianParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    dims: list[Dim] = Field([2, 16], max_length=MAX_LIST)
    epsilons: list[Epsilon] = Field([0.1, 1.0], max_length=MAX_LIST)
    pair_seed: Seed = 0
    models: list[ModelSpec] = Field([ModelSpec(name="lightsb-full-k1", n_potentials=1, steps=1000, batch_size=1024,
                                               dtype="float64")], max_length=MAX_LIST)
    anchor: str | None = None
    sinkhorn_samples: int = Field(0, ge=0, le=MAX_SINKHORN,
                                  description="POT Sinkhorn baseline on this many samples (0: off)")
    sinkhorn_dims: Annotated[list[Dim], Field(max_length=MAX_LIST)] | None = Field(
        None, description="run Sinkhorn only for these d (None: all)")
    sinkhorn_max_iter: int = Field(1000, ge=1, le=MAX_STEPS)
    n_train: int = Field(0, ge=0, le=MAX_BATCH, description="fixed training pool size (0: fresh samples every step)")
    n_test: int = Field(1000, ge=2, le=MAX_SAMPLES)
    protocol: Literal["exact", "paper"] = Field(
        "exact", description="cbw2_uvp column: exact moments, or the paper's sampling protocol (with its floor)")
    n_per_x: int = Field(1000, ge=2, le=MAX_SAMPLES, description="model samples per test point (protocol: paper)")
    plot: bool = True


class BenchmarkParams(GaussianParams):
    dims: list[Dim] = Field([2, 16, 64, 128], max_length=MAX_LIST)
    epsilons: list[Epsilon] = Field([0.1, 1.0, 10.0], max_length=MAX_LIST)
    n_input_components: int = Field(3, ge=1, le=MAX_WIDTH)
    n_potential_components: int = Field(5, ge=1, le=MAX_WIDTH)
    benchmark_seed: Seed = 0
    construction: Literal["genstat", "authors"] = Field(
        "genstat", description="EOTBenchmark construction: genstat's own, or the reconstruction of the authors'")
    models: list[ModelSpec] = Field([ModelSpec(name="lightsb-full-k10")], max_length=MAX_LIST)
    n_train: int = Field(2**18, ge=0, le=MAX_BATCH)


def _train_one(spec: ModelSpec, pair, d: int, eps: float, data, gen: torch.Generator):
    from genstat.lightsb import LightSB

    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    model = LightSB(d, spec.n_potentials, eps, covariance=spec.covariance, init_scale=spec.init_scale, dtype=dtype)
    if data is None:
        init_y = pair.sample_target(4096, gen)
        source, target = pair.sample_source, pair.sample_target
    else:
        source, target = data
        init_y = target[:4096]
    model.init_from(init_y.to(dtype), generator=gen, method=spec.init, spread=spec.spread)
    start = time.perf_counter()
    fit = model.fit(source, target, steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr_for(eps),
                    min_lr_ratio=spec.min_lr_ratio, warmup=spec.warmup, lower_lr_ratio=spec.lower_lr_ratio,
                    generator=gen)
    return model, fit, time.perf_counter() - start


def _score(plan, pair, x_test, p: GaussianParams, run: Run) -> dict:
    """The ``cbw2_uvp`` columns: the chosen protocol (with its floor) and always the exact moments."""
    from genstat.lightsb import cbw2_uvp

    exact = cbw2_uvp(plan, pair, x_test=x_test)
    res = exact if p.protocol == "exact" else cbw2_uvp(plan, pair, x_test=x_test, protocol="paper",
                                                       n_per_x=p.n_per_x, seed=run.seed)
    return {"cbw2_uvp": res.estimate, "stderr": res.stderr, "protocol": res.protocol, "floor": res.floor,
            "floor_stderr": res.floor_stderr, "cbw2_uvp_exact": exact.estimate, "mean_part": res.mean_error,
            "cov_error": res.covariance_error}


def _run_cell(p: GaussianParams, run: Run, task: str, pair, d: int, eps: float, paper: float | None) -> list[dict]:
    from genstat.lightsb import SinkhornPlan
    from genstat.mc import block_generator

    data = None
    if p.n_train > 0:
        g = block_generator(run.seed, d, stream=int(eps * 1000) + 1)
        data = (pair.sample_source(p.n_train, g).float(), pair.sample_target(p.n_train, g).float())
    x_test = pair.sample_source(p.n_test, block_generator(run.seed + 1, d, stream=3))
    rows, models = [], {}
    for i, spec in enumerate(p.models):
        if spec.dims is not None and d not in spec.dims:
            continue
        gen = block_generator(run.seed, 100 + i, stream=d)
        cell_data = None if data is None else tuple(t.to(getattr(torch, spec.dtype)) for t in data)
        model, fit, wall = _train_one(spec, pair, d, eps, cell_data, gen)
        score = _score(model, pair, x_test, p, run)
        models[spec.name] = model
        row = {"task": task, "d": d, "epsilon": eps, "method": spec.name, "K": spec.n_potentials,
               "covariance": spec.covariance, "steps": spec.steps, "batch_size": spec.batch_size,
               **score, "wall_s": wall, "final_loss": float(fit.losses[-50:].mean())}
        if hasattr(pair, "cross_covariance") and spec.n_potentials == 1:
            C = pair.A @ model.S()[0].detach().to(torch.float64)
            row["cross_cov_error"] = float(torch.linalg.matrix_norm(C - pair.cross_covariance)
                                           / torch.linalg.matrix_norm(pair.cross_covariance))
        floor = f", floor {score['floor']:.4f}%" if p.protocol == "paper" else ""
        run.log(f"[{task}] d={d} eps={eps} {spec.name}: cBW2-UVP ({p.protocol}) {score['cbw2_uvp']:.4f}% "
                f"(+-{score['stderr']:.4f}){floor}, {wall:.1f}s")
        run.metric(task=task, d=d, epsilon=eps, method=spec.name, cbw2_uvp=score["cbw2_uvp"], wall_s=wall)
        rows.append(row)
    if p.sinkhorn_samples > 0 and (p.sinkhorn_dims is None or d in p.sinkhorn_dims):
        g = block_generator(run.seed, 7, stream=d)
        start = time.perf_counter()
        plan = SinkhornPlan(pair.sample_source(p.sinkhorn_samples, g), pair.sample_target(p.sinkhorn_samples, g), eps,
                            max_iter=p.sinkhorn_max_iter)
        wall = time.perf_counter() - start
        score = _score(plan, pair, x_test, p, run)
        run.log(f"[{task}] d={d} eps={eps} sinkhorn-{p.sinkhorn_samples}: cBW2-UVP ({p.protocol}) "
                f"{score['cbw2_uvp']:.3f}%")
        rows.append({"task": task, "d": d, "epsilon": eps, "method": f"pot-sinkhorn-{p.sinkhorn_samples}",
                     **score, "wall_s": wall, "steps": plan.n_iter})
    anchor = next((r for r in rows if r["method"] == p.anchor), None)
    for r in rows:
        r["paper_lightsb"] = paper
        r["ratio_to_paper"] = r["cbw2_uvp"] / paper if paper else None
        r["ratio_to_anchor"] = r["cbw2_uvp"] / anchor["cbw2_uvp"] if anchor else None
        r["time_ratio_to_anchor"] = r["wall_s"] / anchor["wall_s"] if anchor else None
    if p.plot and d == 2 and models:
        name, model = next(iter(models.items()))
        run.save_figure(_plot_plan(model, pair, eps, name), f"{task}_plan_d2_eps{eps:g}_{name}")
    return rows


def _plot_plan(model, pair, eps: float, name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genstat.mc import block_generator

    g = block_generator(0, 0, stream=99)
    x = pair.sample_source(600, g).to(model.r.dtype)
    y_true = pair.sample_target(600, g)
    with torch.no_grad():
        y_hat = model.sample(x, generator=g)[:, 0]
        paths = model.sample_trajectory(x[:12], 50, generator=g)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    ax = axes[0]
    ax.scatter(*x.T.numpy(), s=3, alpha=0.4, label="x ~ P0")
    ax.scatter(*y_true.T.numpy(), s=3, alpha=0.4, label="y ~ P1 (truth)")
    ax.scatter(*y_hat.T.numpy(), s=3, alpha=0.4, label="y ~ pi_hat(.|x)")
    for i in range(30):
        ax.plot([x[i, 0], y_hat[i, 0]], [x[i, 1], y_hat[i, 1]], color="k", lw=0.4, alpha=0.5)
    ax.set_title(f"plan, eps={eps:g} ({name})")
    ax.legend(markerscale=4, fontsize=7)
    ax = axes[1]
    for i in range(paths.shape[1]):
        ax.plot(paths[:, i, 0].numpy(), paths[:, i, 1].numpy(), lw=0.8)
        ax.scatter(paths[0, i, 0], paths[0, i, 1], color="k", s=8)
        ax.scatter(paths[-1, i, 0], paths[-1, i, 1], color="r", s=8)
    ax.set_title("SB trajectories (exact bridge sampling)")
    return fig


def _summary(run: Run) -> None:
    df = run.results
    if df.empty:
        return
    if "protocol" in df and (df["protocol"] == "paper").any():
        # the true plan's score under the same protocol, one row per task beside the methods
        floors = df[df["protocol"] == "paper"].groupby(["task", "epsilon", "d"], as_index=False)["floor"].first()
        df = pd.concat([df, floors.rename(columns={"floor": "cbw2_uvp"}).assign(method="floor (true plan)")])
    table = df.pivot_table(index=["task", "method"], columns=["epsilon", "d"], values="cbw2_uvp")
    run.save_text(markdown_table(table, ".4f", index=True), "table.md")
    run.log(table.to_string(float_format=lambda v: f"{v:.4f}"))


@experiment("lightsb.gaussian", GaussianParams, help="LightSB vs the closed-form Gaussian EOT oracle (cBW2-UVP)")
def run_gaussian(p: GaussianParams, run: Run) -> None:
    from genstat.lightsb import random_gaussian_eot

    for d in p.dims:
        for eps in p.epsilons:
            pair = random_gaussian_eot(d, eps, seed=p.pair_seed)
            run.add_results(_run_cell(p, run, "gaussian", pair, d, eps, None))
    _summary(run)


@experiment("lightsb.benchmark", BenchmarkParams,
            help="LightSB on the Gushchin et al. EOT benchmark grid, with anchor and POT Sinkhorn rows")
def run_benchmark(p: BenchmarkParams, run: Run) -> None:
    from genstat.lightsb import EOTBenchmark

    for d in p.dims:
        for eps in p.epsilons:
            pair = EOTBenchmark(d, eps, n_input_components=p.n_input_components,
                                n_potential_components=p.n_potential_components, seed=p.benchmark_seed,
                                construction=p.construction)
            run.add_results(_run_cell(p, run, "benchmark", pair, d, eps, PAPER_CBW2_UVP.get((float(eps), d))))
    _summary(run)


class BenchParams(BaseModel):
    """``lightsb.bench``: the Gaussian section and the benchmark section in one run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    gaussian: GaussianParams | None = None
    benchmark: BenchmarkParams | None = None


@experiment("lightsb.bench", BenchParams,
            help="LightSB benchmark: Gaussian pairs and the EOT benchmark vs an anchor config, Sinkhorn, the paper")
def run_bench(p: BenchParams, run: Run) -> None:
    if p.gaussian is not None:
        for d in p.gaussian.dims:
            for eps in p.gaussian.epsilons:
                from genstat.lightsb import random_gaussian_eot

                pair = random_gaussian_eot(d, eps, seed=p.gaussian.pair_seed)
                run.add_results(_run_cell(p.gaussian, run, "gaussian", pair, d, eps, None))
    if p.benchmark is not None:
        run_benchmark(p.benchmark, run)
        return
    _summary(run)
