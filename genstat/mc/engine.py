"""The batched, block-seeded Monte Carlo engine: :func:`estimate`.

Reproducibility contract
------------------------
Samples are drawn in fixed-size blocks (``block_size``, default 4096); block ``b`` of stream ``s``
uses a generator seeded from ``(seed, b, s)`` only. A batch is a group of whole blocks; under
``torch.distributed`` rank ``r`` computes the blocks ``b ≡ r (mod world)`` of each segment of
blocks. Every block yields one row of sufficient statistics; rows are combined in block order by a
fixed reduction tree (:class:`~genstat.mc.blockstats.ReductionTree`) whose shape depends only on
the block indices. Hence the same seed gives the same estimate whatever the batch size and the
number of workers, a repeated call is bitwise equal, and the memory held does not grow with
``n_samples``.

Sequential stopping (``target_rse``) is two-stage: a pilot on its own blocks (stream 2) only sizes
the run, then fresh blocks (stream 0, the same blocks a fixed-size run uses) make the estimate. The
estimate is therefore unbiased: the number of main blocks does not depend on their values.
"""
from __future__ import annotations

import math
import operator
import sys
import time
import warnings
from typing import Callable

import torch

from . import blockstats as bs
from ._sums import exp_blocks
from .diagnostics import _khat_from_top, khat_threshold, tail_length
from .distributed import all_reduce_, gather_blocks, world
from .moments import RunningMoments
from .result import MCResult
from .rng import as_device, block_seeds, sample_distribution, seeded_generator

__all__ = ["estimate", "DEFAULT_BLOCK_SIZE", "ImportanceWeightWarning"]

DEFAULT_BLOCK_SIZE = 4096
_CPU_MEMORY_BUDGET = 256 * 2**20
#: rows combined per node of the reduction tree, and blocks per distributed segment
_FANOUT = 256
_PILOT_STREAM = 2
#: the pilot stops once it holds this share of the blocks it predicts the main stage needs
_PILOT_SHARE = 1 / 8
_PILOT_MIN_SAMPLES = 2048
_MIN_ESS = 100.0


class ImportanceWeightWarning(RuntimeWarning):
    """Importance weights too degenerate for the estimate and its stderr to be trusted."""


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool ({value!r})")
    try:
        value = operator.index(value)  # int, numpy integers, 0-d integer tensors
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})") from None
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
        ``fn(x) -> Tensor`` of shape (n,) or (n, k), real: k expectations from the same samples.
    sampler : callable or torch.distributions.Distribution
        ``sampler(n, generator, device) -> Tensor`` of shape (n, ...), drawing only from
        ``generator``; or a distribution (sampled with the block generator, never the global RNG).
    n_samples : int
        Number of samples (the budget, pilot included, when ``target_rse`` is given).
    batch_size : int, optional
        Samples per call of ``fn``, rounded down to whole blocks (at least one). When omitted it is
        chosen from a memory budget (256 MiB on CPU, a quarter of the free memory on CUDA).
    seed : int
        Seed; block ``b`` draws from a generator seeded from ``(seed, b)``.
    device : str or torch.device, optional
        Where samples are drawn (default CPU). A CUDA device must exist.
    log_weight : callable, optional
        ``log_weight(x) -> (n,)`` = log p(x) - log q(x) for samples x ~ q: importance sampling.
        ``-inf`` (zero weight) is allowed, NaN and ``+inf`` are not.
    self_normalized : bool
        With ``log_weight``: the self-normalised estimator ``sum w f / sum w`` (``p`` may be
        unnormalised); otherwise the unbiased ``mean(w f)``, computed with a per-block log scale so
        that log-weights near 700 do not overflow.
    target_rse : float, optional
        Sequential stopping: a pilot stage (its own blocks, at most 1/8 of the budget) estimates
        how many blocks bring every component's relative standard error below this target; that
        many fresh blocks then make the (unbiased) estimate. ``converged`` says whether the target
        was reached.
    level : float
        Default level of :meth:`MCResult.confidence_interval`.
    progress : bool
        Show a tqdm bar (only when stderr is a terminal).
    block_size : int
        RNG block size. Changing it changes the random stream; batch size and world size do not.
    memory_budget : int, optional
        Bytes per batch used to pick ``batch_size`` when it is not given.
    names : sequence of str, optional
        Component names for :meth:`MCResult.to_frame` (length k; checked after the first batch).

    Returns
    -------
    MCResult
        ``estimate``, ``stderr``, ``n_samples``, ``ess`` and ``pareto_k`` (weighted only),
        ``wall_time``, ``covariance``, ``n_pilot``.

    Warns
    -----
    ImportanceWeightWarning
        When the weights' ESS is below 100 or their Pareto k-hat above
        ``min(1 - 1/log10(n), 0.7)``: the CI is then not to be trusted.
    RuntimeWarning
        When a component is constant over all samples (its stderr of 0 is not supported by the
        sample, e.g. a rare event never seen), or when every importance weight is zero.

    Raises
    ------
    ValueError
        ``n_samples < 1``, a sampler returning the wrong number of samples, ``fn`` returning the
        wrong shape or non-finite values (the message gives how many and in which block), names of
        the wrong length, an unbiased IS estimate that overflows float64.
    TypeError
        Non-callable ``fn``, non-integer sizes, complex ``fn`` output.

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
    n_samples = _check_int("n_samples", n_samples, 1)
    block_size = _check_int("block_size", block_size, 1)
    seed = _check_int("seed", seed, 0)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, 1)
    if log_weight is not None and not callable(log_weight):
        raise TypeError(f"log_weight must be callable, got {type(log_weight).__name__}")
    if self_normalized and log_weight is None:
        raise ValueError("self_normalized=True needs log_weight")
    if target_rse is not None and not (
        isinstance(target_rse, (int, float)) and target_rse > 0 and math.isfinite(target_rse)
    ):
        raise ValueError(f"target_rse must be a positive finite float, got {target_rse!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if names is not None:
        if isinstance(names, str) or not all(isinstance(s, str) for s in names):
            raise TypeError(f"names must be a sequence of str, got {names!r}")
        names = tuple(names)
    dev = as_device(device)
    mode = "plain" if log_weight is None else ("sn" if self_normalized else "is")
    eng = _Engine(
        fn, _make_sampler(sampler), log_weight, mode, dev, seed, block_size,
        None if batch_size is None else max(1, batch_size // block_size), memory_budget, names,
    )
    n_blocks = math.ceil(n_samples / block_size)
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples, unit="sample", leave=False)
    eng.bar = bar

    n_pilot_blocks, main_blocks = 0, n_blocks
    if target_rse is not None and n_blocks >= 2:
        n_pilot_blocks, main_blocks = _pilot(eng, n_samples, n_blocks, float(target_rse))
    # the pilot's samples come out of the budget: the main stage is a fixed-size run of main_n
    main_n = n_samples - n_pilot_blocks * block_size
    n_used = min(main_blocks * block_size, main_n)
    tail = tail_length(n_used) + 1 if mode != "plain" else 0
    tree = eng.run(0, main_blocks, main_n, tail=tail)
    if bar is not None:
        bar.close()
    total = tree.total()
    est, se, cov, ess = eng.summarise(total)
    converged = None
    if target_rse is not None:
        converged = bool(torch.all(se <= target_rse * est.abs()))
    khat = None
    if mode != "plain":
        top = eng.top_log_weights()
        khat = _khat_from_top(top, n_used)
        _warn_weights(ess, khat, n_used)
    _warn_constant(total, eng, n_used)
    est, se, cov = est.cpu(), se.cpu(), cov.cpu()
    if eng.scalar_out:
        est, se = est[0], se[0]
    return MCResult(
        estimate=est,
        stderr=se,
        n_samples=n_used,
        ess=None if ess is None else ess.cpu(),
        wall_time=time.perf_counter() - t_start,
        covariance=cov,
        level=float(level),
        n_blocks=main_blocks,
        converged=converged,
        names=names,
        n_pilot=n_pilot_blocks * block_size,
        pareto_k=khat,
    )


def _pilot(eng: "_Engine", n_samples: int, n_blocks: int, target: float) -> tuple[int, int]:
    """Run the pilot stage; return (pilot blocks, main blocks).

    The pilot doubles (1, 2, 4, ... blocks of stream 2) until it holds at least ``_PILOT_SHARE``
    of the blocks it predicts the target needs (and ``_PILOT_MIN_SAMPLES``), or reaches 1/8 of the
    budget. Predicted need: ``c * max_j (rse_j / target)^2`` blocks after ``c`` pilot blocks.
    """
    cap = max(1, n_blocks // 8)
    min_blocks = min(cap, max(1, math.ceil(_PILOT_MIN_SAMPLES / eng.block_size)))
    checkpoints, c = [], 1
    while c < cap:
        checkpoints.append(c)
        c *= 2
    checkpoints.append(cap)
    need = math.inf
    done = 0
    tree = None
    for cp in checkpoints:
        tree = eng.run(_PILOT_STREAM, cp, cp * eng.block_size, tree=tree, start=done)
        done = cp
        est, se, _, _ = eng.summarise(tree.total())
        ratio = torch.where(se == 0, torch.zeros_like(se), se / (target * est.abs()))
        worst = float(ratio.max())
        need = math.inf if not math.isfinite(worst) else cp * worst * worst
        if cp >= min_blocks and cp >= _PILOT_SHARE * need:
            break
    remaining = math.ceil((n_samples - done * eng.block_size) / eng.block_size)
    main = remaining if not math.isfinite(need) else min(remaining, max(1, math.ceil(need)))
    return done, max(1, main)


def _warn_weights(ess: torch.Tensor | None, khat: float, n: int) -> None:
    if ess is None:
        return
    e = float(ess)
    if math.isnan(e):  # every weight zero: already reported
        return
    thr = khat_threshold(n)
    problems = []
    if not e > _MIN_ESS:
        problems.append(f"effective sample size {e:.1f} < {_MIN_ESS:.0f}")
    if math.isfinite(khat) and khat > thr:
        problems.append(f"Pareto k-hat {khat:.2f} > {thr:.2f} (heavy-tailed weights)")
    if problems:
        warnings.warn(
            "importance weights are degenerate: " + "; ".join(problems) + f" out of {n} samples; "
            "the estimate and its stderr are unreliable (use a proposal closer to the target)",
            ImportanceWeightWarning,
            stacklevel=3,
        )


def _warn_constant(total: torch.Tensor, eng: "_Engine", n: int) -> None:
    """Warn when a component's stderr is exactly 0 though more than one sample was drawn."""
    if n < 2 or eng.mode == "sn":
        return
    k = eng.k_stat
    var = torch.diagonal(total[0, 2 + k :].reshape(k, k))[: eng.k_out]
    zero = (var == 0).nonzero().reshape(-1).tolist()
    if zero:
        warnings.warn(
            f"component(s) {zero} took one value on all {n} samples: their stderr of 0 is not "
            "supported by the sample (a rare event never observed?); use more samples or importance "
            "sampling",
            RuntimeWarning,
            stacklevel=3,
        )


class _Engine:
    """State of one :func:`estimate` call: output shape, batch sizing, the block computation."""

    def __init__(self, fn, draw, log_weight, mode, dev, seed, block_size, blocks_per_batch, budget, names):
        self.fn, self.draw, self.log_weight, self.mode = fn, draw, log_weight, mode
        self.dev, self.seed, self.block_size = dev, seed, block_size
        self.blocks_per_batch = blocks_per_batch
        self.budget = budget
        self.names = names
        self.k_out: int | None = None
        self.scalar_out = False
        self.rank, self.size = world()
        self.bar = None
        self._top: torch.Tensor | None = None
        self._tail = 0
        self._last_group = 0

    # ------------------------------------------------------------------ shapes
    @property
    def k_stat(self) -> int:
        return self.k_out + 1 if self.mode == "is" else self.k_out

    def width(self) -> int:
        k = self.k_stat
        return 4 + 2 * k + 2 * k * k if self.mode == "sn" else bs.value_width(k)

    def _set_k(self, k: int, scalar: bool) -> None:
        self.k_out, self.scalar_out = k, scalar
        if self.names is not None and len(self.names) != k:
            raise ValueError(f"names must have length {k} (the number of outputs of fn), got {len(self.names)}")

    def reduce(self, rows: torch.Tensor) -> torch.Tensor:
        if self.mode == "sn":
            return bs.reduce_weighted_rows(rows, self.k_stat)
        return bs.reduce_value_rows(rows, self.k_stat)

    # ------------------------------------------------------------------ running blocks
    def run(self, stream: int, n_blocks: int, n_samples: int, *, tail: int = 0, tree=None, start: int = 0):
        """Compute blocks ``start .. n_blocks-1`` of ``stream`` into ``tree`` (a new one if None)."""
        if tree is None:
            tree = bs.ReductionTree(self.reduce, _FANOUT)
        self._tail = tail
        self._n = n_samples
        if self.size == 1:
            todo = list(range(start, n_blocks))
            while todo:
                out = self._group_rows(todo, stream)
                if out is None:  # out of memory: the batch was halved, try again
                    continue
                rows, used = out
                tree.push(rows)
                todo = todo[used:]
            return tree
        seg = max(_FANOUT, self.size)
        for a in range(start, n_blocks, seg):
            stop = min(n_blocks, a + seg)
            mine = list(range(a + (self.rank - a) % self.size, stop, self.size))
            local, err = [], None
            try:
                todo = mine
                while todo:
                    out = self._group_rows(todo, stream)
                    if out is None:
                        continue
                    local.append(out[0])
                    todo = todo[out[1]:]
            except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
                err = exc
            self._agree(err)
            w = self.width()
            rows = torch.cat(local, 0) if local else torch.zeros((0, w), dtype=torch.float64, device=self.dev)
            owned = torch.tensor([b - a for b in mine], dtype=torch.long, device=self.dev)
            tree.push(gather_blocks(rows, owned, stop - a))
        return tree

    def _agree(self, err: Exception | None) -> None:
        """Share the output shape (a rank may own no block yet) and failures across ranks."""
        meta = torch.tensor(
            [0.0 if self.k_out is None else float(self.k_out), 1.0 if self.scalar_out else 0.0,
             1.0 if err is not None else 0.0],
            dtype=torch.float64,
        )
        all_reduce_(meta, "max")
        if meta[2] > 0:
            if err is not None:
                raise err
            raise RuntimeError("estimate failed on another rank (see its error); stopping this rank too")
        k, scalar = int(meta[0]), bool(meta[1] > 0)
        if self.k_out is None:
            self._set_k(k, scalar)

    def _group_rows(self, todo: list[int], stream: int) -> tuple[torch.Tensor, int] | None:
        """Rows of the next batch of blocks from ``todo`` and how many blocks it took; None after
        halving the batch on CUDA out-of-memory."""
        try:
            return self._compute(todo, stream)
        except torch.cuda.OutOfMemoryError:
            if self._last_group <= 1:
                raise
            self.blocks_per_batch = max(1, self._last_group // 2)
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()
            return None

    def _compute(self, todo: list[int], stream: int) -> tuple[torch.Tensor, int]:
        bsz, n_total = self.block_size, self._n
        group = todo[: self.blocks_per_batch or 1]
        seeds = block_seeds(self.seed, group, stream)
        xs = []
        i = 0
        while i < len(group):
            b = group[i]
            m = min(bsz, n_total - b * bsz)
            x = self.draw(m, seeded_generator(int(seeds[i]), self.dev), self.dev)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"sampler must return a torch.Tensor, got {type(x).__name__}")
            if x.ndim == 0 or x.shape[0] != m:
                raise ValueError(
                    f"sampler returned a batch of shape {tuple(x.shape)} for n={m} (block {b}); "
                    f"expected leading dimension {m}"
                )
            xs.append(x)
            i += 1
            if self.blocks_per_batch is None:
                # size batches from the first block's bytes per sample (x plus float64 outputs, ~ x)
                per = x[0].numel() * x.element_size()
                self.blocks_per_batch = _auto_blocks(self.dev, bsz, 2 * per + 8, self.budget)
                group = todo[: self.blocks_per_batch]
                seeds = block_seeds(self.seed, group, stream)
        self._last_group = len(group)
        lens = [min(bsz, n_total - b * bsz) for b in group]
        x = xs[0] if len(xs) == 1 else torch.cat(xs, 0)
        n = x.shape[0]
        y = self.fn(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"fn must return a torch.Tensor, got {type(y).__name__}")
        if y.is_complex():
            raise TypeError(
                f"fn returned a complex tensor ({y.dtype}); estimate the real and imaginary parts as "
                "separate real components, e.g. torch.view_as_real(y).reshape(n, -1)"
            )
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(f"fn must return shape ({n},) or ({n}, k), got {tuple(y.shape)}")
        k = 1 if y.ndim == 1 else y.shape[1]
        if self.k_out is None:
            self._set_k(k, y.ndim == 1)
        elif k != self.k_out or (y.ndim == 1) != self.scalar_out:
            raise ValueError(f"fn returned shape {tuple(y.shape)}, inconsistent with earlier batches (k={self.k_out})")
        y = y.reshape(n, k)
        if self.mode == "plain":
            rows = bs.value_rows(y, lens)  # converts to float64 itself, in its own layout
        else:
            y = y.to(torch.float64)
            lw = self._log_weights(x, n, group)
            if stream == 0 and self._tail:
                self._keep_top(lw)
            if self.mode == "is":
                rows = self._is_rows(y, lw, lens)
            else:
                rows = self._sn_rows(y, lw, lens)
        if not bool(torch.isfinite(rows[:, 2:] if self.mode != "sn" else rows[:, 4:]).all()):
            _raise_non_finite(y, group, lens, self.seed, bsz)
        if self.bar is not None:
            self.bar.update(n)
        return rows, len(group)

    def _log_weights(self, x: torch.Tensor, n: int, group: list[int]) -> torch.Tensor:
        lw = self.log_weight(x)
        if not isinstance(lw, torch.Tensor) or lw.shape != (n,):
            shape = tuple(lw.shape) if isinstance(lw, torch.Tensor) else type(lw).__name__
            raise ValueError(f"log_weight must return shape ({n},), got {shape}")
        if lw.is_complex():
            raise TypeError(f"log_weight returned a complex tensor ({lw.dtype}); it must be real")
        lw = lw.to(torch.float64)
        nbad = int((torch.isnan(lw) | torch.isposinf(lw)).sum())
        if nbad:
            raise ValueError(f"log_weight returned {nbad} NaN/+inf value(s) in blocks {group[0]}..{group[-1]}")
        return lw

    def _is_rows(self, y: torch.Tensor, lw: torch.Tensor, lens: list[int]) -> torch.Tensor:
        # per-block scale s_b = max log-weight: w~ = exp(lw - s_b) <= 1 never overflows
        if all(m == lens[0] for m in lens):
            scale = lw.view(len(lens), lens[0]).max(1).values
        else:
            scale = torch.stack([s.max() for s in torch.split(lw, lens)])
        scale = torch.where(torch.isneginf(scale), torch.zeros_like(scale), scale)
        w = exp_blocks(lw - torch.repeat_interleave(scale, torch.tensor(lens, device=lw.device)), lens)[:, None]
        return bs.value_rows(torch.cat([w * y, w], 1), lens, scale)

    def _sn_rows(self, y: torch.Tensor, lw: torch.Tensor, lens: list[int]) -> torch.Tensor:
        if all(m == lens[0] for m in lens):
            mom = RunningMoments.from_batch(y, lw, blocks=len(lens), keep_blocks=True)
        else:
            parts, o = [], 0
            for m in lens:
                parts.append(RunningMoments.from_batch(y[o : o + m], lw[o : o + m]))
                o += m
            mom = RunningMoments.stack(parts)
        return mom.flatten_blocks()

    def _keep_top(self, lw: torch.Tensor) -> None:
        """Keep the largest log-weights of the main stage (for the Pareto k-hat): order-free, so
        the kept set does not depend on batching or sharding."""
        both = lw if self._top is None else torch.cat([self._top, lw])
        self._top = torch.topk(both, min(self._tail, both.numel())).values

    def top_log_weights(self) -> torch.Tensor:
        top = self._top if self._top is not None else torch.empty(0, dtype=torch.float64, device=self.dev)
        if self.size == 1:
            return top
        rows = torch.full((self.size, self._tail), float("-inf"), dtype=torch.float64, device=self.dev)
        rows[self.rank, : top.numel()] = top
        # every row is filled by one rank; a max-reduce assembles them exactly
        all_reduce_(rows, "max")
        return rows.reshape(-1)

    # ------------------------------------------------------------------ summaries
    def summarise(self, total: torch.Tensor):
        """(estimate, stderr, covariance, ess) from a reduced row."""
        k = self.k_out
        if self.mode == "sn":
            stats = RunningMoments.unflatten_blocks(total, self.k_stat).reduce()
            if not float(stats.sw) > 0:
                warnings.warn("every importance weight is zero: the self-normalised estimate is undefined (NaN)",
                              RuntimeWarning, stacklevel=4)
                nan = torch.full((k,), float("nan"), dtype=torch.float64, device=total.device)
                return nan, nan, torch.full((k, k), float("nan"), dtype=torch.float64), stats.ess * 0
            cov = stats.self_normalized_covariance()
            return stats.mean, torch.sqrt(torch.diagonal(cov).clamp_min(0)), cov, stats.ess
        ks = self.k_stat
        row = total[0]
        n, scale = row[0], row[1]
        mean = row[2 : 2 + ks]
        m2 = row[2 + ks :].reshape(ks, ks)
        cov_all = m2 / ((n - 1) * n) if float(n) > 1 else torch.full_like(m2, float("nan"))
        if self.mode == "plain":
            return mean, torch.sqrt(torch.diagonal(cov_all).clamp_min(0)), cov_all, None
        mean_w = mean[k]
        var_w = m2[k, k] / n  # biased variance: ESS = (sum w)^2 / sum w^2
        ess = n * mean_w**2 / (var_w + mean_w**2) if float(mean_w) > 0 else torch.zeros_like(n)
        factor = torch.exp(scale)
        est = mean[:k] * factor
        se = torch.sqrt(torch.diagonal(cov_all)[:k].clamp_min(0)) * factor
        if not (bool(torch.isfinite(est).all()) and bool(torch.isfinite(se).all() or float(n) < 2)):
            raise ValueError(
                f"the unbiased importance-sampling estimate mean(w f) overflows float64: log_weight reaches "
                f"{float(scale):.1f}; subtract a constant (e.g. log of the normalising constant) from "
                "log_weight, or use self_normalized=True"
            )
        cov = cov_all[:k, :k] * factor * factor
        if float(n) >= 2 and not bool(torch.isfinite(cov).all()):
            warnings.warn("the covariance of the IS estimates overflows float64 (squared weights near exp(1400)); "
                          "estimate and stderr are exact, covariance entries are inf", RuntimeWarning, stacklevel=4)
        return est, se, cov, ess


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
