"""The batched, block-seeded Monte Carlo engine: :func:`estimate`.

Reproducibility contract
------------------------
Samples are drawn in fixed-size blocks (``block_size``, default 4096); block ``b`` uses a generator
seeded from ``(seed, b)`` only. A batch is a group of whole blocks; under ``torch.distributed``
rank ``r`` computes the blocks ``b ≡ r (mod world)``. Every block yields its own sufficient
statistics (:class:`~genstat.mc.moments.RunningMoments`), the per-block statistics are assembled in
block order and reduced by one closed-form formula. Hence the same seed gives the same estimate
whatever the batch size and the number of workers, and a repeated call is bitwise equal.
With ``target_rse`` the stopping rule is checked only at block counts 1, 2, 4, 8, ... (a schedule
that does not depend on the batch or world size), so sequential runs keep the contract too.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from .distributed import gather_blocks, world
from .moments import RunningMoments
from .result import MCResult
from .rng import as_device, block_generator, sample_distribution

__all__ = ["estimate", "DEFAULT_BLOCK_SIZE"]

DEFAULT_BLOCK_SIZE = 4096
_CPU_MEMORY_BUDGET = 256 * 2**20


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _make_sampler(sampler) -> Callable[[int, torch.Generator, torch.device], torch.Tensor]:
    if isinstance(sampler, torch.distributions.Distribution):
        dist = sampler
        return lambda n, gen, dev: sample_distribution(dist, n, gen)
    if callable(sampler):
        return sampler
    raise TypeError(
        "sampler must be a callable (n, generator, device) -> Tensor or a "
        f"torch.distributions.Distribution, got {type(sampler).__name__}"
    )


def estimate(
    fn: Callable[[torch.Tensor], torch.Tensor],
    sampler,
    n_samples: int,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    log_weight: Callable[[torch.Tensor], torch.Tensor] | None = None,
    self_normalized: bool = False,
    target_rse: float | None = None,
    level: float = 0.95,
    progress: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    memory_budget: int | None = None,
    names: list[str] | tuple[str, ...] | None = None,
) -> MCResult:
    """Estimate ``E[fn(X)]`` (one or ``k`` expectations at once) by Monte Carlo.

    Parameters
    ----------
    fn : callable
        ``fn(x) -> Tensor`` of shape (n,) or (n, k): k expectations from the same samples.
    sampler : callable or torch.distributions.Distribution
        ``sampler(n, generator, device) -> Tensor`` of shape (n, ...), drawing only from
        ``generator``; or a distribution (sampled with the block generator, never the global RNG).
    n_samples : int
        Number of samples (the budget when ``target_rse`` is given).
    batch_size : int, optional
        Samples per call of ``fn``, rounded down to whole blocks (at least one). When omitted it is
        chosen from a memory budget (256 MiB on CPU, a quarter of the free memory on CUDA).
    seed : int
        Seed; block ``b`` draws from a generator seeded from ``(seed, b)``.
    device : str or torch.device, optional
        Where samples are drawn (default CPU).
    log_weight : callable, optional
        ``log_weight(x) -> (n,)`` = log p(x) - log q(x) for samples x ~ q: importance sampling.
    self_normalized : bool
        With ``log_weight``: the self-normalised estimator ``sum w f / sum w`` (``p`` may be
        unnormalised); otherwise the unbiased ``mean(w f)``.
    target_rse : float, optional
        Stop once every component's relative standard error is below this (checked after
        1, 2, 4, ... blocks) or the budget is spent.
    level : float
        Default level of :meth:`MCResult.confidence_interval`.
    progress : bool
        Show a tqdm bar (only when stderr is a terminal).
    block_size : int
        RNG block size. Changing it changes the random stream; batch size and world size do not.
    memory_budget : int, optional
        Bytes per batch used to pick ``batch_size`` when it is not given.
    names : sequence of str, optional
        Component names for :meth:`MCResult.to_frame`.

    Returns
    -------
    MCResult
        ``estimate``, ``stderr``, ``n_samples``, ``ess`` (weighted only), ``wall_time``, ``covariance``.

    Raises
    ------
    ValueError
        ``n_samples < 1``, a sampler returning the wrong number of samples, ``fn`` returning the
        wrong shape or non-finite values (the message gives how many and in which block).

    Examples
    --------
    >>> import torch
    >>> from genstat.mc import estimate
    >>> r = estimate(lambda x: x[:, 0] ** 2, lambda n, g, d: torch.randn(n, 1, generator=g, device=d,
    ...              dtype=torch.float64), 20_000, seed=1)
    >>> abs(float(r.estimate) - 1.0) < 5 * float(r.stderr)
    True
    """
    t_start = time.perf_counter()
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    _check_int("n_samples", n_samples, 1)
    _check_int("block_size", block_size, 1)
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1)
    if log_weight is not None and not callable(log_weight):
        raise TypeError(f"log_weight must be callable, got {type(log_weight).__name__}")
    if self_normalized and log_weight is None:
        raise ValueError("self_normalized=True needs log_weight")
    if target_rse is not None and not (target_rse > 0 and math.isfinite(target_rse)):
        raise ValueError(f"target_rse must be a positive finite float, got {target_rse}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    dev = as_device(device)
    draw = _make_sampler(sampler)
    mode = "plain" if log_weight is None else ("sn" if self_normalized else "is")

    n_blocks = math.ceil(n_samples / block_size)
    rank, size = world()
    if target_rse is None:
        checkpoints = [n_blocks]
    else:
        checkpoints, c = [], 1
        while c < n_blocks:
            checkpoints.append(c)
            c *= 2
        checkpoints.append(n_blocks)

    blocks_per_batch = None if batch_size is None else max(1, batch_size // block_size)
    budget = memory_budget
    k_out: int | None = None
    scalar_out = False
    all_rows: list[torch.Tensor] = []
    done = 0
    stats = None
    converged = None
    bar = tqdm(total=n_samples, disable=not (progress and sys.stderr.isatty()), unit="sample", leave=False)

    def block_len(b: int) -> int:
        return min(block_size, n_samples - b * block_size)

    def run_group(group: list[int]) -> tuple[torch.Tensor, int]:
        nonlocal k_out, scalar_out
        xs = []
        for b in group:
            m = block_len(b)
            x = draw(m, block_generator(seed, b, dev), dev)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"sampler must return a torch.Tensor, got {type(x).__name__}")
            if x.ndim == 0 or x.shape[0] != m:
                raise ValueError(
                    f"sampler returned a batch of shape {tuple(x.shape)} for n={m} (block {b}); "
                    f"expected leading dimension {m}"
                )
            xs.append(x)
        x = xs[0] if len(xs) == 1 else torch.cat(xs, 0)
        y = fn(x)
        n = x.shape[0]
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"fn must return a torch.Tensor, got {type(y).__name__}")
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(f"fn must return shape ({n},) or ({n}, k), got {tuple(y.shape)}")
        if k_out is None:
            scalar_out = y.ndim == 1
            k_out = 1 if y.ndim == 1 else y.shape[1]
        elif (1 if y.ndim == 1 else y.shape[1]) != k_out or (y.ndim == 1) != scalar_out:
            raise ValueError(f"fn returned shape {tuple(y.shape)}, inconsistent with earlier batches (k={k_out})")
        y = y.reshape(n, k_out).to(torch.float64)
        lw = None
        if log_weight is not None:
            lw = log_weight(x)
            if not isinstance(lw, torch.Tensor) or lw.shape != (n,):
                shape = tuple(lw.shape) if isinstance(lw, torch.Tensor) else type(lw).__name__
                raise ValueError(f"log_weight must return shape ({n},), got {shape}")
            lw = lw.to(torch.float64)
            nbad = int((torch.isnan(lw) | torch.isposinf(lw)).sum())
            if nbad:
                raise ValueError(f"log_weight returned {nbad} NaN/+inf value(s) in blocks {group[0]}..{group[-1]}")
        if mode == "is":
            w = torch.exp(lw)[:, None]
            y = torch.cat([w * y, w], 1)
            lw = None
        lens = [block_len(b) for b in group]
        if all(m == lens[0] for m in lens):
            mom = RunningMoments.from_batch(y, lw, blocks=len(group), keep_blocks=True)
        else:
            parts, o = [], 0
            for m in lens:
                parts.append(RunningMoments.from_batch(y[o : o + m], None if lw is None else lw[o : o + m]))
                o += m
            mom = RunningMoments.stack(parts)
        if not bool(torch.isfinite(mom.mean).all()):
            _raise_non_finite(y, group, lens, seed, block_size)
        rows = mom.flatten_blocks()
        # bytes per sample (input + float64 output), for sizing batches from a memory budget
        return rows, x[0].numel() * x.element_size() + 8 * k_out

    for cp in checkpoints:
        mine = [b for b in range(done, cp) if b % size == rank]
        rows_here: list[torch.Tensor] = []
        i = 0
        while i < len(mine):
            if blocks_per_batch is None:
                group = mine[i : i + 1]
            else:
                group = mine[i : i + blocks_per_batch]
            try:
                rows, sample_bytes = run_group(group)
            except torch.cuda.OutOfMemoryError:
                if len(group) == 1:
                    raise
                blocks_per_batch = max(1, len(group) // 2)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if blocks_per_batch is None:
                blocks_per_batch = _auto_blocks(dev, block_size, sample_bytes, budget)
            rows_here.append(rows)
            i += len(group)
            bar.update(sum(block_len(b) for b in group))
        width = 4 + 2 * _k_stat(k_out, mode) + 2 * _k_stat(k_out, mode) ** 2 if k_out is not None else None
        if size > 1:
            width = _agree_width(width, dev)
        local = torch.cat(rows_here, 0) if rows_here else torch.zeros((0, width), dtype=torch.float64, device=dev)
        owned = torch.tensor([b - done for b in mine], dtype=torch.long, device=local.device)
        full = gather_blocks(local, owned, cp - done)
        all_rows.append(full)
        if k_out is None:
            k_out = _infer_k(width, mode)
            scalar_out = False
        done = cp
        stats = _reduce(torch.cat(all_rows, 0), _k_stat(k_out, mode))
        if target_rse is not None:
            est, se, _, _ = _summarise(stats, mode, k_out)
            converged = bool(torch.all(se <= target_rse * est.abs()))
            if converged:
                break
    bar.close()
    est, se, cov, ess = _summarise(stats, mode, k_out)
    est, se, cov = est.cpu(), se.cpu(), cov.cpu()
    if scalar_out:
        est, se = est[0], se[0]
    n_used = sum(block_len(b) for b in range(done))
    if names is not None and len(names) != k_out:
        raise ValueError(f"names must have length {k_out}, got {len(names)}")
    return MCResult(
        estimate=est,
        stderr=se,
        n_samples=n_used,
        ess=None if ess is None else ess.cpu(),
        wall_time=time.perf_counter() - t_start,
        covariance=cov,
        level=float(level),
        n_blocks=done,
        converged=converged,
        names=tuple(names) if names is not None else None,
    )


def _k_stat(k: int, mode: str) -> int:
    return k + 1 if mode == "is" else k


def _infer_k(width: int, mode: str) -> int:
    # width = 4 + 2k + 2k^2
    ks = int(round((-2 + math.sqrt(4 - 8 * (4 - width))) / 4))
    return ks - 1 if mode == "is" else ks


def _agree_width(width, dev) -> int:
    import torch.distributed as dist

    t = torch.tensor([0 if width is None else width], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _reduce(rows: torch.Tensor, k: int) -> RunningMoments:
    return RunningMoments.unflatten_blocks(rows, k).reduce()


def _raise_non_finite(y: torch.Tensor, group: list[int], lens: list[int], seed: int, block_size: int) -> None:
    o = 0
    for b, m in zip(group, lens):
        cnt = int((~torch.isfinite(y[o : o + m])).any(1).sum())
        if cnt:
            raise ValueError(
                f"fn returned {cnt} non-finite value(s) (NaN or inf) in block {b} "
                f"(samples {b * block_size}..{b * block_size + m - 1}, seed {seed})"
            )
        o += m
    raise ValueError("fn returned values whose block statistics overflow (too large for float64)")


def _summarise(stats: RunningMoments, mode: str, k: int):
    n = stats.count.to(torch.float64)
    if mode == "plain":
        cov = stats.covariance() / n
        return stats.mean, torch.sqrt(torch.diagonal(cov).clamp_min(0)), cov, None
    if mode == "is":
        full = stats.covariance() / n
        cov = full[:k, :k]
        mean_w = stats.mean[k]
        var_w = stats.variance()[k]
        ess = n * mean_w**2 / (var_w * (n - 1) / n + mean_w**2)
        return stats.mean[:k], torch.sqrt(torch.diagonal(cov).clamp_min(0)), cov, ess
    cov = stats.self_normalized_covariance()
    return stats.mean, torch.sqrt(torch.diagonal(cov).clamp_min(0)), cov, stats.ess


def _auto_blocks(dev: torch.device, block_size: int, sample_bytes: int, budget: int | None) -> int:
    """Blocks per batch from a memory budget and the bytes one sample took in the first batch."""
    if budget is None:
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            budget = free // 4
        else:
            budget = _CPU_MEMORY_BUDGET
    # intermediates of fn are typically a few times the input size
    return int(max(1, min(1024, budget // (8 * sample_bytes * block_size))))
