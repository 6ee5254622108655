"""Experiment kinds of the stochastic-interpolants module.

- ``interpolants.toy2d``: train one method on a 2-D toy pair, sample with several ODE/SDE samplers,
  report W2 ± its noise floor, NFE and training time; figures of samples and trajectories.
- ``interpolants.bench``: the real torchcfm I-CFM / OT-CFM (optional ``[bench]`` extra; skipped with a
  log line when it is not installed), their in-repo re-implementations and our variants, trained on
  the same pre-drawn data with the same network and evaluated with the same samplers, 3 seeds; ratios
  and per-seed wins against the best fair anchor (an anchor given our learning-rate schedule).
- ``interpolants.nfe`` (module ``interpolants_nfe``): W2 against NFE for every ODE sampler.
"""
from __future__ import annotations

import time
from typing import Literal

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

__all__ = ["MethodConfig", "TorchCFMConfig", "Toy2dParams", "BenchParams", "run_toy2d", "run_bench"]

#: torchcfm 1.0.7 on 8-gaussians -> moons, 2000 steps (REFERENCE.md section 1, measured on this machine type)
REFERENCE_ROWS = [
    {"method": "torchcfm I-CFM (REFERENCE)", "w2_dopri5": 0.592, "nfe_dopri5": 94, "w2_euler10": 0.773,
     "train_cpu_s": 7.9},
    {"method": "torchcfm OT-CFM (REFERENCE)", "w2_dopri5": 0.538, "nfe_dopri5": 50, "w2_euler10": 0.539,
     "train_cpu_s": 23.5},
]


class _Recipe(BaseModel):
    """What every benchmark row shares whoever trains it: network, batch, optimiser schedule."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = "ours"
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    lr_schedule: str = "constant"
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    hidden: int = Field(64, ge=1, le=MAX_WIDTH)
    depth: int = Field(3, ge=1, le=MAX_DEPTH)
    time_embedding: int = Field(0, ge=0, le=MAX_WIDTH)
    activation: str = "selu"


class MethodConfig(_Recipe):
    """One training recipe of :func:`genstat.interpolants.fit`: interpolant, loss, coupling, optimiser, network."""

    path: str = "linear"
    gamma: str = "none"
    a: float = Field(1.0, gt=0, le=MAX_SCALE)
    field: str = "b"
    coupling: str = "independent"
    coupling_every: int = Field(1, ge=1, le=MAX_STEPS)
    antithetic: bool = False
    time_sampling: str = "uniform"
    t_min: float = Field(0.0, ge=0, lt=0.5)
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights (None: off)")


class TorchCFMConfig(_Recipe):
    """A row trained by the real torchcfm: its matcher draws (t, x_t, u_t) from each batch and a plain
    Adam loop regresses the network on u_t (the usage of torchcfm's README and 2-D tutorials)."""

    matcher: Literal["I-CFM", "OT-CFM"] = "I-CFM"
    sigma: float = Field(0.1, ge=0, le=MAX_SCALE, description="torchcfm's path width (0.1 in its 2-D tutorials)")
    lr_schedule: Literal["constant", "cosine"] = "constant"


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


def _torchcfm_rows() -> list[TorchCFMConfig]:
    return [TorchCFMConfig(name="torchcfm I-CFM"), TorchCFMConfig(name="torchcfm OT-CFM", matcher="OT-CFM"),
            TorchCFMConfig(name="torchcfm I-CFM+cosine", lr=1e-2, lr_schedule="cosine"),
            TorchCFMConfig(name="torchcfm OT-CFM+cosine", matcher="OT-CFM", lr=1e-2, lr_schedule="cosine")]


class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    source: str = "8gaussians"
    target: str = "moons"
    steps: int = Field(2000, ge=1, le=MAX_STEPS)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], max_length=MAX_LIST,
                              description="[]: the run's seed only (one seed per run, for genstat sweep --seeds)")
    n_eval: int = Field(2000, ge=10, le=MAX_EVAL)
    samplers: list[str] = Field(default_factory=lambda: ["dopri5", "euler:10", "rk4:10"], max_length=MAX_LIST)
    anchor: str = Field("I-CFM", description="the in-repo row whose training time is the time ratios' unit")
    variants: list[MethodConfig] = Field(default_factory=lambda: [
        MethodConfig(name="I-CFM"), MethodConfig(name="OT-CFM", coupling="ot")], max_length=MAX_LIST)
    torchcfm: list[TorchCFMConfig] = Field(default_factory=_torchcfm_rows, max_length=MAX_LIST,
                                           description="rows trained by the real torchcfm (skipped without it)")
    fair: list[str] = Field(default_factory=list, max_length=MAX_LIST,
                            description="the fair anchors (ratios, per-seed wins against the best of those that "
                                        "ran); []: the torchcfm rows with the cosine schedule")
    time_with_samplers: bool = Field(True, description="train every row a second time drawing each batch from "
                                                       "the toy samplers, for the second training-time column")

    _samplers = field_validator("samplers")(_check_sampler_names)


def _build(m: _Recipe, seed: int, stream: int = 0):
    interp = Interpolant(m.path, m.gamma, a=m.a) if isinstance(m, MethodConfig) else None
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


class _Stream:
    """A sampler ``(n, generator, device) -> (n, d)`` serving the next ``n`` rows of a pre-drawn tensor:
    every row of the benchmark trains on the same batches and no sampler runs inside the timing."""

    def __init__(self, x: torch.Tensor):
        self.x, self.i = x, 0

    def __call__(self, n: int, generator=None, device=None) -> torch.Tensor:
        if self.i + n > self.x.shape[0]:
            raise RuntimeError(f"pre-drawn data exhausted: {self.x.shape[0]} rows, asked for rows "
                               f"{self.i}..{self.i + n}")
        self.i += n
        return self.x[self.i - n:self.i]


def _import_torchcfm():
    """torchcfm's two matchers, or None when the optional ``[bench]`` extra is not installed."""
    try:
        from torchcfm.conditional_flow_matching import (ConditionalFlowMatcher,
                                                        ExactOptimalTransportConditionalFlowMatcher)
    except ImportError:
        return None
    return {"I-CFM": ConditionalFlowMatcher, "OT-CFM": ExactOptimalTransportConditionalFlowMatcher}


def _torchcfm_batch(fm, x0: torch.Tensor, x1: torch.Tensor, g: torch.Generator):
    """torchcfm's ``sample_location_and_conditional_flow`` with its three random draws (the pairs from the
    OT plan, t, the path noise) taken from ``g`` instead of the global torch / numpy RNGs: the plan
    (``ot_sampler.get_map``), the path (``sample_xt``) and the target (``compute_conditional_flow``) are
    torchcfm's own."""
    if hasattr(fm, "ot_sampler"):
        pi = torch.as_tensor(fm.ot_sampler.get_map(x0, x1), dtype=torch.float64).flatten()
        k = torch.multinomial(pi / pi.sum(), x0.shape[0], replacement=True, generator=g)
        x0, x1 = x0[k // x1.shape[0]], x1[k % x1.shape[0]]
    t = torch.rand(x0.shape[0], generator=g, dtype=x0.dtype)
    xt = fm.sample_xt(x0, x1, t, torch.randn(x0.shape, generator=g, dtype=x0.dtype))
    return t, xt, fm.compute_conditional_flow(x0, x1, t, xt)


def _train_torchcfm(r: TorchCFMConfig, matchers, model, source, target, steps: int, seed: int) -> tuple[float, float]:
    """Train ``model`` the way torchcfm documents it; (wall s, CPU s) of the loop."""
    fm = matchers[r.matcher](sigma=r.sigma)
    opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if r.lr_schedule == "cosine" else None
    g = block_generator(seed, 0, stream=7)  # the toy samplers' draws when they are called per step
    g_cfm = block_generator(seed, 0, stream=8)  # torchcfm's draws
    model.train()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        t, xt, ut = _torchcfm_batch(fm, source(r.batch_size, g), target(r.batch_size, g), g_cfm)
        loss = (model(t, xt) - ut).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    model.eval()
    return wall, cpu


def _train_row(r, matchers, p: BenchParams, seed: int, source, target):
    """The trained network of row ``r`` and its (wall s, CPU s)."""
    interp, model = _build(r, seed)
    if isinstance(r, TorchCFMConfig):
        return model, _train_torchcfm(r, matchers, model, source, target, p.steps, seed)
    rec = _train(r, interp, model, source, target, p.steps, seed, r.field)
    return model, (rec.wall_time, rec.cpu_time)


def _bench_rows(p: BenchParams, run: Run):
    """The rows to train (torchcfm's dropped with a log line when it is missing), torchcfm's matchers
    (None without it) and the fair anchors among the rows that run."""
    names = [r.name for r in p.variants] + [r.name for r in p.torchcfm]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"row names must be unique, got {dup} more than once")
    if p.anchor not in [v.name for v in p.variants]:
        raise ValueError(f"anchor {p.anchor!r} is not among the variants {[v.name for v in p.variants]}")
    unknown = [f for f in p.fair if f not in names]
    if unknown:
        raise ValueError(f"fair rows {unknown} are not among the rows {names}")
    matchers = _import_torchcfm() if p.torchcfm else None
    rows: list = list(p.torchcfm if matchers is not None else []) + list(p.variants)
    if p.torchcfm and matchers is None:
        run.log(f"torchcfm is not installed (pip install 'genstat[bench]'): skipping the rows "
                f"{[r.name for r in p.torchcfm]}; the fair anchors are the in-repo rows among {p.fair}")
    fair = p.fair or [r.name for r in p.torchcfm if r.lr_schedule == "cosine"]
    fair = [f for f in fair if f in [r.name for r in rows]]
    if not fair:
        run.log("no fair anchor row runs: no ratios or per-seed wins")
    return rows, matchers, fair


def _versus_fair(df: pd.DataFrame, fair: list[str]):
    """Per sampler: the best fair anchor (lowest mean W2), each row's W2 ratio of means to it and its
    per-seed wins (W: lower W2 on that seed, L: not lower)."""
    best, ratio, wins = {}, {}, {}
    if not fair:
        return best, ratio, wins
    for spec, d in df.groupby("sampler", sort=False):
        means = d.groupby("method", sort=False).w2.mean()
        b = means[fair].idxmin()
        best[spec] = b
        ref = d[d.method == b].set_index("seed").w2
        for name, m in means.items():
            ratio[name, spec] = m / means[b]
            per = d[d.method == name].set_index("seed").w2
            wins[name, spec] = "—" if name == b else "".join("W" if per[k] < ref[k] else "L" for k in per.index)
    return best, ratio, wins


@experiment("interpolants.bench", BenchParams,
            help="8-gaussians -> moons: real torchcfm, in-repo re-implementations and ours, fair rows, 3 seeds")
def run_bench(p: BenchParams, run: Run) -> None:
    rows, matchers, fair = _bench_rows(p, run)
    src, tgt = toy2d_sampler(p.source), toy2d_sampler(p.target)
    seeds = p.seeds or [run.seed]
    n_rows = p.steps * max(r.batch_size for r in rows)
    for seed in seeds:
        x0, y, y_ref = _eval_sets(p, seed)
        floor = wasserstein2(y, y_ref).estimate
        g = block_generator(seed, 0, stream=6)
        data0, data1 = src(n_rows, g), tgt(n_rows, g)
        for r in rows:
            model, (wall, cpu) = _train_row(r, matchers, p, seed, _Stream(data0), _Stream(data1))
            cpu_s = _train_row(r, matchers, p, seed, src, tgt)[1][1] if p.time_with_samplers else float("nan")
            impl = "torchcfm" if isinstance(r, TorchCFMConfig) else "genstat"
            for spec in p.samplers:
                out = _ode(model, x0, spec)
                w2 = wasserstein2(out.samples, y).estimate
                run.add_results({"method": r.name, "impl": impl, "seed": seed, "sampler": spec, "w2": w2,
                                 "floor": floor, "nfe": out.nfe, "train_cpu_s": cpu, "train_wall_s": wall,
                                 "train_cpu_s_samplers": cpu_s})
                run.log(f"seed {seed} {r.name:>22} {spec:>8}: W2 {w2:.3f} (floor {floor:.3f}) NFE {out.nfe:4d} "
                        f"train {cpu:.1f} CPU s in memory, {cpu_s:.1f} with the samplers")
    df = run.results
    base = df[df.method == p.anchor].groupby("seed")[["train_cpu_s", "train_cpu_s_samplers"]].first()
    df = df.join(base.add_suffix("_anchor"), on="seed")
    df["time_ratio"] = df.train_cpu_s / df.train_cpu_s_anchor
    df["time_ratio_samplers"] = df.train_cpu_s_samplers / df.train_cpu_s_samplers_anchor
    best, ratio, wins = _versus_fair(df, fair)
    summ = df.groupby(["method", "sampler"], sort=False).agg(
        impl=("impl", "first"), w2=("w2", "mean"), w2_sd=("w2", "std"), nfe=("nfe", "mean"), floor=("floor", "mean"),
        train_cpu_s=("train_cpu_s", "mean"), time_ratio=("time_ratio", "mean"),
        train_cpu_s_samplers=("train_cpu_s_samplers", "mean"), time_ratio_samplers=("time_ratio_samplers", "mean"))
    summ = summ.reset_index()
    summ["w2_ratio_best_fair"] = [ratio.get((m, s), float("nan")) for m, s in zip(summ.method, summ.sampler)]
    summ["seeds_vs_best_fair"] = [wins.get((m, s), "") for m, s in zip(summ.method, summ.sampler)]
    run.save_table(summ, "summary")
    specs = "/".join(p.samplers)
    wide = []
    for name in [r.name for r in rows]:
        s = summ[summ.method == name].set_index("sampler")
        row: dict = {"method": name, "impl": s.impl.iloc[0]}
        for spec in p.samplers:
            nfe = "" if spec == "dopri5" else f" ({int(round(s.loc[spec, 'nfe']))} NFE)"
            row[f"W2 {spec}{nfe}"] = f"{s.loc[spec, 'w2']:.3f} ± {s.loc[spec, 'w2_sd']:.3f}"
            if spec == "dopri5":
                row["NFE dopri5"] = int(round(s.loc[spec, "nfe"]))
        if best:
            row[f"W2 / best fair ({specs})"] = "/".join(f"{ratio[name, k]:.2f}" for k in p.samplers)
            row[f"seeds {seeds} vs best fair ({specs})"] = "/".join(wins[name, k] for k in p.samplers)
        row["train CPU s, data in memory"] = f"{s.train_cpu_s.iloc[0]:.1f}"
        row["ratio, in memory"] = f"{s.time_ratio.iloc[0]:.2f}"
        if p.time_with_samplers:
            row["train CPU s, samplers per step"] = f"{s.train_cpu_s_samplers.iloc[0]:.1f}"
            row["ratio, samplers"] = f"{s.time_ratio_samplers.iloc[0]:.2f}"
        wide.append(row)
    md = (f"{p.source} -> {p.target}, {p.steps} steps, seeds {seeds}, W2 on {p.n_eval} points (noise floor "
          f"{float(df.floor.mean()):.3f}), mean ± sd over seeds; best fair anchor per sampler: "
          + (", ".join(f"{k}: {b}" for k, b in best.items()) or "none ran")
          + f" (among {fair}); time ratios = train CPU / {p.anchor}'s on the same seed\n\n"
          + markdown_table(pd.DataFrame(wide), ".3f") + "\n")
    if matchers is None and p.torchcfm:
        md += "\ntorchcfm not installed; REFERENCE.md §1 (torchcfm 1.0.7, other run, floor 0.076):\n\n" \
              + markdown_table(pd.DataFrame(REFERENCE_ROWS), ".3f") + "\n"
    run.save_text(md, "table.md")
    run.log(md)
