"""Sums and exponentials whose rounding depends only on the block, not on batching, threads or ranks.

torch's CPU kernels are fast, but their rounding can depend on exactly what the engine's contract
says must not matter (measured: the same block's second moments differed in the last bit between a
batch of one block and a batch of five, and between a 2-thread process and a torchrun worker):

* BLAS (``bmm``, ``einsum``, ``@``) chooses kernels, and may split the summed dimension over
  threads, by shape, batch count and thread count;
* a reduction to one number over >= ``_GRAIN`` elements is split over the threads;
* elementwise transcendental functions use a vectorised kernel except for the last elements of each
  thread's chunk, which go through the scalar libm function (they can differ by one ulp), and the
  chunk boundaries depend on the batch size and the thread count.

So the engine never uses BLAS for its statistics: sums of products are elementwise products reduced
by ``torch.sum`` along the sample dimension (which torch parallelises over the outputs only when
there are several, keeping each output's order), long sample dimensions are summed in fixed chunks, and exponentials of large
batches are taken block by block. On CUDA the order of a reduction is fixed by its shape and no
scalar/vector split exists, so the fast single calls are kept there.
"""
from __future__ import annotations

import torch

__all__ = ["chunked_sum", "gram", "gram_last", "exp_blocks"]

#: torch (at::internal::GRAIN_SIZE) splits a reduction to one output over threads from this size
_GRAIN = 32768
#: sample-dimension chunk: below _GRAIN, so a one-output reduction of a chunk is always serial
_CHUNK = 16384
#: largest temporary of all k^2 products that gram_last builds in one go
_OUTER_BYTES = 1 << 20
#: elements per unrolled vector step (two AVX-512 double vectors); block sizes that are multiples
#: of it never put a block's elements through the scalar tail of a single-threaded kernel
_LANES = 16


def chunked_sum(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t.sum(dim)``, rounded the same way for every batch count and thread count: a sample axis
    longer than ``_CHUNK`` is summed in zero-padded chunks of ``_CHUNK``, then over the chunks."""
    dim = dim % t.ndim
    n = t.shape[dim]
    if n <= _CHUNK:
        return t.sum(dim)
    pad = (-n) % _CHUNK
    if pad:
        t = torch.cat([t, t.new_zeros(t.shape[:dim] + (pad,) + t.shape[dim + 1 :])], dim)
    return t.reshape(t.shape[:dim] + (-1, _CHUNK) + t.shape[dim + 1 :]).sum(dim + 1).sum(dim)


def gram_last(xt: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrices of samples stored last: ``xt`` (k, B, n) -> (B, k, k),
    ``sum_t weight[b, t] xt[i, b, t] xt[j, b, t]`` (``weight`` (B, n), default 1).

    The engine's layout (one contiguous row of samples per component and block), so every sum is a
    contiguous, vectorised reduction. Exactly symmetric: ``a_i a_j`` equals ``a_j a_i`` bit for bit and
    every entry is summed over the same contiguous row, so the upper triangle is mirrored.
    """
    k, B, n = xt.shape

    def products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p = a * b
        return p if weight is None else p.mul_(weight)

    if k == 1:
        return chunked_sum(products(xt[0], xt[0]), -1)[:, None, None]
    if k * k * B * n * xt.element_size() <= _OUTER_BYTES:
        # small: all k^2 products at once (two ops instead of ~3k); bitwise the rows below
        return chunked_sum(products(xt[:, None], xt[None]), -1).permute(2, 0, 1).contiguous()
    out = xt.new_zeros((B, k, k))
    for i in range(k):
        out[:, i, i:] = chunked_sum(products(xt[i : i + 1], xt[i:]), -1).T
    return out + torch.triu(out, 1).transpose(1, 2)  # adds exact zeros


def gram(a: torch.Tensor, b: torch.Tensor | None = None, *, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_t a[:, t, i] * b[:, t, j]`` for (B, n, k) inputs, without BLAS; shape (B, k, k).

    With ``b`` omitted: :func:`gram_last` of ``a`` (weighted by ``weight`` (B, n)) after one copy to the
    samples-last layout.
    """
    at = a.permute(2, 0, 1).contiguous()
    if b is None:
        return gram_last(at, weight)
    bt = b.permute(2, 0, 1).contiguous()
    return torch.stack([chunked_sum(at[i : i + 1] * bt, -1).T for i in range(at.shape[0])], 1)


def exp_blocks(t: torch.Tensor, lens: list[int]) -> torch.Tensor:
    """``torch.exp(t)`` for a 1-d ``t`` made of consecutive blocks of sizes ``lens``, every block
    rounded as if it were exponentiated on its own (see the module docstring)."""
    if t.device.type != "cpu":
        return t.exp()
    n = t.numel()
    single = n < _GRAIN or torch.get_num_threads() == 1
    if single and all(m % _LANES == 0 for m in lens[:-1]):
        return t.exp()
    out = torch.empty_like(t)
    o = 0
    for m in lens:
        for s in range(o, o + m, _CHUNK):
            e = min(o + m, s + _CHUNK)
            torch.exp(t[s:e], out=out[s:e])
        o += m
    return out
