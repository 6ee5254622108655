"""Exact k nearest neighbours of a point cloud in bounded memory (the neighbour search of ``id_mle`` and
``id_twonn``)."""
from __future__ import annotations

import math

import torch

__all__ = ["knn_distances"]

# Brute force in row chunks: memory O(n k) plus one chunk of at most _CHUNK_BYTES. A float32 pass ranks the points by
# ||b||^2 - 2 a.b (one matmul) and keeps the k + 8 smallest (_smallest); their distances are recomputed in float64
# from the differences, and a row is kept only if the float32 error bound proves that no other point is nearer than
# its k-th neighbour: those rows equal the direct float64 computation. Rows it cannot prove (ties, points far apart
# relative to their spacing) go through the same pass in float64, where a point tied with the k-th neighbour to
# within the float64 rounding of ||a||^2 - 2 a.b + ||b||^2 may take its place (what torch.cdist incurs); a direct
# float64 pass takes what remains (all points equal, norms beyond 2^+-400). The point itself is excluded by index,
# so a duplicate of it is a neighbour at distance 0.

# 32 MiB: a chunk stays in L3 between the matmul and the group minima (single thread, n = 5e4: 1.6x faster than 256)
_CHUNK_BYTES = 1 << 25


def _ieee_float32_matmul(device: torch.device) -> bool:
    # the error bound assumes IEEE float32 products; TF32 or bf16 matmuls would void it
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)


def _sqdist(xd: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Direct float64 ``||x_i - x_j||^2`` for ``i`` in ``rows`` (r,) and ``j`` in ``cols`` (r, m) or (m,)."""
    other = xd.index_select(0, cols.reshape(-1)).view(*cols.shape, -1)
    return (xd.index_select(0, rows)[:, None, :] - other).pow(2).sum(-1)


def _smallest(s: torch.Tensor, kc: int, g1: int, g2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kc smallest values of each row of ``s`` (c, g1 g2 G2) and their columns, by two levels of group minima.

    Level-1 group ``q`` holds the columns ``q + G1 a`` (``a < g1``, ``G1 = g2 G2``), level-2 group ``p`` the level-1
    groups ``p + G2 b``. The kc smallest values lie in the kc groups with the smallest minima, at either level, so
    the topk calls see about ``G2 + kc (g1 + g2)`` values a row instead of all of them.
    """
    c, width = s.shape
    G1 = width // g1
    m1 = s.view(c, g1, G1).amin(1)
    m2 = m1.view(c, g2, G1 // g2).amin(1)
    p = m2.topk(min(kc, m2.shape[1]), dim=1, largest=False, sorted=False).indices
    q = (p[:, :, None] + (G1 // g2) * torch.arange(g2, device=s.device)).reshape(c, -1)
    q = torch.gather(q, 1, torch.gather(m1, 1, q).topk(min(kc, G1), dim=1, largest=False, sorted=False).indices)
    cols = (q[:, :, None] + G1 * torch.arange(g1, device=s.device)).reshape(c, -1)
    v, j = torch.gather(s, 1, cols).topk(kc, dim=1, largest=False, sorted=False)
    return v, torch.gather(cols, 1, j)


def _knn_pass(xd: torch.Tensor, rows: torch.Tensor, k: int, dtype: torch.dtype,
              chunk_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared k-NN distances (r, k) of ``rows`` from a ``dtype`` candidate pass, and the rows it proves (r,)."""
    n, D = xd.shape
    dev = xd.device
    out = torch.empty(len(rows), k, dtype=torch.float64, device=dev)
    ok = torch.zeros(len(rows), dtype=torch.bool, device=dev)
    # centred (distances do not change, the error bound shrinks) and scaled by a power of two to a largest norm in
    # [1/2, 1): exact, and it keeps ||b||^2 - 2 a.b from overflowing or flushing to zero
    xc = xd - xd.mean(0)
    norm = float(xc.pow(2).sum(1).max().sqrt())
    if not 2.0**-400 < norm < 2.0**400:  # all points equal, or a range the float64 squares cannot hold
        return out, ok
    scale = math.ldexp(1.0, -math.frexp(norm)[1])
    b = (xc * scale).to(dtype)
    nb = b.double().pow(2).sum(1)
    kc = min(k + 8, n - 1)  # enough for the bound to prove ~all rows (even k + 4 proves > 99 % on test data)
    g = max(1, round((n / kc) ** (1 / 3)))  # balances the topk sizes of _smallest
    width = g * g * -(-n // (g * g))
    Bt = torch.zeros(D + 1, width, dtype=dtype, device=dev)
    Bt[:D, :n], Bt[D, :n], Bt[D, n:] = b.T, nb.to(dtype), math.inf
    # |computed (||b_j||^2 - 2 a.b_j) + ||a||^2 - scale^2 ||x_i - x_j||^2| <= err_i: rounding to dtype, the
    # (D + 1)-term dot product and the sum, with a factor 2 to spare, plus underflow (flushed to zero or not)
    fin = torch.finfo(dtype)
    err = (2 * D + 16) * (fin.eps / 2) * (nb.sqrt() + nb.max().sqrt()).pow(2) + 8 * (D + 2) * fin.tiny
    slack = 1.0 - 4 * (D + 2) * torch.finfo(torch.float64).eps  # rounding of the direct float64 distances
    tie = 2 * err if dtype == torch.float64 else torch.zeros_like(err)
    per = max(1, chunk_bytes // (width * b.element_size()))
    sub = max(1, (1 << 22) // (kc * D * 8))  # rows per cache-sized float64 recompute
    for lo in range(0, len(rows), per):
        r = rows[lo:lo + per]
        c = len(r)
        s = torch.cat([-2 * b[r], torch.ones(c, 1, dtype=dtype, device=dev)], 1) @ Bt
        s[torch.arange(c, device=dev), r] = math.inf
        v, cols = _smallest(s, kc, g, g)
        cols = cols.clamp_max(n - 1)
        q = torch.cat([_sqdist(xd, r[i:i + sub], cols[i:i + sub]) for i in range(0, c, sub)]).sort(1).values
        cut = v.amax(1).double()  # every other point has a computed value >= cut
        # finite values: no padding or self among the candidates; with kc = n - 1 they are all the other points
        proved = (cut + nb[r] - err[r]) * slack > q[:, k - 1] * scale**2 - tie[r]
        out[lo:lo + c] = q[:, :k]
        ok[lo:lo + c] = torch.isfinite(cut) & (proved | (kc == n - 1))
    return out, ok


def knn_distances(x: torch.Tensor, k: int, *, chunk_bytes: int = _CHUNK_BYTES) -> torch.Tensor:
    """Float64 distances (n, k), increasing, from each point to its k nearest other points."""
    xd = x.detach().double()
    n = xd.shape[0]
    out = torch.empty(n, k, dtype=torch.float64, device=xd.device)
    todo = torch.arange(n, device=xd.device)
    for dtype in ((torch.float32,) if _ieee_float32_matmul(xd.device) else ()) + (torch.float64,):
        q, ok = _knn_pass(xd, todo, k, dtype, chunk_bytes)
        out[todo[ok]] = q[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            return out.sqrt()
    everyone = torch.arange(n, device=xd.device)
    per = max(1, chunk_bytes // (8 * n * xd.shape[1]))
    for lo in range(0, len(todo), per):
        r = todo[lo:lo + per]
        q = _sqdist(xd, r, everyone)
        q[torch.arange(len(r), device=xd.device), r] = math.inf
        out[r] = q.topk(k, dim=1, largest=False).values
    return out.sqrt()
