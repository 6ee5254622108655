"""Experiment kinds of the Monte Carlo engine: ``mc.bench`` (throughput against hand-written loops)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from genstat.mc import estimate

from .registry import experiment
from .runner import Run, markdown_table

__all__ = ["BenchParams", "run_bench"]


class BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(16, ge=1)
    n_samples: int = Field(2**22, ge=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [4096, 65536, 262144])
    repeats: int = Field(3, ge=1)
    threads: int = Field(0, ge=0, description="torch threads (0: leave as is)")


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
