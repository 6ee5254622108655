"""Experiment kinds for estimators.td: RL value-loss comparison and the GGD fitting benchmark."""
from __future__ import annotations

import math
import time
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .bounds import MAX_BATCH, MAX_LIST, MAX_REPEATS, MAX_SAMPLES, MAX_SCALE, MAX_STEPS, MAX_WIDTH
from .registry import experiment
from .runner import Run, markdown_table


#: critics in an ensemble
MAX_ENSEMBLE = 1000


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    value_loss: Literal["mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled"]
    ensemble: int = Field(5, ge=1, le=MAX_ENSEMBLE)


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    algo: Literal["ppo", "sac"]
    env: str
    steps: int = Field(ge=1, le=MAX_STEPS)


def _default_variants() -> list[Variant]:
    return [Variant(name="plain", value_loss="mse", ensemble=1),
            Variant(name="gauss_biv", value_loss="gauss_biv", ensemble=5),
            Variant(name="ggd_biev", value_loss="ggd_biev", ensemble=5)]


def _default_tasks() -> list[Task]:
    return [Task(algo="ppo", env="NoisyCartPole-v1", steps=50_000),
            Task(algo="ppo", env="Acrobot-v1", steps=50_000),
            Task(algo="sac", env="NoisyPendulum-v1", steps=10_000)]


class WeightingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    variants: list[Variant] = Field(default_factory=_default_variants, max_length=MAX_LIST)
    tasks: list[Task] = Field(default_factory=_default_tasks, max_length=MAX_LIST)
    seeds: int | None = Field(5, ge=1, le=MAX_REPEATS,
                              description="seed indices 0..seeds-1; None: one, the run's seed (for genstat sweep)")
    eval_episodes: int = Field(10, ge=1, le=MAX_REPEATS)
    bootstrap: int = Field(2000, ge=100, le=MAX_REPEATS)
    sac_plain_ensemble: int = Field(2, ge=1, le=MAX_ENSEMBLE,
                                    description="critics of SAC variants with ensemble 1 (clipped double Q)")
    sac_learning_starts: int = Field(1000, ge=1, le=MAX_STEPS)
    sac_hidden: int = Field(128, ge=1, le=MAX_WIDTH)
    sac_reward_scale: float = Field(1.0, gt=0, le=MAX_SCALE,
                                    description="SAC learns from reward * scale (GGD NLL has alpha = 1)")


def _bootstrap_ci(x: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95):
    if len(x) < 2:
        return math.nan, math.nan
    means = rng.choice(x, size=(n_boot, len(x)), replace=True).mean(1)
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def _curve(log: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    ret = log["episode_return"].ffill().bfill().to_numpy()
    return np.interp(grid, log["env_steps"].to_numpy(), ret)


def summarize(df: pd.DataFrame, variants: list[str], *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (task, variant): means with percentile-bootstrap CIs over seeds, paired tests of the AUC
    against the first variant (seeds that diverged in either are dropped from the pair), diverged counts."""
    from scipy import stats

    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    if "diverged" not in df:
        df = df.assign(diverged=False)
    df = df.assign(diverged=df["diverged"].fillna(False).astype(bool))
    summary = []
    for (task, variant), g in df.groupby(["task", "variant"], sort=False):
        ok = g[~g.diverged]
        out = {"task": task, "variant": variant, "seeds": len(g), "diverged": int(g.diverged.sum())}
        for m in ("final_return", "auc"):
            x = ok[m].to_numpy()
            lo, hi = _bootstrap_ci(x, n_boot, rng)
            out.update({m: x.mean() if len(x) else math.nan, f"{m}_lo": lo, f"{m}_hi": hi})
        base = df[(df.task == task) & (df.variant == variants[0]) & ~df.diverged]
        pair = ok.merge(base, on="seed_index", suffixes=("", "_base"))
        if variant != variants[0] and len(pair) >= 2:
            a, b = pair["auc"].to_numpy(), pair["auc_base"].to_numpy()
            out["auc_diff_vs_first"] = float((a - b).mean())
            out["paired_t_p"] = float(stats.ttest_rel(a, b).pvalue)
            out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
        for col, name in (("beta_mean_last20", "beta_mean"), ("ensemble_std_last20", "ensemble_std")):
            out[name] = ok[col].mean() if col in ok else math.nan
        summary.append(out)
    return pd.DataFrame(summary)


@experiment("td.weighting", WeightingParams,
            help="plain vs Gaussian NLL + BIV vs GGD + BIEV value losses in PPO/SAC over seeds")
def run_weighting(p: WeightingParams, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from estimators.td.agents import PPO, SAC, PPOConfig, SACConfig
    from genstat.mc import block_seed

    rows, curve_rows = [], []
    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    for task in p.tasks:
        grid = np.linspace(0, task.steps, 51)[1:]
        for v in p.variants:
            # seeds: None makes the run's seed the seed index, with the seeds a `seeds: N` run at seed 0
            # uses, so `genstat sweep --seeds 0-4` reproduces its five runs one per cell
            for s in range(p.seeds) if p.seeds is not None else [run.seed]:
                seed = int(block_seed(run.seed if p.seeds is not None else 0, s) % (2**31))
                t0 = time.perf_counter()
                if task.algo == "ppo":
                    agent = PPO(task.env, PPOConfig(value_loss=v.value_loss, ensemble=v.ensemble), seed=seed)
                else:
                    k = p.sac_plain_ensemble if v.ensemble == 1 else v.ensemble
                    agent = SAC(task.env, SACConfig(value_loss=v.value_loss, ensemble=k, hidden=p.sac_hidden,
                                                    learning_starts=p.sac_learning_starts,
                                                    reward_scale=p.sac_reward_scale,
                                                    log_every=1000 if task.steps >= 2000 else max(1, task.steps // 4)),
                                seed=seed)
                row = {"task": f"{task.algo}:{task.env}", "variant": v.name, "seed_index": s, "seed": seed}
                try:
                    rec = agent.learn(task.steps)
                except FloatingPointError as exc:  # a diverged run is a result too: record it, go on
                    run.log(f"{row['task']} {v.name} seed {s}: {exc}")
                    row.update({"diverged": True, "final_return": math.nan, "auc": math.nan,
                                "wall_s": time.perf_counter() - t0})
                    rows.append(row)
                    run.add_results(row)
                    continue
                evals = agent.evaluate(p.eval_episodes)
                log = rec.to_frame()
                curve = _curve(log, grid)
                curves.setdefault((row["task"], v.name), []).append(curve)
                curve_rows.append(pd.DataFrame({"task": row["task"], "variant": v.name, "seed_index": s,
                                                "env_steps": grid, "episode_return": curve}))
                run.save_table(pd.concat(curve_rows, ignore_index=True), "curves")
                tail = log.iloc[int(0.8 * len(log)):]
                row.update({"diverged": False, "final_return": float(evals.mean()), "auc": float(curve.mean()),
                            "beta_mean_last20": float(tail["beta_mean"].mean()),
                            "ensemble_std_last20": float(tail["ensemble_std"].mean()),
                            "td_abs_last20": float(tail["td_abs"].mean()),
                            "wall_s": time.perf_counter() - t0})
                rows.append(row)
                run.add_results(row)
                run.log(f"{row['task']} {v.name} seed {s}: final {row['final_return']:.1f} "
                        f"auc {row['auc']:.1f} ({row['wall_s']:.0f} s)")
    summ = summarize(pd.DataFrame(rows), [v.name for v in p.variants], n_boot=p.bootstrap, seed=run.seed)
    run.save_table(summ, "summary")
    run.save_text(markdown_table(summ, ".3g"), "summary.md")
    for task in summ.task.unique():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        steps = next(t.steps for t in p.tasks if f"{t.algo}:{t.env}" == task)
        grid = np.linspace(0, steps, 51)[1:]
        for v in p.variants:
            if (task, v.name) not in curves:
                continue
            c = np.array(curves[(task, v.name)])
            m, se = c.mean(0), c.std(0, ddof=1) / math.sqrt(len(c)) if len(c) > 1 else 0 * c[0]
            ax.plot(grid, m, label=v.name)
            ax.fill_between(grid, m - se, m + se, alpha=0.25)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return")
        ax.set_title(task)
        ax.legend()
        run.save_figure(fig, "curve_" + task.replace(":", "_"))
    run.log(summ.to_string())


class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    groups: int = Field(1000, ge=4, le=MAX_SAMPLES)
    n_samples: int = Field(10_000, ge=10, le=MAX_SAMPLES)
    betas: list[Annotated[float, Field(gt=0, le=100)]] = Field([0.5, 1.0, 2.0, 4.0], max_length=MAX_LIST,
                                                               description="true GGD shape parameters")
    scipy_groups: int = Field(40, ge=1, le=MAX_REPEATS,
                              description="groups fitted by the scipy loop (time extrapolated)")
    dtypes: list[Literal["float64", "float32"]] = Field(["float64", "float32"], max_length=MAX_LIST)
    repeats: int = Field(3, ge=1, le=MAX_REPEATS)

    @model_validator(mode="after")
    def _fits_in_memory(self):
        if self.groups * self.n_samples > MAX_BATCH:
            raise ValueError(f"groups * n_samples must be <= {MAX_BATCH} (one tensor holds them all), "
                             f"got {self.groups} * {self.n_samples}")
        return self


@experiment("td.bench_ggd", BenchParams,
            help="batched fit_ggd vs a loop of scipy.stats.gennorm.fit: time ratio and accuracy")
def run_bench(p: BenchParams, run: Run) -> None:
    import torch
    from scipy import stats

    from estimators.td import GeneralizedGaussian, fit_ggd

    nb = len(p.betas)
    true_beta = torch.tensor(p.betas, dtype=torch.float64).repeat_interleave(math.ceil(p.groups / nb))[: p.groups]
    dist = GeneralizedGaussian(torch.zeros(p.groups, dtype=torch.float64), torch.ones(p.groups, dtype=torch.float64),
                               true_beta)
    x64 = dist.sample((p.n_samples,), generator=run.generator()).T.contiguous()
    # the scipy subset: the first groups of every beta, equally many
    per = max(1, p.scipy_groups // nb)
    block = math.ceil(p.groups / nb)
    subset = [i * block + j for i in range(nb) for j in range(per) if i * block + j < p.groups]
    # time the scipy loop and every fit_ggd variant in alternation, `repeats` times, and keep the best
    # of each: the shared machine's load drifts, and both sides should see the same conditions
    xs = {dtype: x64.to(getattr(torch, dtype)) for dtype in p.dtypes}
    best: dict = {}
    fits: dict = {}
    for _ in range(p.repeats):
        t0 = time.perf_counter()
        sc = np.array([stats.gennorm.fit(x64[i].numpy()) for i in subset])  # (beta, loc, scale)
        best["scipy"] = min(best.get("scipy", math.inf), (time.perf_counter() - t0) / len(subset))
        for dtype, x in xs.items():
            for method in ("mle", "kurtosis"):
                t0 = time.perf_counter()
                fits[dtype, method] = fit_ggd(x, method=method)
                best[dtype, method] = min(best.get((dtype, method), math.inf), time.perf_counter() - t0)
    scipy_per_fit = best["scipy"]
    scipy_total = scipy_per_fit * p.groups
    run.log(f"scipy.stats.gennorm.fit: {1e3 * scipy_per_fit:.1f} ms per fit (best of {p.repeats} loops over "
            f"{len(subset)} fits); extrapolated to {p.groups} groups: {scipy_total:.1f} s")
    tb = true_beta.numpy()
    for dtype in p.dtypes:
        for method in ("mle", "kurtosis"):
            fit, t = fits[dtype, method], best[dtype, method]
            bhat = fit.beta.double().numpy()
            for b in p.betas:
                m = tb == b
                ms = np.array([tb[i] == b for i in subset])
                rmse = float(np.sqrt(np.mean((bhat[m] / b - 1) ** 2)))
                rmse_sc = float(np.sqrt(np.mean((sc[ms, 0] / b - 1) ** 2)))
                agree = float(np.max(np.abs(bhat[subset][ms] - sc[ms, 0]) / sc[ms, 0]))
                row = {"dtype": dtype, "method": method, "beta": b, "groups": p.groups, "n_samples": p.n_samples,
                       "fit_ggd_s": t, "scipy_loop_s_extrapolated": scipy_total,
                       "scipy_ms_per_fit": 1e3 * scipy_per_fit, "speedup": scipy_total / t,
                       "beta_rel_rmse": rmse, "scipy_beta_rel_rmse_subset": rmse_sc,
                       "max_rel_diff_vs_scipy_subset": agree,
                       "beta_z_sd": float(np.std((bhat[m] - b) / fit.beta_stderr.double().numpy()[m])),
                       "converged": float(fit.converged.double().mean())}
                run.add_results(row)
            run.log(f"{dtype} {method}: {t:.2f} s for {p.groups} groups -> {scipy_total / t:.0f}x faster than "
                    f"the scipy loop")
    res = run.results
    run.save_text(res.to_string(index=False), "results.txt")
