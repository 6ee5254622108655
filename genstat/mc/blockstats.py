"""Per-block sufficient statistics as packed float64 rows, and a fixed reduction tree over them.

The engine turns every RNG block into one row of statistics and combines the rows with a
:class:`ReductionTree`: rows are pushed in block order, every ``fanout`` consecutive rows of a level
are reduced to one row of the next level. The tree's shape depends only on the block indices, so
the result is the same (bitwise) however the blocks were batched or sharded, and the memory held is
``levels x fanout`` rows whatever the number of samples.

Row layouts
-----------
*value* rows (plain Monte Carlo and unbiased importance sampling), width ``2 + k + k^2``:
``[count, log_scale, mean (k), m2 (k*k)]``. The true values are the stored ones times
``exp(log_scale)`` (so importance weights near ``exp(700)`` never overflow): the mean scales by
``exp(log_scale)``, ``m2`` by ``exp(2 log_scale)``. Plain rows have ``log_scale = 0``.

*weighted* rows (self-normalised importance sampling): :meth:`RunningMoments.flatten_blocks`.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._sums import chunked_sum, gram, gram_last
from .moments import RunningMoments

__all__ = ["value_rows", "reduce_value_rows", "reduce_weighted_rows", "value_width", "ReductionTree"]


def value_width(k: int) -> int:
    """Width of a value row for ``k`` components."""
    return 2 + k + k * k


def _equal_value_rows(yt: torch.Tensor, blocks: int, log_scale: torch.Tensor | None) -> torch.Tensor:
    k, n = yt.shape
    m = n // blocks
    yb = yt.reshape(k, blocks, m)
    mean = chunked_sum(yb, -1) / m  # (k, blocks)
    m2 = gram_last(yb - mean[:, :, None])
    count = torch.full((blocks, 1), float(m), dtype=torch.float64, device=yt.device)
    ls = torch.zeros_like(count) if log_scale is None else log_scale.reshape(blocks, 1)
    return torch.cat([count, ls, mean.T, m2.reshape(blocks, k * k)], 1)


def value_rows(y: torch.Tensor, lens: list[int], log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Value rows of the consecutive blocks of ``y`` (shape (n, k), any real dtype; the statistics
    are float64) of sizes ``lens``.

    ``log_scale`` (one per block) is stored as given; ``y`` must already be divided by it.
    """
    b = len(lens)
    n, k = y.shape
    # one float64 copy with the samples last: every per-block sum is then a contiguous reduction
    yt = torch.empty((k, n), dtype=torch.float64, device=y.device).copy_(y.T)
    if all(m == lens[0] for m in lens):
        return _equal_value_rows(yt, b, log_scale)
    # only the last block of a run is ever shorter: the equal ones at once, then the rest
    head = sum(lens[:-1])
    first = _equal_value_rows(yt[:, :head], b - 1, None if log_scale is None else log_scale[:-1])
    last = _equal_value_rows(yt[:, head:], 1, None if log_scale is None else log_scale[-1:])
    return torch.cat([first, last], 0)


def reduce_value_rows(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Combine value rows (B, width) exactly into one row (1, width) (Chan et al.'s multi-part
    formula on the rescaled statistics)."""
    if rows.shape[0] == 1:
        return rows
    count = rows[:, 0]
    ls = rows[:, 1]
    mean = rows[:, 2 : 2 + k]
    m2 = rows[:, 2 + k :].reshape(-1, k, k)
    total = count.sum()
    scale = ls.max()
    if bool(torch.any(ls != scale)):
        a = torch.exp(ls - scale)
        mean = mean * a[:, None]
        m2 = m2 * (a * a)[:, None, None]
    new_mean = (count[:, None] * mean).sum(0) / total
    delta = mean - new_mean
    new_m2 = m2.sum(0) + gram(delta[None], weight=count[None])[0]
    head = torch.stack([total, scale])
    return torch.cat([head, new_mean, new_m2.reshape(-1)])[None]


def reduce_weighted_rows(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Combine self-normalised (weighted) rows exactly into one row."""
    if rows.shape[0] == 1:
        return rows
    return RunningMoments.unflatten_blocks(rows, k).reduce().flatten_blocks()


class ReductionTree:
    """Fixed-shape reduction of per-block rows pushed in block order.

    Parameters
    ----------
    reduce : callable
        ``reduce(rows (B, w)) -> (1, w)``: exact combination of consecutive blocks.
    fanout : int
        Rows combined per node. Memory: at most ``fanout`` rows per level.
    """

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor], fanout: int = 256):
        if fanout < 2:
            raise ValueError(f"fanout must be >= 2, got {fanout}")
        self._reduce = reduce
        self.fanout = fanout
        self._levels: list[list[torch.Tensor]] = []
        self._sizes: list[int] = []
        self.n_blocks = 0

    def push(self, rows: torch.Tensor) -> None:
        """Append the rows (B, w) of the next B blocks."""
        self.n_blocks += rows.shape[0]
        self._push(0, rows)

    def _push(self, level: int, rows: torch.Tensor) -> None:
        if level == len(self._levels):
            self._levels.append([])
            self._sizes.append(0)
        self._levels[level].append(rows)
        self._sizes[level] += rows.shape[0]
        while self._sizes[level] >= self.fanout:
            buf = torch.cat(self._levels[level], 0) if len(self._levels[level]) > 1 else self._levels[level][0]
            node = self._reduce(buf[: self.fanout])
            rest = buf[self.fanout :]
            self._levels[level] = [rest] if rest.shape[0] else []
            self._sizes[level] = rest.shape[0]
            self._push(level + 1, node)

    @property
    def stored_rows(self) -> int:
        """Rows held now (bounded by ``levels * fanout``)."""
        return sum(self._sizes)

    def total(self) -> torch.Tensor | None:
        """One row combining every block pushed so far (``None`` before the first push).

        Higher levels hold earlier blocks; their rows and the partial lower levels are combined
        in block order by one final reduction, without changing the tree.
        """
        parts = [r for level in reversed(self._levels) for r in level]
        if not parts:
            return None
        return self._reduce(torch.cat(parts, 0) if len(parts) > 1 else parts[0])
