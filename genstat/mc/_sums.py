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

__all__ = ["block_sum", "last_sum", "gram", "gram_last", "exp_blocks"]

#: torch (at::internal::GRAIN_SIZE) splits a reduction to one output over threads from this size
_GRAIN = 32768
#: sample-dimension chunk: below _GRAIN, so a one-output reduction of a chunk is always serial
_CHUNK = 16384
#: largest temporary of all k^2 products that gram_last builds in one go
_OUTER_BYTES = 1 << 20
#: elements per unrolled vector step (two AVX-512 double vectors); block sizes that are multiples
#: of it never put a block's elements through the scalar tail of a single-threaded kernel
_LANES = 16


def block_sum(t: torch.Tensor) -> torch.Tensor:
    """``t.sum(1)`` for ``t`` of shape (B, n, P), rounded the same way for every B and thread count.

    Rows beyond ``_CHUNK`` are summed in chunks of ``_CHUNK`` (zero-padded), then the chunk sums.
    """
    B, n, P = t.shape
    if n <= _CHUNK:
        return t.sum(1)
    pad = (-n) % _CHUNK
    if pad:
        t = torch.cat([t, t.new_zeros((B, pad, P))], 1)
    return t.reshape(B, -1, _CHUNK, P).sum(2).sum(1)


def last_sum(t: torch.Tensor) -> torch.Tensor:
    """``t.sum(-1)`` (samples on the last, contiguous axis), chunked along it like :func:`block_sum`."""
    n = t.shape[-1]
    if n <= _CHUNK:
        return t.sum(-1)
    pad = (-n) % _CHUNK
    if pad:
        t = torch.nn.functional.pad(t, (0, pad))
    return t.reshape(*t.shape[:-1], -1, _CHUNK).sum(-1).sum(-1)


def gram(a: torch.Tensor, b: torch.Tensor | None = None, *, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_t a[:, t, i] * b[:, t, j]`` for (B, n, k) inputs, without BLAS; shape (B, k, k).

    With ``b`` omitted: ``sum_t weight[:, t] * a[:, t, i] * a[:, t, j]`` (``weight`` (B, n), default
    1), computed on the upper triangle and mirrored (exactly symmetric). The samples are moved to
    the last axis first so that every sum is a contiguous (vectorised) reduction; one row of
    products is held at a time.
    """
    B, n, k = a.shape
    if k == 1 and b is None:
        p = a[:, :, 0] * a[:, :, 0]
        return last_sum((p if weight is None else p.mul_(weight))[:, None, :])[:, :, None]
    at = a.transpose(1, 2).contiguous()
    out = a.new_zeros((B, k, k))
    if b is None:
        w = None if weight is None else weight[:, None, :]
        for i in range(k):
            p = at[:, i : i + 1, :] * at[:, i:, :]
            out[:, i, i:] = last_sum(p if w is None else p.mul_(w))
        return out + torch.triu(out, 1).transpose(1, 2)  # adds exact zeros
    bt = b.transpose(1, 2).contiguous()
    for i in range(k):
        out[:, i, :] = last_sum(at[:, i : i + 1, :] * bt)
    return out


def gram_last(xt: torch.Tensor) -> torch.Tensor:
    """Gram matrices of samples stored last: ``xt`` (k, B, n) -> (B, k, k), ``sum_t xt[i, b, t] xt[j, b, t]``.

    The layout the engine keeps its outputs in (one contiguous row of samples per component and
    block), so that no transposed copy is needed; exactly symmetric like :func:`gram`.
    """
    k, B, n = xt.shape
    if k == 1:
        return last_sum(xt[0] * xt[0])[:, None, None]
    if k * k * B * n * xt.element_size() <= _OUTER_BYTES:
        # small: all k^2 products at once (two ops instead of ~3k); bitwise the rows below, since
        # a_i a_j = a_j a_i exactly and each entry is summed over the same contiguous row of n
        return last_sum(xt[:, None] * xt[None]).permute(2, 0, 1).contiguous()
    out = xt.new_zeros((B, k, k))
    for i in range(k):
        out[:, i, i:] = last_sum(xt[i : i + 1] * xt[i:]).T
    return out + torch.triu(out, 1).transpose(1, 2)  # adds exact zeros


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
