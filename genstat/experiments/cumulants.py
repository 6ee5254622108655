"""Experiment kinds of the cumulant Gaussianity test (estimators.cumulants).

* ``cumulants.identification``: OFDM identification: detection probability vs SNR for each
  single-carrier modulation, false-alarm rate on OFDM vs SNR and vs record length, the H0 size on
  white noise vs record length, power and false alarm under impairments; baselines included.
* ``cumulants.bench``: 10^4 records of 1024 samples: the batched test against a Python loop over
  ``scipy.stats.normaltest``, plus the size of every test on OFDM at 20 dB on the same records.
"""
from __future__ import annotations

import time
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from estimators.cumulants import (
    SignalConfig,
    c42_threshold_test,
    gaussianity_test,
    jarque_bera_test,
    normaltest_test,
    signals,
    size_power,
)

from .bounds import MAX_LIST, MAX_REPEATS, MAX_SAMPLES, MAX_THREADS, MAX_WIDTH, Db
from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["BenchParams", "IdentificationParams", "run_bench", "run_identification"]

#: test labels usable in ``params.tests``: name -> (size_power test, needs the CP options)
TEST_SPECS = {
    "chi2_c40_c42": ("c40_c42", False),
    "chi2_c42": ("c42", False),
    "chi2_c40_c41_c42": ("c40_c41_c42", False),
    "chi2_c40_c42_cp": ("c40_c42", True),
    "chi2_c42_cp": ("c42", True),
    "normaltest": ("normaltest", False),
    "jarque_bera": ("jarque_bera", False),
    "c42_threshold": ("c42_threshold", False),
}


class Impairment(BaseModel):
    """Options of :class:`~estimators.cumulants.SignalConfig` changed by one impairment scenario."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    freq_offset: float | None = Field(None, ge=-0.5, le=0.5, description="carrier offset, cycles per sample")
    timing_offset: float | None = Field(None, ge=-1e3, le=1e3, description="samples")
    multipath_taps: int | None = Field(None, ge=0, le=1000, description="Rayleigh taps (0: none)")
    random_phase: bool | None = None


#: samples per record
MAX_RECORD = 2**24


class IdentificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    snr_db: list[Db] = Field(default_factory=lambda: [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0], max_length=MAX_LIST)
    n_samples: int = Field(1024, ge=16, le=MAX_RECORD)
    sample_sizes: list[Annotated[int, Field(ge=16, le=MAX_RECORD)]] = Field(
        default_factory=lambda: [256, 1024, 4096, 8192], max_length=MAX_LIST)
    n_trials: int = Field(500, ge=10, le=MAX_REPEATS)
    block_size: int = Field(250, ge=1, le=MAX_REPEATS)
    alpha: float = Field(0.05, gt=0, lt=1)
    modulations: list[str] = Field(default_factory=lambda: ["bpsk", "qpsk", "16qam", "64qam"], max_length=MAX_LIST)
    n_fft: int = Field(64, ge=2, le=MAX_WIDTH)
    cp_length: int = Field(16, ge=1, le=MAX_WIDTH)
    tests: list[str] = Field(default_factory=lambda: list(TEST_SPECS), max_length=MAX_LIST)
    power_snr_db: Db = 0.0
    false_alarm_snr_db: Db = 20.0
    impairments: dict[str, Impairment] = Field(default_factory=lambda: {
        "none": Impairment(), "phase_only": Impairment(), "freq_offset_1e-3": Impairment(freq_offset=1e-3),
        "timing_offset_0.5": Impairment(timing_offset=0.5), "rayleigh_4taps": Impairment(multipath_taps=4),
    }, max_length=MAX_LIST)
    sections: list[str] = Field(default_factory=lambda: ["snr", "length", "h0", "impairments"], max_length=MAX_LIST)


def _curve(run: Run, p: IdentificationParams, section: str, label: str, cfg: SignalConfig, snrs, n: int,
           extra: dict | None = None) -> list[pd.DataFrame]:
    frames = []
    for name in p.tests:
        if name not in TEST_SPECS:
            raise ValueError(f"params.tests: unknown test {name!r}; known: {sorted(TEST_SPECS)}")
        test, cp = TEST_SPECS[name]
        opts = dict(covariance="cyclic_prefix", n_fft=p.n_fft, cp_length=p.cp_length) if cp else None
        if test == "normaltest" and n < 20:
            continue
        t0 = time.perf_counter()
        res = size_power(test, cfg, snr_db=snrs, n_samples=n, n_trials=p.n_trials, alpha=p.alpha,
                         seed=run.seed, block_size=p.block_size, device=run.device, test_options=opts)
        df = res.to_frame().assign(section=section, scenario=label, test=name, **(extra or {}))
        run.add_results(df)
        frames.append(df)
        run.log(f"[{section}] {label:<22s} N={n:<5d} {name:<18s} "
                + " ".join(f"{r:.3f}" for r in res.rate) + f"  ({time.perf_counter() - t0:.1f}s)")
    return frames


def _band_plot(run: Run, df: pd.DataFrame, x: str, panels: str, title: str, name: str, hline: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(df[panels]))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        sub = df[df[panels] == key]
        for test, d in sub.groupby("test", sort=False):
            d = d.sort_values(x)
            ax.plot(d[x], d["rate"], marker="o", ms=3, label=test)
            ax.fill_between(d[x], d["ci_low"], d["ci_high"], alpha=0.2)
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.8, ls="--")
        ax.set_title(str(key))
        ax.set_xlabel(x)
        if x == "n_samples":
            ax.set_xscale("log", base=2)
    axes[0][0].set_ylabel("rejection rate")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    run.save_figure(fig, name)


def _pivot(df: pd.DataFrame, index: list[str], col: str) -> pd.DataFrame:
    t = df.pivot_table(index=index, columns=col, values="rate", sort=False).reset_index()
    t.columns = [str(c) for c in t.columns]
    return t


@experiment("cumulants.identification", IdentificationParams, shards=True,
            help="OFDM identification: P_d vs SNR, false alarm vs SNR/N, H0 size, impairments, baselines")
def run_identification(p: IdentificationParams, run: Run) -> None:
    sc = {m: SignalConfig("single_carrier", m, pulse="rrc") for m in p.modulations}
    ofdm = SignalConfig("ofdm", "qpsk", n_fft=p.n_fft, cp_length=p.cp_length)
    md = [f"# OFDM identification (alpha = {p.alpha}, {p.n_trials} trials per cell, seed {run.seed})\n"]
    if "snr" in p.sections:
        frames = []
        for label, cfg in [(c.label, c) for c in sc.values()] + [(ofdm.label, ofdm)]:
            frames += _curve(run, p, "snr", label, cfg, p.snr_db, p.n_samples)
        df = pd.concat(frames)
        _band_plot(run, df, "snr_db", "scenario", f"rejection rate vs SNR (N = {p.n_samples})", "rate_vs_snr", p.alpha)
        md += ["## Rejection rate vs SNR (P_d for SC, false alarm for OFDM)\n",
               markdown_table(_pivot(df, ["scenario", "test"], "snr_db"), ".3f"), ""]
    if "length" in p.sections:
        frames = []
        for label, cfg, snr in [(ofdm.label, ofdm, p.false_alarm_snr_db)] + [
                (c.label, c, p.power_snr_db) for c in sc.values() if c.modulation in ("qpsk", "16qam")]:
            for n in p.sample_sizes:
                frames += _curve(run, p, "length", f"{label} @ {snr:g} dB", cfg, [snr], n)
        df = pd.concat(frames)
        _band_plot(run, df, "n_samples", "scenario", "rejection rate vs record length", "rate_vs_length", p.alpha)
        md += ["## Rejection rate vs record length\n",
               markdown_table(_pivot(df, ["scenario", "test"], "n_samples"), ".3f"), ""]
    if "h0" in p.sections:
        frames = []
        for n in p.sample_sizes:
            frames += _curve(run, p, "h0", "white noise", SignalConfig("noise"), [None], n)
        df = pd.concat(frames)
        md += ["## Size on white complex Gaussian noise (H0)\n",
               markdown_table(_pivot(df, ["test"], "n_samples"), ".3f"), ""]
    if "impairments" in p.sections:
        frames = []
        for imp, spec in p.impairments.items():
            kw = spec.model_dump(exclude_none=True)
            if imp == "none":
                kw["random_phase"] = False
            for base, snr in [(ofdm, p.false_alarm_snr_db)] + [(c, p.power_snr_db) for c in sc.values()
                                                                 if c.modulation in ("qpsk", "16qam")]:
                cfg = SignalConfig(**{**{f: getattr(base, f) for f in base.__slots__}, **kw})
                frames += _curve(run, p, "impairments", f"{base.label} @ {snr:g} dB", cfg, [snr], p.n_samples,
                                 extra={"impairment": imp})
        df = pd.concat(frames)
        md += ["## Impairments (rate at N = %d)\n" % p.n_samples,
               markdown_table(_pivot(df, ["scenario", "test"], "impairment"), ".3f"), ""]
    run.save_text("\n".join(md), "results.md")


class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_records: int = Field(10_000, ge=1, le=MAX_SAMPLES)
    n_samples: int = Field(1024, ge=20, le=MAX_RECORD)
    repeats: int = Field(3, ge=1, le=MAX_REPEATS)
    loop_records: int = Field(10_000, ge=1, le=MAX_SAMPLES,
                              description="records timed in the scipy loop (scaled to n_records)")
    size_snr_db: Db = 20.0
    alpha: float = Field(0.05, gt=0, lt=1)
    threads: int = Field(0, ge=0, le=MAX_THREADS, description="torch threads (0: leave as is)")


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@experiment("cumulants.bench", BenchParams, help="batched chi-square test vs a Python loop over scipy normaltest")
def run_bench(p: BenchParams, run: Run) -> None:
    from scipy import stats

    if p.threads:
        torch.set_num_threads(p.threads)
    g = run.generator()
    x = signals.complex_noise(p.n_records, p.n_samples, generator=g)
    x64 = x.to(torch.complex64)
    xn = x.numpy()
    ri = np.stack([xn.real, xn.imag], 1)  # (n, 2, N)
    m = min(p.loop_records, p.n_records)

    def loop():
        out = np.empty(m)
        for i in range(m):
            out[i] = min(1.0, 2 * float(np.min(stats.normaltest(ri[i], axis=-1).pvalue)))
        return out

    rows = []
    timings = {
        "chi2 c40_c42 (complex128)": _best(lambda: gaussianity_test(x), p.repeats)[0],
        "chi2 c40_c42 (complex64)": _best(lambda: gaussianity_test(x64), p.repeats)[0],
        "chi2 c40_c42 cyclic_prefix": _best(
            lambda: gaussianity_test(x, covariance="cyclic_prefix", n_fft=64, cp_length=16), p.repeats)[0],
        "scipy normaltest, vectorised (axis=-1)": _best(lambda: normaltest_test(xn), p.repeats)[0],
        "statsmodels jarque_bera, vectorised": _best(lambda: jarque_bera_test(xn), p.repeats)[0],
        "scipy normaltest, Python loop (anchor)": _best(loop, 1)[0] * p.n_records / m,
    }
    anchor = timings["scipy normaltest, Python loop (anchor)"]
    for name, t in timings.items():
        row = {"method": name, "n_records": p.n_records, "n_samples": p.n_samples, "seconds": t,
               "speedup_vs_loop": anchor / t, "threads": torch.get_num_threads()}
        rows.append(row)
        run.add_results(row)
        run.log(f"{name:<42s} {t:8.3f}s  x{anchor / t:8.1f}")
    # size control on the same number of OFDM-QPSK records at size_snr_db (H0 of OFDM identification)
    y = SignalConfig("ofdm", "qpsk").generate(p.n_records, p.n_samples, p.size_snr_db, generator=g)
    yn = y.numpy()
    sizes = {
        "chi2 c40_c42 white": gaussianity_test(y, alpha=p.alpha).reject,
        "chi2 c40_c42 cyclic_prefix": gaussianity_test(y, alpha=p.alpha, covariance="cyclic_prefix", n_fft=64,
                                                       cp_length=16).reject,
        "chi2 c40_c42 hac": gaussianity_test(y, alpha=p.alpha, covariance="hac").reject,
        "normaltest Re/Im Bonferroni": normaltest_test(yn, alpha=p.alpha).reject,
        "jarque_bera Re/Im Bonferroni": jarque_bera_test(yn, alpha=p.alpha).reject,
        "fixed abs(C~42) > 0.1": c42_threshold_test(y, threshold=0.1).reject,
    }
    size_rows = []
    for name, r in sizes.items():
        k = int(np.asarray(r).sum())
        ci = stats.binomtest(k, p.n_records).proportion_ci(0.95, method="exact")
        size_rows.append({"test": name, "size": k / p.n_records, "ci_low": ci.low, "ci_high": ci.high,
                          "abs_error": abs(k / p.n_records - p.alpha), "snr_db": p.size_snr_db})
        run.log(f"size on OFDM-QPSK @ {p.size_snr_db:g} dB: {name:<30s} {k / p.n_records:.4f}")
    sdf = pd.DataFrame(size_rows)
    run.save_table(sdf, "size_ofdm")
    run.save_text("\n".join([
        f"# Bench: {p.n_records} records x {p.n_samples} samples, threads={torch.get_num_threads()}\n",
        markdown_table(pd.DataFrame(rows), ".4g"), "",
        f"## Size on OFDM-QPSK (64+16) at {p.size_snr_db:g} dB, alpha = {p.alpha}\n",
        markdown_table(sdf, ".4f"), ""]), "results.md")
