"""The main job (``experiments/quickstart.yaml``): several expectations of a Gaussian-mixture target
estimated at once, by plain Monte Carlo and by importance sampling, against their exact values,
with a convergence plot."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from genstat.mc import estimate
from genstat.mc.distributed import no_sharding

from .bounds import MAX_LIST, MAX_SAMPLES, MAX_SCALE
from .registry import experiment
from .runner import Run

__all__ = ["QuickstartParams", "run_quickstart", "estimate_table", "familywise_consistent", "holm"]


class QuickstartParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weights: list[Annotated[float, Field(gt=0, le=MAX_SCALE)]] = Field(
        default_factory=lambda: [0.5, 0.3, 0.2], min_length=1, max_length=MAX_LIST,
        description="mixture weights (normalised)")
    means: list[Annotated[list[Annotated[float, Field(ge=-100, le=100)]], Field(min_length=2, max_length=2)]] = Field(
        default_factory=lambda: [[-2.0, 0.0], [1.5, 1.5], [2.0, -2.0]], min_length=1, max_length=MAX_LIST)
    scales: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [0.6, 0.8, 0.5], min_length=1, max_length=MAX_LIST,
        description="isotropic sd per component")
    n_samples: int = Field(1_000_000, ge=1000, le=MAX_SAMPLES)
    proposal_scale: float = Field(3.0, gt=0, le=100, description="sd of the N(0, s^2 I) importance proposal")
    level: float = Field(0.95, gt=0, lt=1)
    convergence_points: int = Field(12, ge=2, le=1000)
    tour: list[Literal["interpolants", "lightsb", "gauge", "importance", "cumulants", "td"]] = Field(
        default_factory=lambda: ["interpolants", "lightsb", "gauge", "importance", "cumulants", "td"],
        max_length=MAX_LIST, description="module checks to run after the engine demo (tour.csv)")

    @model_validator(mode="after")
    def _consistent(self):
        k = len(self.weights)
        if len(self.means) != k or len(self.scales) != k:
            raise ValueError(f"weights, means and scales must have the same length, got "
                             f"{k}, {len(self.means)}, {len(self.scales)}")
        if any(len(m) != 2 for m in self.means):
            raise ValueError("means must be 2-D points [x, y]")
        if any(w <= 0 for w in self.weights) or any(s <= 0 for s in self.scales):
            raise ValueError("weights and scales must be positive")
        return self


NAMES = ("E[X1]", "E[X2]", "E[|X|^2]", "P(X1 > 0)", "E[exp(X1/2)]", "E[X1 X2]")


def _mixture(p: QuickstartParams):
    w = torch.tensor(p.weights, dtype=torch.float64)
    w = w / w.sum()
    m = torch.tensor(p.means, dtype=torch.float64)
    s = torch.tensor(p.scales, dtype=torch.float64)
    return w, m, s


def exact_values(p: QuickstartParams) -> np.ndarray:
    """Closed forms: mixtures of Gaussian moments, cdf and moment generating function."""
    w, m, s = (t.numpy() for t in _mixture(p))
    v = s**2
    return np.array([
        (w * m[:, 0]).sum(),
        (w * m[:, 1]).sum(),
        (w * ((m**2).sum(1) + 2 * v)).sum(),
        (w * stats.norm.cdf(m[:, 0] / s)).sum(),
        (w * np.exp(0.5 * m[:, 0] + 0.125 * v)).sum(),
        (w * m[:, 0] * m[:, 1]).sum(),
    ])


def _fn(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0], x[:, 1], (x * x).sum(1), (x[:, 0] > 0).to(x.dtype),
                        torch.exp(0.5 * x[:, 0]), x[:, 0] * x[:, 1]], 1)


def _problem(p: QuickstartParams, device: torch.device):
    """The integrand, and plain-MC and IS samplers (with IS log-weights) on ``device``."""
    w, m, s = _mixture(p)
    wd, md, sd = w.to(device), m.to(device), s.to(device)

    def mixture_sampler(n, g, d):
        comp = torch.multinomial(wd, n, replacement=True, generator=g)
        return md[comp] + sd[comp, None] * torch.randn(n, 2, generator=g, device=d, dtype=torch.float64)

    def log_p(x):
        r2 = ((x[:, None, :] - md) ** 2).sum(-1)
        return torch.logsumexp(torch.log(wd) - r2 / (2 * sd**2) - 2 * torch.log(sd) - math.log(2 * math.pi), 1)

    q = p.proposal_scale

    def proposal(n, g, d):
        return q * torch.randn(n, 2, generator=g, device=d, dtype=torch.float64)

    def log_w(x):
        return log_p(x) - (-(x * x).sum(1) / (2 * q * q) - 2 * math.log(q) - math.log(2 * math.pi))

    return {"mc": dict(sampler=mixture_sampler), "is": dict(sampler=proposal, log_weight=log_w)}


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (valid under any dependence between the tests).

    Reference: S. Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
    Statist. 6 (1979): with p sorted ascending, adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def estimate_table(p: QuickstartParams, seed: int, device: torch.device | str = "cpu",
                   n_samples: int | None = None) -> pd.DataFrame:
    """The 12-row table (plain MC and IS x six expectations) against the exact values.

    Columns: the engine's ``to_frame()`` (without ``wall_time``, so that the table is bitwise
    reproducible), ``truth``, ``error``, ``z``, ``covered`` (the row's CI contains the truth),
    ``pvalue`` (two-sided normal, from ``z``) and ``p_holm`` (Holm-adjusted over the 12 rows).
    """
    device = torch.device(device)
    truth = exact_values(p)
    n = p.n_samples if n_samples is None else n_samples
    frames = []
    for name, kw in _problem(p, device).items():
        r = estimate(_fn, kw["sampler"], n, seed=seed, device=device, log_weight=kw.get("log_weight"),
                     level=p.level, names=list(NAMES))
        df = r.to_frame().drop(columns="wall_time")
        df.insert(0, "method", name)
        df["truth"] = truth
        df["error"] = df["estimate"] - df["truth"]
        df["z"] = df["error"] / df["stderr"]
        df["covered"] = (df["ci_low"] <= df["truth"]) & (df["truth"] <= df["ci_high"])
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["pvalue"] = 2 * stats.norm.sf(df["z"].abs())
    df["p_holm"] = holm(df["pvalue"].to_numpy())
    return df


def familywise_consistent(df: pd.DataFrame, level: float) -> bool:
    """Whether no row of ``estimate_table`` rejects "estimate consistent with truth" at family-wise
    error ``1 - level`` (Holm): a correct engine passes with probability at least ``level``."""
    return bool((df["p_holm"] >= 1 - level).all())


@experiment("quickstart", QuickstartParams, shards=True,
            help="tour: expectations of a Gaussian mixture by MC and IS on the engine, vs exact values")
def run_quickstart(p: QuickstartParams, run: Run) -> None:
    dev = run.device
    z = stats.norm.ppf(0.5 + p.level / 2)
    df = estimate_table(p, run.seed, dev)
    run.add_results(df)
    for name, rows in df.groupby("method", sort=False):
        ess = "" if rows["ess"].isna().all() else f", ESS {float(rows['ess'].iloc[0]):,.0f}"
        run.log(f"\n{name.upper()}: {int(rows['n_samples'].iloc[0]):,} samples{ess}")
        for _, row in rows.iterrows():
            half = row["ci_high"] - row["estimate"]
            run.log(f"  {row['component']:<14s} {row['estimate']:+.5f} ± {half:.5f}   truth {row['truth']:+.5f}"
                    f"   z {row['z']:+.2f}  Holm p {row['p_holm']:.2f}")
    fw = 1 - p.level
    if familywise_consistent(df, p.level):
        run.log(f"\nverdict: all {len(df)} estimates consistent with the exact values at {p.level:.0%} family-wise "
                f"(smallest Holm-adjusted p {df['p_holm'].min():.3f} >= {fw:.2g}; "
                f"{int((~df['covered']).sum())} per-row {p.level:.0%} CI(s) missed, as expected by chance)")
    else:
        bad = df[df["p_holm"] < fw]
        run.log(f"\nverdict: NOT consistent at {p.level:.0%} family-wise: "
                + ", ".join(f"{r.method}:{r.component} (Holm p {r.p_holm:.2g})" for r in bad.itertuples())
                + f"; a correct engine shows this for at most {fw:.0%} of seeds")

    # convergence: |error| and CI half-width vs n (nested prefixes of the same block stream)
    truth = exact_values(p)
    methods = _problem(p, dev)
    ns = np.unique(np.logspace(3, math.log10(p.n_samples), p.convergence_points).astype(int))
    conv = []
    for n in ns:
        for name, kw in methods.items():
            r = estimate(_fn, kw["sampler"], int(n), seed=run.seed, device=dev, log_weight=kw.get("log_weight"))
            for j, comp in enumerate(NAMES):
                conv.append({"method": name, "component": comp, "n": int(n),
                             "abs_error": abs(float(r.estimate[j]) - truth[j]),
                             "ci_half_width": z * float(r.stderr[j])})
    conv_df = pd.DataFrame(conv)
    run.save_table(conv_df, "convergence")
    if run.is_main:
        _plot(conv_df, run)
        if p.tour:
            # the checks train models (not sharded): rank 0 runs them alone, the engine as one process
            with no_sharding():
                _run_tour(p, run)


def _run_tour(p: QuickstartParams, run: Run) -> None:
    from .tour import run_check

    run.log(f"\nTour of the modules (one exact-answer check each, on {run.device} where the module allows):")
    rows = []
    for name in p.tour:
        row = run_check(name, run.seed, run.device)
        rows.append(row)
        run.save_table(pd.DataFrame(rows), "tour")
        run.metric(tour=name, value=row["value"], passed=row["passed"], seconds=row["seconds"])
        run.log(f"  [{'ok' if row['passed'] else 'FAIL'}] {row['module']:<12s} {row['check']}\n"
                f"        value {row['value']:.5g}; rule: {row['rule']}  ({row['detail']}, {row['device']}, "
                f"{row['seconds']:.1f} s)")
        if not row["passed"]:
            run.fail(f"tour {row['module']}: {row['rule']} not met (value {row['value']:.5g}; {row['detail']})")


def _plot(df: pd.DataFrame, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7), sharex=True)
    for ax, comp in zip(axes.ravel(), NAMES):
        for method, color in (("mc", "C0"), ("is", "C1")):
            d = df[(df.component == comp) & (df.method == method)]
            ax.fill_between(d.n, 0, d.ci_half_width, color=color, alpha=0.2)
            ax.plot(d.n, d.abs_error, "o-", color=color, ms=3, label=f"{method}: |error|")
            ax.plot(d.n, d.ci_half_width, "--", color=color, lw=1, label=f"{method}: CI half-width")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(comp)
        ax.set_xlabel("n samples")
        ax.set_ylabel(f"|error|, CI half-width [units of {comp}]", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("genstat quickstart: Monte Carlo error vs n (band: CI half-width)")
    run.save_figure(fig, "convergence")
