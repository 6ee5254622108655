"""Experiment kinds of the stochastic-interpolants module.

- ``interpolants.toy2d``: train one method on a 2-D toy pair, sample with several ODE/SDE samplers,
  report W2 ± its noise floor, NFE and training time; figures of samples and trajectories.
- ``interpolants.bench``: several methods (the I-CFM / OT-CFM recipes of torchcfm re-implemented
  in-repo and our variants) trained and evaluated in the same run, 3 seeds, ratios to the anchor.
"""
from __future__ import annotations


import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genstat.datasets import TOY2D_NAMES, toy2d_sampler
from genstat.interpolants import Interpolant, fit, sample_ode, sample_sde, score_from_eta
from genstat.mc import block_generator
from genstat.metrics import wasserstein2
from genstat.nn import TimeMLP

from .bounds import MAX_BATCH, MAX_DEPTH, MAX_LIST, MAX_LR, MAX_SAMPLES, MAX_SCALE, MAX_STEPS, MAX_WIDTH, Epsilon, Seed
from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["MethodConfig", "Toy2dParams", "BenchParams", "run_toy2d", "run_bench"]

#: torchcfm 1.0.7 on 8-gaussians -> moons, 2000 steps (REFERENCE.md section 1, measured on this machine type)
REFERENCE_ROWS = [
    {"method": "torchcfm I-CFM (REFERENCE)", "w2_dopri5": 0.592, "nfe_dopri5": 94, "w2_euler10": 0.773,
     "train_cpu_s": 7.9},
    {"method": "torchcfm OT-CFM (REFERENCE)", "w2_dopri5": 0.538, "nfe_dopri5": 50, "w2_euler10": 0.539,
     "train_cpu_s": 23.5},
]


class MethodConfig(BaseModel):
    """One training recipe: interpolant, loss, coupling, optimiser, network."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = "ours"
    path: str = "linear"
    gamma: str = "none"
    a: float = Field(1.0, gt=0, le=MAX_SCALE)
    field: str = "b"
    coupling: str = "independent"
    coupling_every: int = Field(1, ge=1, le=MAX_STEPS)
    antithetic: bool = False
    time_sampling: str = "uniform"
    t_min: float = Field(0.0, ge=0, lt=0.5)
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    lr_schedule: str = "constant"
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights (None: off)")
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    hidden: int = Field(64, ge=1, le=MAX_WIDTH)
    depth: int = Field(3, ge=1, le=MAX_DEPTH)
    time_embedding: int = Field(0, ge=0, le=MAX_WIDTH)
    activation: str = "selu"


#: evaluation samples: exact W2 solves an n x n assignment problem (POT emd), so n stays moderate
MAX_EVAL = 100_000


def _check_sampler_names(v: list[str]) -> list[str]:
    for s in v:
        m, _, k = s.partition(":")
        if m not in ("euler", "heun", "rk4", "dopri5") or (m != "dopri5" and not k.isdigit()):
            raise ValueError(f"sampler {s!r} must be 'dopri5' or '<euler|heun|rk4>:<steps>'")
        if k and not 1 <= int(k) <= MAX_STEPS:
            raise ValueError(f"sampler {s!r}: steps must be in [1, {MAX_STEPS}]")
    return v


class Toy2dParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    source: str = "8gaussians"
    target: str = "moons"
    method: MethodConfig = Field(default_factory=MethodConfig)
    steps: int = Field(2000, ge=1, le=MAX_STEPS)
    seeds: list[Seed] = Field(default_factory=lambda: [0], max_length=MAX_LIST)
    n_eval: int = Field(2000, ge=10, le=MAX_EVAL)
    samplers: list[str] = Field(default_factory=lambda: ["euler:10", "rk4:10", "dopri5"], max_length=MAX_LIST)
    sde_eps: list[Epsilon] = Field(default_factory=list, max_length=MAX_LIST,
                                   description="if non-empty: also train eta and run the SDE")
    sde_steps: int = Field(100, ge=1, le=MAX_STEPS)
    n_trajectories: int = Field(300, ge=1, le=MAX_SAMPLES)

    _samplers = field_validator("samplers")(_check_sampler_names)

    @field_validator("source", "target")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TOY2D_NAMES:
            raise ValueError(f"must be one of {TOY2D_NAMES}, got {v!r}")
        return v


class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    source: str = "8gaussians"
    target: str = "moons"
    steps: int = Field(2000, ge=1, le=MAX_STEPS)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], max_length=MAX_LIST,
                              description="[]: the run's seed only (one seed per run, for genstat sweep --seeds)")
    n_eval: int = Field(2000, ge=10, le=MAX_EVAL)
    samplers: list[str] = Field(default_factory=lambda: ["dopri5", "euler:10", "rk4:10"], max_length=MAX_LIST)
    anchor: str = "I-CFM"
    variants: list[MethodConfig] = Field(default_factory=lambda: [
        MethodConfig(name="I-CFM"), MethodConfig(name="OT-CFM", coupling="ot")], max_length=MAX_LIST)

    _samplers = field_validator("samplers")(_check_sampler_names)


def _build(m: MethodConfig, seed: int, stream: int = 0):
    interp = Interpolant(m.path, m.gamma, a=m.a)
    model = TimeMLP(2, hidden=m.hidden, depth=m.depth, time_embedding=m.time_embedding, activation=m.activation,
                    generator=block_generator(seed, 0, stream=10 + stream))
    return interp, model


def _train(m: MethodConfig, interp: Interpolant, model, source, target, steps: int, seed: int, field: str,
           stream: int = 0):
    return fit(interp, model, source, target, field=field, steps=steps, batch_size=m.batch_size, lr=m.lr,
               coupling=m.coupling, coupling_every=m.coupling_every, antithetic=m.antithetic,
               time_sampling=m.time_sampling, t_range=(m.t_min, 1.0 - m.t_min), lr_schedule=m.lr_schedule,
               ema=m.ema, generator=block_generator(seed, 0, stream=1 + stream))


def _ode(model, x0: torch.Tensor, spec: str, trajectory: bool = False):
    method, _, k = spec.partition(":")
    return sample_ode(model, x0, method=method, steps=int(k) if k else 100, return_trajectory=trajectory)


def _eval_sets(p, seed: int):
    g = block_generator(seed, 0, stream=3)
    src, tgt = toy2d_sampler(p.source), toy2d_sampler(p.target)
    return src(p.n_eval, g), tgt(p.n_eval, g), tgt(p.n_eval, g)


@experiment("interpolants.toy2d", Toy2dParams, help="train an interpolant on a 2-D toy pair; W2 ± floor, NFE, figures")
def run_toy2d(p: Toy2dParams, run: Run) -> None:
    import matplotlib.pyplot as plt

    m = p.method
    src, tgt = toy2d_sampler(p.source), toy2d_sampler(p.target)
    for seed in p.seeds:
        interp, model = _build(m, seed)
        rec = _train(m, interp, model, src, tgt, p.steps, seed, m.field)
        run.log(f"seed {seed}: trained {p.steps} steps in {rec.cpu_time:.1f} CPU s "
                f"(final loss {float(rec.losses[-1]):.4f})")
        for step in range(0, p.steps, max(1, p.steps // 50)):
            run.metric(seed=seed, step=step + 1, loss=float(rec.losses[step]))
        x0, y, y_ref = _eval_sets(p, seed)
        floor = wasserstein2(y, y_ref).estimate
        outs = {}
        for spec in p.samplers:
            r = _ode(model, x0, spec)
            w2 = wasserstein2(r.samples, y).estimate
            outs[spec] = r.samples
            run.add_results({"seed": seed, "sampler": f"ode-{spec}", "w2": w2, "floor": floor, "nfe": r.nfe,
                             "train_cpu_s": rec.cpu_time, "train_wall_s": rec.wall_time})
            run.log(f"  ode {spec:>9}: W2 {w2:.3f} (floor {floor:.3f}), NFE {r.nfe}")
        if p.sde_eps:
            if not interp.has_noise:
                raise ValueError("sde_eps needs a method with a noise gamma (e.g. gamma: brownian)")
            _, eta_model = _build(m, seed, stream=1)
            rec_eta = _train(m, interp, eta_model, src, tgt, p.steps, seed, "eta", stream=1)
            t_max = 1.0 - max(m.t_min, 0.02)

            def score(t, x):
                return score_from_eta(interp, t, eta_model(t, x))

            for eps in p.sde_eps:
                # s = -eta/gamma is singular where gamma = 0: ODE on [0, d], SDE on [d, 1-d], ODE on [1-d, 1]
                first = sample_ode(model, x0, method="rk4", steps=1, t1=1.0 - t_max)
                r = sample_sde(model, score, first.samples, eps=eps, steps=p.sde_steps, method="heun",
                               t0=1.0 - t_max, t1=t_max, generator=block_generator(seed, 0, stream=4))
                last = sample_ode(model, r.samples, method="rk4", steps=1, t0=t_max, t1=1.0)
                nfe = first.nfe + r.nfe + last.nfe
                w2 = wasserstein2(last.samples, y).estimate
                run.add_results({"seed": seed, "sampler": f"sde-heun:{p.sde_steps}-eps{eps}", "w2": w2,
                                 "floor": floor, "nfe": nfe, "train_cpu_s": rec.cpu_time + rec_eta.cpu_time,
                                 "train_wall_s": rec.wall_time + rec_eta.wall_time})
                run.log(f"  sde eps={eps}: W2 {w2:.3f} (floor {floor:.3f}), NFE {nfe}")
        if seed == p.seeds[0]:
            fig, axes = plt.subplots(1, len(outs) + 1, figsize=(4 * (len(outs) + 1), 4), sharex=True, sharey=True)
            axes[0].scatter(*y.T, s=2, c="k")
            axes[0].set_title(f"target ({p.target})")
            for ax, (spec, xs) in zip(axes[1:], outs.items()):
                ax.scatter(*xs.T, s=2, c="tab:blue")
                ax.set_title(f"ODE {spec}")
            run.save_figure(fig, "samples")
            tr = _ode(model, x0[: p.n_trajectories], "rk4:25", trajectory=True).trajectory
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.plot(tr[:, :, 0], tr[:, :, 1], c="olive", alpha=0.2, lw=0.5)
            ax.scatter(*tr[0].T, s=3, c="k", label="t=0")
            ax.scatter(*tr[-1].T, s=3, c="tab:blue", label="t=1")
            ax.legend()
            ax.set_title("ODE trajectories (rk4, 25 steps)")
            run.save_figure(fig, "trajectories")
    summary = run.results.groupby("sampler").agg(w2=("w2", "mean"), w2_sd=("w2", "std"), floor=("floor", "mean"),
                                                 nfe=("nfe", "mean"), train_cpu_s=("train_cpu_s", "mean"))
    run.save_text(markdown_table(summary.reset_index(), ".3f") + "\n", "table.md")


@experiment("interpolants.bench", BenchParams,
            help="8-gaussians -> moons: in-repo I-CFM/OT-CFM recipes vs our variants, 3 seeds, ratios")
def run_bench(p: BenchParams, run: Run) -> None:
    names = [v.name for v in p.variants]
    if p.anchor not in names:
        raise ValueError(f"anchor {p.anchor!r} is not among the variants {names}")
    src, tgt = toy2d_sampler(p.source), toy2d_sampler(p.target)
    seeds = p.seeds or [run.seed]
    for seed in seeds:
        x0, y, y_ref = _eval_sets(p, seed)
        floor = wasserstein2(y, y_ref).estimate
        for v in p.variants:
            interp, model = _build(v, seed)
            rec = _train(v, interp, model, src, tgt, p.steps, seed, v.field)
            for spec in p.samplers:
                r = _ode(model, x0, spec)
                w2 = wasserstein2(r.samples, y).estimate
                run.add_results({"method": v.name, "seed": seed, "sampler": spec, "w2": w2, "floor": floor,
                                 "nfe": r.nfe, "train_cpu_s": rec.cpu_time, "train_wall_s": rec.wall_time})
                run.log(f"seed {seed} {v.name:>14} {spec:>8}: W2 {w2:.3f} (floor {floor:.3f}) NFE {r.nfe:4d} "
                        f"train {rec.cpu_time:.1f} CPU s")
    df = run.results
    anchor = df[df.method == p.anchor].set_index(["seed", "sampler"])
    df = df.join(anchor[["w2", "train_cpu_s"]].rename(columns={"w2": "w2_anchor", "train_cpu_s": "cpu_anchor"}),
                 on=["seed", "sampler"])
    df["w2_ratio"] = df.w2 / df.w2_anchor
    df["time_ratio"] = df.train_cpu_s / df.cpu_anchor
    summ = df.groupby(["method", "sampler"], sort=False).agg(
        w2=("w2", "mean"), w2_sd=("w2", "std"), nfe=("nfe", "mean"), floor=("floor", "mean"),
        w2_ratio=("w2_ratio", "mean"), train_cpu_s=("train_cpu_s", "mean"), time_ratio=("time_ratio", "mean"))
    summ = summ.reset_index()
    run.save_table(summ, "summary")
    wide = []
    for name in names:
        row: dict = {"method": name}
        s = summ[summ.method == name].set_index("sampler")
        for spec in p.samplers:
            row[f"W2 {spec}"] = f"{s.loc[spec, 'w2']:.3f}±{s.loc[spec, 'w2_sd']:.3f}"
            row[f"NFE {spec}"] = int(round(s.loc[spec, "nfe"]))
        row["train CPU s"] = f"{s['train_cpu_s'].iloc[0]:.1f}"
        row["time ratio"] = f"{s['time_ratio'].iloc[0]:.2f}"
        wide.append(row)
    table = pd.DataFrame(wide)
    ref = pd.DataFrame(REFERENCE_ROWS)
    floor = float(df.floor.mean())
    md = (f"{p.source} -> {p.target}, {p.steps} steps, seeds {seeds}, W2 on {p.n_eval} points "
          f"(noise floor {floor:.3f}); time ratio = train CPU / {p.anchor}'s in the same run\n\n"
          + markdown_table(table, ".3f") + "\n\nREFERENCE.md §1 (torchcfm 1.0.7, other run, floor 0.076):\n\n"
          + markdown_table(ref, ".3f") + "\n")
    run.save_text(md, "table.md")
    run.log(md)
