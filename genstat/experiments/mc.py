"""Experiment kinds of the Monte Carlo engine: ``mc.bench`` (throughput against hand-written loops)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genstat.mc import estimate

from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["BenchParams", "run_bench"]


class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(16, ge=1, le=4096)
    n_samples: int = Field(2**22, ge=1, le=2**34)
    batch_sizes: list[int] = Field(default_factory=lambda: [4096, 65536, 262144], min_length=1, max_length=16)
    repeats: int = Field(3, ge=1, le=1000)
    threads: int = Field(0, ge=0, le=1024, description="torch threads (0: leave as is)")
    small_n: list[int] = Field(default_factory=lambda: [1000, 10000], max_length=16,
                               description="small runs timed call by call (fixed per-call overhead)")
    small_repeats: int = Field(200, ge=1, le=100_000, description="calls per small-n timing (best one kept)")
    memory_n: list[int] = Field(default_factory=list, max_length=8,
                                description="n for the peak-memory rows (fresh process each, k = memory_k)")
    memory_k: int = Field(30, ge=1, le=1000)

    @field_validator("batch_sizes", "small_n", "memory_n")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if not 1 <= x <= 2**34]
        if bad:
            raise ValueError(f"sizes must be in [1, 2**34], got {bad}")
        return v


def _torch_fn(x: torch.Tensor) -> torch.Tensor:
    r2 = (x * x).sum(1)
    return torch.stack([x.sum(1), r2, torch.exp(-0.5 * r2 / x.shape[1]), torch.cos(x[:, 0] * x[:, 1])], 1)


def _numpy_fn(x: np.ndarray) -> np.ndarray:
    r2 = (x * x).sum(1)
    return np.stack([x.sum(1), r2, np.exp(-0.5 * r2 / x.shape[1]), np.cos(x[:, 0] * x[:, 1])], 1)


def _hand_torch(n: int, batch: int, dim: int, seed: int) -> tuple[np.ndarray, float]:
    """What a user would write: one generator, a loop over batches, float64 sums."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    s1 = torch.zeros(4, dtype=torch.float64)
    s2 = torch.zeros(4, dtype=torch.float64)
    done = 0
    while done < n:
        m = min(batch, n - done)
        y = _torch_fn(torch.randn(m, dim, generator=g)).to(torch.float64)
        s1 += y.sum(0)
        s2 += (y * y).sum(0)
        done += m
    mean = s1 / n
    _ = torch.sqrt((s2 / n - mean**2) / (n - 1))
    return mean.numpy(), time.perf_counter() - t0


def _hand_numpy(n: int, batch: int, dim: int, seed: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    s1 = np.zeros(4)
    s2 = np.zeros(4)
    done = 0
    while done < n:
        m = min(batch, n - done)
        y = _numpy_fn(rng.standard_normal((m, dim), dtype=np.float32)).astype(np.float64)
        s1 += y.sum(0)
        s2 += (y * y).sum(0)
        done += m
    return s1 / n, time.perf_counter() - t0


@experiment("mc.bench", BenchParams, help="throughput of genstat.mc.estimate vs hand-written torch and numpy loops")
def run_bench(p: BenchParams, run: Run) -> None:
    if p.threads:
        torch.set_num_threads(p.threads)
    dim = p.dim

    def sampler(n, g, d):
        return torch.randn(n, dim, generator=g, device=d)

    rows = []
    for batch in p.batch_sizes:
        times = {"engine": [], "torch_loop": [], "numpy_loop": []}
        for rep in range(p.repeats):
            r = estimate(_torch_fn, sampler, p.n_samples, batch_size=batch, seed=run.seed + rep, device=run.device)
            times["engine"].append(r.wall_time)
            times["torch_loop"].append(_hand_torch(p.n_samples, batch, dim, run.seed + rep)[1])
            times["numpy_loop"].append(_hand_numpy(p.n_samples, batch, dim, run.seed + rep)[1])
        best = {k: min(v) for k, v in times.items()}
        row = {
            "case": "throughput",
            "batch_size": batch,
            "n_samples": p.n_samples,
            "engine_s": best["engine"],
            "torch_loop_s": best["torch_loop"],
            "numpy_loop_s": best["numpy_loop"],
            "engine_Msamples_per_s": p.n_samples / best["engine"] / 1e6,
            "engine_over_torch_loop": best["engine"] / best["torch_loop"],
            "engine_over_numpy_loop": best["engine"] / best["numpy_loop"],
            "threads": torch.get_num_threads(),
        }
        rows.append(row)
        run.add_results(row)
        run.log(f"batch {batch:>7d}: engine {best['engine']:.3f}s  torch loop {best['torch_loop']:.3f}s  "
                f"numpy loop {best['numpy_loop']:.3f}s  overhead x{row['engine_over_torch_loop']:.3f}")
    df = pd.DataFrame(rows)
    run.save_text(markdown_table(df, ".3f"),
                  "results.md")
    if p.small_n:
        small = _bench_small(p, run, sampler)
        run.save_text(markdown_table(small, ".3f"), "small_n.md")
    if p.memory_n:
        mem = pd.DataFrame([_peak_memory(n, p.memory_k, run.seed) for n in p.memory_n])
        run.save_table(mem, "memory")
        run.save_text(markdown_table(mem, ".1f"), "memory.md")
        for _, r in mem.iterrows():
            run.log(f"memory: n = {int(r['n_samples']):>11,d}, k = {int(r['k'])}: peak RSS +{r['peak_rss_mib']:.1f} MiB")


def _bench_small(p: BenchParams, run: Run, sampler) -> pd.DataFrame:
    """Per-call time at small n, where the engine's fixed cost (seeding, statistics) shows."""
    rows = []
    for n in p.small_n:
        eng, hand = [], []
        for rep in range(p.small_repeats):
            t0 = time.perf_counter()
            estimate(_torch_fn, sampler, n, seed=run.seed + rep, device=run.device)
            eng.append(time.perf_counter() - t0)
            hand.append(_hand_torch(n, n, p.dim, run.seed + rep)[1])
        row = {"case": "small_n", "n_samples": n, "engine_us": 1e6 * min(eng), "torch_loop_us": 1e6 * min(hand),
               "engine_over_torch_loop": min(eng) / min(hand), "threads": torch.get_num_threads()}
        rows.append(row)
        run.add_results(row)
        run.log(f"n {n:>7d}: engine {row['engine_us']:.0f} us  torch loop {row['torch_loop_us']:.0f} us  "
                f"x{row['engine_over_torch_loop']:.2f}")
    return pd.DataFrame(rows)


def _peak_memory(n: int, k: int, seed: int) -> dict:
    """Peak RSS growth (sampled every 2 ms from /proc) of one estimate with k outputs, in a fresh process."""
    code = textwrap.dedent(f"""
        import json, os, threading, time, torch
        from genstat.mc import estimate
        torch.set_num_threads(1)
        page = os.sysconf("SC_PAGE_SIZE")

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        s = lambda m, g, d: torch.randn(m, 1, generator=g, device=d)
        estimate(lambda x: x.expand(-1, {k}), s, 2**16, seed=0, batch_size=2**16)  # warm up
        base, peak, stop = rss(), [0], threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.002)

        th = threading.Thread(target=watch)
        th.start()
        t0 = time.perf_counter()
        estimate(lambda x: x.expand(-1, {k}), s, {n}, seed={seed}, batch_size=2**16)
        dt = time.perf_counter() - t0
        stop.set()
        th.join()
        print(json.dumps({{"peak_rss_mib": (max(peak[0], rss()) - base) / 2**20, "seconds": dt}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe failed: {out.stderr[-1000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"case": "memory", "n_samples": n, "k": k, **res}
