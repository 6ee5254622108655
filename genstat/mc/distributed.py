"""torch.distributed helpers: which blocks a rank owns, and an exact, order-preserving gather.

Nothing here initialises a process group; when ``torch.distributed`` is initialised (e.g. under
``torchrun``), the engine shards blocks ``b ≡ rank (mod world)`` and gathers the per-block
statistics so every rank reduces the same array in block order. :func:`no_sharding` turns that off
for code that runs on one rank only (e.g. a training loop run by rank 0 of a torchrun job).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

__all__ = ["world", "gather_blocks", "no_sharding", "all_reduce_"]

_local = threading.local()


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised or inside
    :func:`no_sharding`."""
    if getattr(_local, "off", 0):
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def no_sharding() -> Iterator[None]:
    """Run the engine as one process inside this block, even under an initialised process group.

    For work that only one rank does (rank 0 of a ``torchrun`` job running a training loop):
    without it, :func:`genstat.mc.estimate` would wait for the other ranks' blocks forever.
    """
    _local.off = getattr(_local, "off", 0) + 1
    try:
        yield
    finally:
        _local.off -= 1


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce of a float64 tensor across ranks (a no-op in one process).

    Moves the tensor to CUDA for nccl and to CPU for gloo as needed; returns ``t``.
    """
    rank, size = world()
    if size == 1:
        return t
    import torch.distributed as dist

    backend = dist.get_backend()
    tmp = t
    if backend == "nccl" and not tmp.is_cuda:
        tmp = tmp.cuda()
    elif backend == "gloo" and tmp.is_cuda:
        tmp = tmp.cpu()
    dist.all_reduce(tmp, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    if tmp is not t:
        t.copy_(tmp.to(t.device))
    return t


def gather_blocks(rows: torch.Tensor, owned: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Assemble per-block rows computed on different ranks into one (n_blocks, m) tensor.

    Each rank passes the rows of the blocks it owns (``owned`` gives their indices). Rows are
    placed in a zero tensor and summed across ranks; since every block is owned by exactly one
    rank, the sum adds only exact zeros, so the result is bitwise the single-process array.
    """
    full = torch.zeros((n_blocks, rows.shape[-1]), dtype=torch.float64, device=rows.device)
    if owned.numel():
        full[owned] = rows.to(torch.float64)
    return all_reduce_(full)
