"""Streaming weighted moments in float64 with an exact merge (Chan, Golub & LeVeque 1979).

The weights may be given in log space; statistics then carry a log-scale so that weights that
would overflow or underflow in ``exp`` are handled exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._sums import chunked_sum, exp_blocks, gram

__all__ = ["RunningMoments"]


@dataclass(frozen=True, slots=True)
class RunningMoments:
    """Sufficient statistics of a (weighted) sample of vectors of length ``k``, in float64.

    With weights ``w_i = exp(log_w_i)`` and ``w~_i = w_i exp(-log_scale)``:

    - ``count``: number of points; ``sw = sum w~``; ``sw2 = sum w~^2``;
    - ``mean``: the weighted mean (k,);
    - ``m2 = sum w~ (x - mean)(x - mean)^T`` (k, k): centred second moment;
    - ``c2 = sum w~^2 (x - mean)(x - mean)^T`` and ``d2 = sum w~^2 (x - mean)``: what the delta
      method needs for a self-normalised mean.

    Unweighted statistics have ``w = 1``: ``sw = sw2 = count`` and ``c2 = m2``.
    Instances may carry a leading block dimension (``mean`` of shape (B, k)); :meth:`reduce`
    combines those blocks exactly, independently of how they were grouped.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(1000, 3, dtype=torch.float64)
    >>> a = RunningMoments.from_batch(x[:400]).merge(RunningMoments.from_batch(x[400:]))
    >>> torch.testing.assert_close(a.mean, x.mean(0))
    """

    count: torch.Tensor
    log_scale: torch.Tensor
    sw: torch.Tensor
    sw2: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    c2: torch.Tensor
    d2: torch.Tensor

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_batch(
        cls,
        x: torch.Tensor,
        log_weights: torch.Tensor | None = None,
        *,
        blocks: int = 1,
        keep_blocks: bool = False,
    ) -> "RunningMoments":
        """Statistics of ``x`` of shape (n, k) (or (n,)), optionally split into ``blocks`` equal
        consecutive blocks (a leading block dimension in the result).

        Parameters
        ----------
        x : Tensor, shape (n, k) or (n,)
            The sample; converted to float64.
        log_weights : Tensor, shape (n,), optional
            Log importance weights. ``None`` means unweighted.
        blocks : int
            Number of equal consecutive blocks (``n`` must be divisible by it). With ``blocks > 1``
            every field gets a leading dimension of that size.
        keep_blocks : bool
            Keep the leading block dimension even when ``blocks == 1``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n, k) or (n,), got {tuple(x.shape)}")
        n, k = x.shape
        if blocks < 1 or n % blocks:
            raise ValueError(f"blocks must divide n={n}, got {blocks}")
        xb = x.to(torch.float64).reshape(blocks, n // blocks, k)
        m = n // blocks
        count = torch.full((blocks,), m, dtype=torch.int64, device=x.device)
        if log_weights is None:
            mean = chunked_sum(xb, 1) / m
            xc = xb - mean[:, None, :]
            m2 = gram(xc)
            ones = count.to(torch.float64)
            out = cls(count, torch.zeros_like(ones), ones, ones.clone(), mean, m2, m2.clone(), torch.zeros_like(mean))
        else:
            if log_weights.shape != (n,):
                raise ValueError(f"log_weights must have shape ({n},), got {tuple(log_weights.shape)}")
            lw = log_weights.to(torch.float64).reshape(blocks, m)
            if torch.isnan(lw).any() or torch.isposinf(lw).any():
                raise ValueError("log_weights contain NaN or +inf")
            scale = lw.max(1).values
            # a block whose weights are all zero (log_weights = -inf) is legitimate (a rare event
            # missed by the proposal): it carries sw = 0 and log_scale = -inf and adds nothing
            empty = torch.isneginf(scale)
            w = exp_blocks((lw - torch.where(empty, torch.zeros_like(scale), scale)[:, None]).reshape(-1), [m] * blocks)
            w = w.reshape(blocks, m)
            sw = chunked_sum(w, 1)
            w2 = w * w
            sw2 = chunked_sum(w2, 1)
            mean = chunked_sum(w[..., None] * xb, 1) / torch.where(empty, torch.ones_like(sw), sw)[:, None]
            xc = xb - mean[:, None, :]
            m2 = gram(xc, weight=w)
            c2 = gram(xc, weight=w2)
            d2 = chunked_sum(w2[..., None] * xc, 1)
            out = cls(count, scale, sw, sw2, mean, m2, c2, d2)
        return out.reduce() if blocks == 1 and not keep_blocks else out

    @classmethod
    def empty(cls, k: int, device: torch.device | str | None = None) -> "RunningMoments":
        """Statistics of an empty sample of vectors of length ``k``."""
        f = dict(dtype=torch.float64, device=device)
        z = torch.zeros((), **f)
        return cls(
            torch.zeros((), dtype=torch.int64, device=device),
            torch.full((), float("-inf"), **f),
            z, z.clone(), torch.zeros(k, **f), torch.zeros(k, k, **f), torch.zeros(k, k, **f), torch.zeros(k, **f),
        )

    # ----------------------------------------------------------------- combination
    @classmethod
    def stack(cls, parts: "list[RunningMoments]") -> "RunningMoments":
        """Stack unbatched or batched statistics along a leading block dimension (in order)."""
        if not parts:
            raise ValueError("parts must be a non-empty list")
        fields = {
            name: torch.cat([getattr(p, name) if _is_batched(p) else getattr(p, name).unsqueeze(0) for p in parts], 0)
            for name in cls.__slots__
        }
        return cls(**fields)

    def reduce(self) -> "RunningMoments":
        """Combine the leading block dimension exactly into one set of statistics.

        The result does not depend on how the blocks were grouped before (up to float rounding):
        it is the closed-form multi-part version of Chan et al.'s pairwise update.
        """
        if not _is_batched(self):
            return self
        if self.count.shape[0] == 1:  # one block: nothing to combine
            return RunningMoments(**{k: getattr(self, k)[0] for k in self.__slots__})
        nonempty = (self.count > 0) & (self.sw > 0)
        if not bool(nonempty.any()):  # no points, or every weight zero: nothing to average
            out = RunningMoments.empty(self.mean.shape[-1], self.mean.device)
            return RunningMoments(self.count.sum(), *(getattr(out, k) for k in self.__slots__[1:]))
        ls = torch.where(nonempty, self.log_scale, torch.full_like(self.log_scale, float("-inf")))
        scale = ls.max()
        s = torch.where(nonempty, torch.exp(ls - scale), torch.zeros_like(ls))
        sw_b = s * self.sw
        sw = sw_b.sum()
        sw2_b = s * s * self.sw2
        sw2 = sw2_b.sum()
        mean = (sw_b[:, None] * self.mean).sum(0) / sw
        delta = self.mean - mean  # (B, k)
        m2 = (s[:, None, None] * self.m2).sum(0) + gram(delta[None], weight=sw_b[None])[0]
        s2 = s * s
        dd = s2[:, None] * self.d2  # (B, k)
        cross = gram(dd[None], delta[None])[0]
        c2 = (
            (s2[:, None, None] * self.c2).sum(0)
            + cross
            + cross.T
            + gram(delta[None], weight=sw2_b[None])[0]
        )
        d2 = dd.sum(0) + (sw2_b[:, None] * delta).sum(0)
        return RunningMoments(self.count.sum(), scale, sw, sw2, mean, m2, c2, d2)

    def merge(self, other: "RunningMoments") -> "RunningMoments":
        """Exact combination of two sets of statistics (Chan et al.'s parallel update)."""
        if not isinstance(other, RunningMoments):
            raise TypeError(f"other must be RunningMoments, got {type(other).__name__}")
        if other.mean.shape[-1] != self.mean.shape[-1]:
            raise ValueError(f"cannot merge moments of dimension {self.mean.shape[-1]} and {other.mean.shape[-1]}")
        return RunningMoments.stack([self.reduce(), other.reduce()]).reduce()

    # ----------------------------------------------------------------- derived quantities
    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def ess(self) -> torch.Tensor:
        """Kish effective sample size ``(sum w)^2 / sum w^2``."""
        return self.sw * self.sw / self.sw2

    def covariance(self, ddof: int = 1) -> torch.Tensor:
        """Sample covariance (k, k). Unweighted: ``m2 / (n - ddof)``; weighted: reliability
        weights, ``m2 / (sw - ddof * sw2 / sw)``."""
        denom = self.sw - ddof * self.sw2 / self.sw
        return self.m2 / denom

    def variance(self, ddof: int = 1) -> torch.Tensor:
        """Diagonal of :meth:`covariance` (k,)."""
        return torch.diagonal(self.covariance(ddof), dim1=-2, dim2=-1)

    def self_normalized_covariance(self) -> torch.Tensor:
        """Delta-method covariance of the self-normalised weighted mean: ``c2 / sw^2``."""
        return self.c2 / (self.sw * self.sw)

    def to(self, device: torch.device | str) -> "RunningMoments":
        return RunningMoments(**{k: getattr(self, k).to(device) for k in self.__slots__})

    def flatten(self) -> torch.Tensor:
        """Pack unbatched statistics into one float64 vector (see :meth:`flatten_blocks`)."""
        return self.flatten_blocks()[0]

    def flatten_blocks(self) -> torch.Tensor:
        """Pack statistics with a leading block dimension into a (B, width) float64 tensor."""
        b = self.count.shape[0] if _is_batched(self) else 1
        return torch.cat([getattr(self, k).to(torch.float64).reshape(b, -1) for k in self.__slots__], 1)

    @classmethod
    def unflatten_blocks(cls, rows: torch.Tensor, k: int) -> "RunningMoments":
        """Inverse of :meth:`flatten_blocks`: (B, width) -> statistics with a block dimension."""
        b = rows.shape[0]
        sizes = [1, 1, 1, 1, k, k * k, k * k, k]
        parts = torch.split(rows, sizes, dim=1)
        shapes = [(b,), (b,), (b,), (b,), (b, k), (b, k, k), (b, k, k), (b, k)]
        vals = [p.reshape(s) for p, s in zip(parts, shapes)]
        vals[0] = vals[0].round().to(torch.int64)
        return cls(*vals)

    @classmethod
    def unflatten(cls, v: torch.Tensor, k: int) -> "RunningMoments":
        """Inverse of :meth:`flatten`."""
        return cls.unflatten_blocks(v[None], k).reduce()


def _is_batched(m: RunningMoments) -> bool:
    return m.count.ndim == 1
