"""``python -m genstat.experiments.gpu_check``: CPU vs CUDA timings of the main computations.

Writes ``docs/gpu.md`` (or ``--out``): engine throughput (samples/s of :func:`genstat.mc.estimate`
on a simple integrand) at batch sizes 2^16 .. 2^22, then one LightSB fit, one interpolant fit, the
batched cumulant Gaussianity test and the batched GGD fit, each timed on the CPU and on CUDA. A
task that raises on one device is reported in the table with its error instead of stopping the
check. Without a CUDA device it prints ``no CUDA device: skipping GPU check``, leaves the page as
it is and exits 0. ``make gpu-check`` runs it after the ``gpu``-marked tests.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["main", "engine_rows", "task_rows", "NO_CUDA"]

NO_CUDA = "no CUDA device: skipping GPU check"
COMMAND = "make gpu-check   # = pytest -m gpu, then python -m genstat.experiments.gpu_check"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (kernels, caches, allocator)."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def engine_rows(devices: list[torch.device], *, batches=tuple(2**k for k in range(16, 23)), dim: int = 8,
                n_samples: int = 2**24, repeats: int = 2) -> list[dict]:
    """Samples per second of ``estimate`` (two expectations of N(0, I_dim), float32) per batch size."""
    from genstat.mc import estimate

    def sampler(n, g, d):
        return torch.randn(n, dim, generator=g, device=d)

    def fn(x):
        return torch.stack([x.sum(1), (x * x).sum(1)], 1)

    rows = []
    for batch in batches:
        row = {"batch_size": batch, "n_samples": n_samples}
        for dev in devices:
            t = _best(lambda: estimate(fn, sampler, n_samples, batch_size=batch, seed=0, device=dev), dev, repeats)
            row[f"{dev.type}_Msamples_per_s"] = n_samples / t / 1e6
        if len(devices) == 2:
            row["cuda_over_cpu"] = row["cuda_Msamples_per_s"] / row["cpu_Msamples_per_s"]
        rows.append(row)
    return rows


def _lightsb(dev: torch.device) -> Callable[[], object]:
    from genstat.lightsb import LightSB, random_gaussian_eot
    from genstat.mc import block_generator

    eot = random_gaussian_eot(16, 1.0, seed=0)
    g_cpu = block_generator(0, 0, "cpu", stream=1)
    src = eot.sample_source(2**16, g_cpu).to(dev, torch.float32)
    tgt = eot.sample_target(2**16, g_cpu).to(dev, torch.float32)

    def run():
        model = LightSB(16, 10, 1.0, device=dev)
        model.fit(src, tgt, steps=300, batch_size=1024, generator=block_generator(0, 0, dev, stream=2))

    return run


def _interpolant(dev: torch.device) -> Callable[[], object]:
    from genstat.datasets import toy2d_sampler
    from genstat.interpolants import Interpolant, fit
    from genstat.mc import block_generator
    from genstat.nn import TimeMLP

    g = block_generator(0, 0, "cpu", stream=3)
    src = toy2d_sampler("8gaussians")(2**16, g).to(dev)
    tgt = toy2d_sampler("moons")(2**16, g).to(dev)

    def run():
        model = TimeMLP(2, hidden=256, depth=3, generator=block_generator(0, 0, stream=4)).to(dev)
        fit(Interpolant("linear"), model, src, tgt, steps=200, batch_size=4096,
            generator=block_generator(0, 0, dev, stream=5))

    return run


def _cumulant_test(dev: torch.device) -> Callable[[], object]:
    from estimators.cumulants import gaussianity_test
    from estimators.cumulants.signals import complex_noise
    from genstat.mc import block_generator

    x = complex_noise(10_000, 1024, generator=block_generator(0, 0, "cpu", stream=6)).to(dev)
    return lambda: gaussianity_test(x)


def _ggd(dev: torch.device) -> Callable[[], object]:
    from estimators.td import GeneralizedGaussian, fit_ggd
    from genstat.mc import block_generator

    kw = dict(dtype=torch.float64, device=dev)
    dist = GeneralizedGaussian(torch.tensor(0.0, **kw), torch.tensor(1.0, **kw), torch.tensor(1.5, **kw))
    x = dist.sample((1000, 10_000), generator=block_generator(0, 0, dev, stream=7))
    return lambda: fit_ggd(x)


TASKS: dict[str, tuple[str, Callable[[torch.device], Callable[[], object]]]] = {
    "LightSB fit": ("d=16, K=10, 300 Adam steps, batch 1024", _lightsb),
    "interpolant fit": ("8gaussians->moons, MLP 256x3, 200 steps, batch 4096", _interpolant),
    "cumulant Gaussianity test": ("10^4 complex records x 1024, chi2 c40_c42", _cumulant_test),
    "fit_ggd": ("1000 groups x 10^4, float64", _ggd),
}


def task_rows(devices: list[torch.device], *, repeats: int = 1) -> list[dict]:
    """Seconds of each task in :data:`TASKS` per device (best of ``repeats`` after a warm-up)."""
    rows = []
    for name, (size, make) in TASKS.items():
        row = {"task": name, "size": size}
        for dev in devices:
            try:
                row[f"{dev.type}_s"] = _best(make(dev), dev, repeats)
            except Exception as exc:  # reported in the table: one broken task must not hide the others
                row[f"{dev.type}_s"] = math.nan
                row[f"{dev.type}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        if len(devices) == 2:
            row["speedup"] = row["cpu_s"] / row["cuda_s"]
        rows.append(row)
    return rows


def _page(engine: list[dict], tasks: list[dict], device_name: str, wall: float) -> str:
    import pandas as pd

    from .runner import markdown_table

    errors = [f"- {r['task']} on {d}: {r[f'{d}_error']}" for r in tasks for d in ("cpu", "cuda")
              if f"{d}_error" in r]
    tasks_df = pd.DataFrame([{k: v for k, v in r.items() if not k.endswith("_error")} for r in tasks])
    return "\n".join([
        "# GPU check",
        "",
        f"Made by `{COMMAND}` on {_dt.date.today().isoformat()}: {device_name}, CPU "
        f"{platform.processor() or platform.machine()} with {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; {wall:.0f} s in all. Times are the best of a few calls after a warm-up, "
        "with `torch.cuda.synchronize()` before each clock read.",
        "",
        "## Engine throughput (`genstat.mc.estimate`, two expectations of N(0, I_8), float32, 2^24 samples)",
        "",
        markdown_table(pd.DataFrame(engine), ".3g"),
        "## Library computations (seconds)",
        "",
        markdown_table(tasks_df, ".3g"),
        *(["Errors:", "", *errors, ""] if errors else []),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m genstat.experiments.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/gpu.md", help="markdown page to write (default docs/gpu.md)")
    ap.add_argument("--quick", action="store_true", help="smaller engine sizes (a smoke run)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    t0 = time.perf_counter()
    devices = [torch.device("cpu"), torch.device("cuda")]
    kw = dict(batches=(2**16, 2**18), n_samples=2**20) if args.quick else {}
    engine = engine_rows(devices, **kw)
    for r in engine:
        print(f"engine batch {r['batch_size']:>8d}: cpu {r['cpu_Msamples_per_s']:8.1f}  "
              f"cuda {r['cuda_Msamples_per_s']:8.1f} Msamples/s", flush=True)
    tasks = task_rows(devices)
    for r in tasks:
        print(f"{r['task']:<28s} cpu {r['cpu_s']:8.3f} s  cuda {r['cuda_s']:8.3f} s", flush=True)
    page = _page(engine, tasks, torch.cuda.get_device_name(0), time.perf_counter() - t0)
    Path(args.out).write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
