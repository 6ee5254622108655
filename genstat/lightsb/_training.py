"""Training of LightSB: standardised units, Adam with warm-up and cosine decay, checks every few steps."""
from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import pandas as pd
import torch
from torch import Tensor

from genstat.mc import block_generator, sample_distribution

if TYPE_CHECKING:
    from .model import LightSB

__all__ = ["FitResult"]

Source = Tensor | Callable | torch.distributions.Distribution

CHECK_EVERY = 50
"""Steps between copies of the loss to the host (one device sync each) for the finiteness and divergence checks."""


@dataclass(frozen=True, slots=True)
class FitResult:
    """Training record of :meth:`LightSB.fit`.

    Attributes
    ----------
    losses : Tensor, shape (steps,)
        Loss per step in the data's units (float64, CPU); ``KL(pi* || pi_theta)`` up to a constant.
    lrs : Tensor, shape (steps,)
        Learning rate used at each step.
    wall_time : float
        Seconds spent in the training loop of :meth:`LightSB.fit`.
    steps, batch_size : int
    source_scale, target_scale : float
        ``s_x, s_y``: training ran on ``(X / s_x, Y / s_y)`` with ``eps / (s_x s_y)``.
    """

    losses: Tensor
    lrs: Tensor
    wall_time: float
    steps: int
    batch_size: int
    source_scale: float
    target_scale: float

    def to_frame(self) -> pd.DataFrame:
        """Tidy table with columns ``step, loss, lr``."""
        return pd.DataFrame({"step": range(1, self.steps + 1), "loss": self.losses.numpy(),
                             "lr": self.lrs.numpy()})


def default_lr(n_potentials: int, dim: int, epsilon: float) -> float:
    """Peak learning rate of :meth:`LightSB.fit` for the standardised ``epsilon``."""
    return 3e-2 * min(1.0, 4 * epsilon / math.sqrt(dim)) if n_potentials > 1 else 1e-1


def default_lower_lr_ratio(dim: int) -> float:
    """Learning-rate ratio of the strictly lower Cholesky entries of a full ``S_k``: ``1 / sqrt(d)``.

    Adam moves a parameter whose gradient is mostly noise by about ``lr`` per step whatever the
    batch size. Noise ``delta`` in the ``d^2 / 2`` off-diagonal entries moves the log-weights
    ``x^T S_k x / (2 eps)`` by ``O(delta d / eps)``, ``sqrt(d)`` times more than the same noise in
    the ``d`` diagonal entries (``O(delta sqrt(d) / eps)``), so they get ``lr / sqrt(d)``.
    """
    return 1.0 / math.sqrt(dim)


def fit(model: LightSB, source: Source, target: Source, *, steps: int, batch_size: int | None, lr: float | None,
        min_lr_ratio: float, warmup: float, generator: torch.Generator | None, progress: bool,
        lower_lr_ratio: float | None = None) -> FitResult:
    """:meth:`LightSB.fit` (documented there)."""
    _check_options(steps, batch_size, lr, min_lr_ratio, warmup)
    if lower_lr_ratio is None:
        lower_lr_ratio = default_lower_lr_ratio(model.dim)
    elif (isinstance(lower_lr_ratio, bool) or not isinstance(lower_lr_ratio, (int, float))
          or not (0 < lower_lr_ratio and math.isfinite(lower_lr_ratio))):
        raise ValueError(f"lower_lr_ratio must be positive, got {lower_lr_ratio!r}")
    gen = generator if generator is not None else block_generator(0, 0, model.r.device)
    xs = _Batches(model, source, "source", batch_size, gen)
    ys = _Batches(model, target, "target", batch_size, gen)
    eps = model.epsilon / (xs.scale * ys.scale)
    if lr is None:
        lr = default_lr(model.n_potentials, model.dim, eps)
    if bool(model._initialized):
        _change_units_(model, xs.scale, ys.scale)
    else:
        y0 = ys.draw(max(ys.batch, model.n_potentials)) / ys.scale
        model._init_from(y0, eps, generator=gen, method="potential", spread=2.0)
    start = time.perf_counter()
    try:
        losses, lrs = _train(model, xs, ys, eps, steps, _schedule(steps, lr, min_lr_ratio, warmup), progress,
                             float(lower_lr_ratio))
    finally:
        _change_units_(model, 1 / xs.scale, 1 / ys.scale)
    # log c(x) = log c'(x / s_x) and log v(y) = log v'(y / s_y) - d log s_y: the loss in the data's units
    losses += model.dim * math.log(ys.scale)
    return FitResult(losses, lrs, time.perf_counter() - start, steps, max(xs.batch, ys.batch), xs.scale, ys.scale)


def _check_options(steps, batch_size, lr, min_lr_ratio, warmup) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                           or not (lr > 0 and math.isfinite(lr))):
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be in [0, 1), got {warmup!r}")


def _schedule(steps: int, lr: float, min_lr_ratio: float, warmup: float) -> list[float]:
    """Linear warm-up over ``warmup * steps`` steps, then cosine decay from ``lr`` to ``lr * min_lr_ratio``."""
    n_warm = int(warmup * steps)
    out = []
    for s in range(steps):
        if s < n_warm:
            out.append(lr * (s + 1) / n_warm)
        else:
            frac = (s - n_warm) / max(steps - n_warm, 1)
            out.append(lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))))
    return out


def _scale(x: Tensor) -> float:
    """``sqrt(mean_j Var(x_j))``; for constant data the RMS ``sqrt(mean x^2)``, for zeros 1."""
    for v in (x.var(0).mean() if x.shape[0] > 1 else x.new_zeros(()), (x * x).mean()):
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"the spread of the data overflows {x.dtype}; rescale it or use float64")
        if v > 0:
            return math.sqrt(v)
    return 1.0


@torch.no_grad()
def _change_units_(model: LightSB, a: float, b: float) -> None:
    """Write the plan in the coordinates ``x' = x / a``, ``y' = y / b``, where ``eps' = eps / (a b)``.

    The EOT problem with cost ``-x^T y`` (``|x - y|^2 / 2`` up to terms in ``x`` or ``y`` alone) is
    equivariant under ``X -> a X, Y -> b Y, eps -> a b eps``. Substituting ``x = a x', y = b y'`` in
    ``w_k(x) N(y | r_k + S_k x, eps S_k)`` gives ``S' = (a / b) S``, ``r' = r / b`` and the same
    ``alpha``.
    """
    f = a / b
    model.log_s.add_(math.log(f))
    if model.covariance == "full":
        model.lower.mul_(math.sqrt(f))
    model.r.div_(b)


class _Batches:
    """Batches of one side of the problem: rows of a tensor (all, or drawn with replacement) or sampler draws."""

    def __init__(self, model: LightSB, src: Source, name: str, batch_size: int | None, gen: torch.Generator):
        self.name, self.gen = name, gen
        self.dev, self.dtype = model.r.device, model.r.dtype
        self.data: Tensor | None = None
        if isinstance(src, Tensor):
            self.data = model._as_batch(src, name)  # validated once: shape, finiteness
            n = self.data.shape[0]
            self.full = batch_size is None or batch_size >= n
            self.batch = n if self.full else batch_size
            self.scale = _scale(self.data)
            return
        if isinstance(src, torch.distributions.Distribution):
            self._raw = lambda m: sample_distribution(src, m, gen)
        elif callable(src):
            self._raw = lambda m: src(m, gen, self.dev)
        else:
            raise TypeError(f"{name} must be a Tensor, a sampler (n, generator, device) -> Tensor or a "
                            f"Distribution, got {type(src).__name__}")
        self.batch = batch_size or 4096
        self._first: Tensor | None = model._as_batch(self._raw(self.batch), f"{name} sample")
        self.scale = _scale(self._first)

    @property
    def sampled(self) -> bool:
        """Whether batches come from a sampler (and so are checked for finiteness on every step)."""
        return self.data is None

    def draw(self, m: int) -> Tensor:
        if self.data is not None:
            if self.full:
                return self.data
            n = self.data.shape[0]
            return self.data[torch.randint(0, n, (m,), generator=self.gen, device=self.gen.device).to(self.dev)]
        if self._first is not None:  # the batch that fixed the scale is the first one trained on
            out, self._first = self._first, None
            return out
        return self._raw(m).to(dtype=self.dtype, device=self.dev)


def _optimizer(model: LightSB, params: list[Tensor], lr: float, lower_lr_ratio: float) -> torch.optim.Optimizer:
    """Adam with the strictly lower Cholesky entries (full ``S``) in a group at ``lower_lr_ratio * lr``."""
    lower = getattr(model, "lower", None)
    rest = [q for q in params if q is not lower]
    groups = [{"params": rest, "lr_ratio": 1.0}]
    if lower is not None and any(q is lower for q in params):
        groups.append({"params": [lower], "lr_ratio": lower_lr_ratio})
    return torch.optim.Adam(groups, lr=lr, foreach=True)


def _train(model: LightSB, xs: _Batches, ys: _Batches, eps: float, steps: int, schedule: list[float],
           progress: bool, lower_lr_ratio: float = 1.0) -> tuple[Tensor, Tensor]:
    """The loop in standardised units; returns the host copies of the losses (standardised) and the lrs."""
    dev = model.r.device
    params = [q for q in model.parameters() if q.requires_grad]
    opt = _optimizer(model, params, schedule[0], lower_lr_ratio)
    losses = torch.empty(steps, dtype=torch.float64, device=dev)  # stays on the device between checks
    finite = torch.ones(steps, 2, dtype=torch.bool, device=dev)  # source, target batch of each step
    monitor = _Monitor(params, steps, model.dim, (xs.name, ys.name))
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="LightSB", leave=False)
    for s in it:
        for group in opt.param_groups:
            group["lr"] = schedule[s] * group["lr_ratio"]
        x = xs.draw(xs.batch) * (1 / xs.scale)
        y = ys.draw(ys.batch) * (1 / ys.scale)
        for j, (side, batch) in enumerate(((xs, x), (ys, y))):
            if side.sampled:
                finite[s, j] = torch.isfinite(batch).all()
        loss = model._loss(x, y, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[s] = loss.detach()
        if (s + 1) % CHECK_EVERY == 0 or s + 1 == steps:
            monitor.check(s + 1, losses, finite)
    return monitor.host, torch.tensor(schedule, dtype=torch.float64)


class _Monitor:
    """Moves the loss to the host every :data:`CHECK_EVERY` steps and checks it there.

    Non-finite values raise at once (``ValueError`` for a sampler's batch, ``FloatingPointError``
    for the loss on finite batches), after restoring the parameters of the last check that passed.
    Divergence rule (``RuntimeWarning``, once per fit): with ``m_j`` the median loss of check window
    ``j``, ``L_1`` the loss at step 1 (the initial parameters) and ``best`` the smallest of ``L_1``
    and the earlier ``m_j``, warn when ``m_j > max(L_1, best + d)``: training made the loss worse
    than where it started and more than one nat per dimension worse than its best. Loss differences
    are ``KL(pi* || pi_theta)`` differences, so the rule is free of the loss's unknown constant and
    of the data's units; medians ignore single spikes, and the ``d``-nat margin is far above the
    noise of a window's median at any batch size, so a stalled or noisy fit is not flagged.
    """

    def __init__(self, params: list[Tensor], steps: int, dim: int, names: tuple[str, str]):
        self.params, self.steps, self.dim, self.names = params, steps, dim, names
        self.host = torch.empty(steps, dtype=torch.float64)
        self.done = 0  # steps checked so far
        self.snapshot = [p.detach().clone() for p in params]
        self.start = self.best = math.inf
        self.warned = False

    def check(self, upto: int, losses: Tensor, finite: Tensor) -> None:
        lo = self.done
        window = losses[lo:upto].tolist()  # the device-to-host copies of this check: two here, one below
        ok = finite[lo:upto].tolist()  # [source finite, target finite] per step
        bad = [i for i, (v, f) in enumerate(zip(window, ok)) if not (all(f) and math.isfinite(v))]
        if bad:
            self._fail(lo + bad[0], window, ok, upto)
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            self._fail(upto - 1, window, ok, upto, params=True)
        self.host[lo:upto] = torch.tensor(window, dtype=torch.float64)
        self.done = upto
        for p, q in zip(self.params, self.snapshot):
            q.copy_(p.detach())
        if lo == 0:
            self.start = self.best = window[0]
        median = statistics.median(window)
        if not self.warned and median > max(self.start, self.best + self.dim):
            self.warned = True
            warnings.warn(f"LightSB training is unstable: the median loss over steps {lo + 1}-{upto} is "
                          f"{median:.6g}, above its value at step 1 ({self.start:.6g}) and more than d = {self.dim} "
                          f"nats above its best ({self.best:.6g}); lower lr", RuntimeWarning, stacklevel=5)
        self.best = min(self.best, median)

    def _fail(self, i: int, window: list[float], ok: list[list[bool]], upto: int, params: bool = False) -> None:
        with torch.no_grad():
            for p, q in zip(self.params, self.snapshot):
                p.copy_(q)
        kept = f"those after step {self.done}" if self.done else "the initial ones"
        where = f"LightSB.fit stopped at step {upto} of {self.steps} and restored the parameters to {kept}"
        sides = " and ".join(name for name, f in zip(self.names, ok[i - self.done]) if not f)
        if sides:
            raise ValueError(f"the {sides} sampler returned a non-finite batch (NaN or inf) at step {i + 1}; "
                             f"{where}")
        what = "the parameters became non-finite after" if params else f"the loss became {window[i - self.done]} at"
        raise FloatingPointError(f"{what} step {i + 1} on finite batches: training diverged (lower lr or use "
                                 f"float64); {where}")
