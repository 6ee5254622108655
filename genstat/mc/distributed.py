"""torch.distributed helpers: which blocks a rank owns, and an exact, order-preserving gather.

Nothing here initialises a process group; when ``torch.distributed`` is initialised (e.g. under
``torchrun``), the engine shards blocks ``b ≡ rank (mod world)`` and gathers the per-block
statistics so every rank reduces the same array in block order.
"""
from __future__ import annotations

import torch

__all__ = ["world", "gather_blocks"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_blocks(rows: torch.Tensor, owned: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Assemble per-block rows computed on different ranks into one (n_blocks, m) tensor.

    Each rank passes the rows of the blocks it owns (``owned`` gives their indices). Rows are
    placed in a zero tensor and summed across ranks; since every block is owned by exactly one
    rank, the sum adds only exact zeros, so the result is bitwise the single-process array.
    """
    import torch.distributed as dist

    full = torch.zeros((n_blocks, rows.shape[-1]), dtype=torch.float64, device=rows.device)
    if owned.numel():
        full[owned] = rows.to(torch.float64)
    rank, size = world()
    if size > 1:
        backend = dist.get_backend()
        tmp = full if (backend != "nccl" or full.is_cuda) else full.cuda()
        if backend == "gloo" and tmp.is_cuda:
            tmp = tmp.cpu()
        dist.all_reduce(tmp, op=dist.ReduceOp.SUM)
        full = tmp.to(rows.device)
    return full
