"""Many independent replications (size/power curves, coverage checks, bootstraps) as RNG blocks."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .distributed import gather_blocks, world
from .engine import _check_int
from .rng import as_device, block_generator

__all__ = ["replicate"]


def replicate(
    fn: Callable[[int, torch.Generator, torch.device], torch.Tensor],
    n_reps: int,
    *,
    block_size: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    stream: int = 1,
) -> torch.Tensor:
    """Run ``n_reps`` seeded replications, ``block_size`` at a time, and stack their outputs.

    ``fn(n, generator, device)`` computes ``n`` replications at once (vectorised) and returns a
    tensor of shape (n, ...). Block ``b`` (replications ``b*block_size ...``) draws from a generator
    seeded from ``(seed, b)``; under ``torch.distributed`` blocks are sharded over ranks and
    gathered in order, so the output is the same for any world size.

    Parameters
    ----------
    fn : callable
        ``fn(n, generator, device) -> Tensor`` of shape (n, ...).
    n_reps : int
        Number of replications.
    block_size : int
        Replications per block (the unit of seeding): changing it changes the stream.
    seed : int
        Seed of the block generators.
    device : str or torch.device, optional
        Device of the generators.
    stream : int
        Key separating this stream from :func:`genstat.mc.estimate`'s for the same seed.

    Returns
    -------
    Tensor, shape (n_reps, ...)
        Outputs in replication order (on ``device``; dtype of ``fn``'s output).

    Examples
    --------
    >>> import torch
    >>> from genstat.mc import replicate
    >>> means = replicate(lambda n, g, d: torch.randn(n, 100, generator=g).mean(1), 50, block_size=10)
    >>> means.shape
    torch.Size([50])
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    n_reps = _check_int("n_reps", n_reps, 1)
    block_size = _check_int("block_size", block_size, 1)
    dev = as_device(device)
    n_blocks = math.ceil(n_reps / block_size)
    rank, size = world()
    outs, owned = [], []
    shape_tail, dtype = None, None
    for b in range(rank, n_blocks, size):
        m = min(block_size, n_reps - b * block_size)
        y = fn(m, block_generator(seed, b, dev, stream=stream), dev)
        if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != m:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"fn must return a tensor with leading dimension {m} (block {b}), got {shape}")
        if shape_tail is None:
            shape_tail, dtype = tuple(y.shape[1:]), y.dtype
        outs.append(y)
        owned.append(b)
    if size == 1:
        return torch.cat(outs, 0)
    import torch.distributed as dist

    # a rank may own no block (fewer blocks than workers): rank 0 always owns block 0 and tells
    # the others the shape and dtype of one replication
    meta = [shape_tail, dtype]
    dist.broadcast_object_list(meta, src=0)
    shape_tail, dtype = meta
    per = math.prod(shape_tail)
    rows = torch.zeros((len(outs), per * block_size), dtype=torch.float64, device=dev)
    for i, y in enumerate(outs):
        if tuple(y.shape[1:]) != shape_tail:
            raise ValueError(f"fn returned shape {tuple(y.shape)} in block {owned[i]}, inconsistent with "
                             f"block 0 (n, {', '.join(map(str, shape_tail))})")
        flat = y.reshape(-1).to(torch.float64)
        rows[i, : flat.numel()] = flat
    full = gather_blocks(rows, torch.tensor(owned, dtype=torch.long, device=dev), n_blocks)
    full = full.reshape(n_blocks * block_size, per)[:n_reps]
    return full.reshape((n_reps,) + shape_tail).to(dtype)
