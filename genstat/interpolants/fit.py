"""Training loop for the fields of a stochastic interpolant: any ``torch.nn.Module`` taking (t, x)."""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import _checkpoint
from .conditional import check_condition, drop_condition
from .couplings import COUPLINGS, couple
from .fields import interpolant_loss
from .paths import FIELDS, Interpolant

__all__ = ["FitResult", "fit", "TIME_SAMPLINGS", "sample_times"]

TIME_SAMPLINGS = ("uniform", "stratified", "logit_normal")
MIXED_PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}
Source = Callable[..., torch.Tensor] | torch.Tensor | None


@dataclass(frozen=True, slots=True)
class FitResult:
    """Training record of :func:`fit`.

    Attributes
    ----------
    losses : Tensor, shape (steps,)
        Loss per step (float64, CPU).
    wall_time : float
        Seconds spent training (process CPU time is in ``cpu_time``).
    cpu_time : float
        Process CPU seconds spent training.
    steps : int
    batch_size : int
    """

    losses: torch.Tensor
    wall_time: float
    cpu_time: float
    steps: int
    batch_size: int

    def to_frame(self) -> pd.DataFrame:
        """Tidy table with columns ``step``, ``loss``."""
        return pd.DataFrame({"step": range(1, self.steps + 1), "loss": self.losses.numpy()})


def sample_times(n: int, method: str, generator: torch.Generator, *, t_range: tuple[float, float] = (0.0, 1.0),
                 dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Draw ``n`` training times in ``t_range``.

    ``"uniform"``: i.i.d. U(lo, hi). ``"stratified"``: one uniform draw in each of n equal strata
    (unbiased for the uniform time average, with lower variance). ``"logit_normal"``: sigmoid of N(0, 1)
    (more weight at mid times).

    The times lie strictly inside (lo, hi): uniforms are drawn on the midpoints of a grid of 2^23
    (2^52 in float64) cells, so the ends, where a Brownian gamma' is infinite, are never drawn (the
    first version drew t = 0 with probability 2^-24 per time, in ~3% of default fits, and one such
    time gave a loss of -8e11). Close to the ends gamma'^2 still grows like 1/t: the velocity loss
    with a Brownian gamma has a log-divergent variance there, so use ``t_range`` (e.g.
    (1e-3, 1 - 1e-3)) or ``field="eta"`` for such paths.

    Examples
    --------
    >>> import torch
    >>> t = sample_times(4, "stratified", torch.Generator().manual_seed(0))
    >>> bool(((t >= 0) & (t <= 1)).all()), t.shape
    (True, torch.Size([4]))
    """
    if method not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {method!r}")
    lo, hi = float(t_range[0]), float(t_range[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    gdev = generator.device
    if method == "uniform":
        u = _open_uniform(n, generator, dtype)
    elif method == "stratified":
        u = (torch.arange(n, device=gdev, dtype=torch.float64) + _open_uniform(n, generator, dtype)) / n
        u = u[torch.randperm(n, generator=generator, device=gdev)]
    else:
        u = torch.sigmoid(torch.randn(n, generator=generator, device=gdev, dtype=torch.float64))
    t = (lo + (hi - lo) * u).to(dtype)
    # rounding to dtype (or a far normal draw) must not land on an end either
    inner_lo = torch.nextafter(torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype))
    inner_hi = torch.nextafter(torch.tensor(hi, dtype=dtype), torch.tensor(lo, dtype=dtype))
    return t.clamp_(float(inner_lo), float(inner_hi)).to(device)


def _open_uniform(n: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """U(0, 1) in float64 on the midpoints of 2^23 cells (2^52 for float64 times): never 0 or 1, and
    every value is representable in ``dtype`` (float32 holds 1 - 2^-24 but not 1 - 2^-25)."""
    bits = 52 if dtype == torch.float64 else 23
    k = torch.randint(0, 2**bits, (n,), generator=generator, device=generator.device, dtype=torch.int64)
    return (k.double() + 0.5) / 2**bits


def _draw(src: Source, n: int, gen: torch.Generator, dev: torch.device, dtype: torch.dtype, name: str):
    if isinstance(src, torch.Tensor):
        idx = torch.randint(0, src.shape[0], (n,), generator=gen, device=gen.device)
        return src[idx.to(src.device)].to(dev, dtype)
    out = src(n, gen, dev)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} sampler must return a tensor, got {type(out).__name__} (labels go with the "
                        "target: a target sampler returns (x1, c))")
    return out.to(dev, dtype)


def _labelled(out, n: int, dev, dtype, name: str, model) -> tuple[torch.Tensor, ...]:
    """A sampler's ``(x..., c)`` output on ``dev``: the x parts in ``dtype``, c checked (labels stay
    integer, contexts take ``dtype``)."""
    *xs, c = out
    for x in xs:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} sampler must return tensors, got {type(x).__name__}")
    c = check_condition(c, xs[0].shape[0], f"the labels returned by the {name} sampler",
                        n_classes=getattr(model, "n_classes", None), context_dim=getattr(model, "context_dim", None))
    return (*(x.to(dev, dtype) for x in xs), c.to(dev, dtype) if c.is_floating_point() else c.to(dev))


def _draw_target(src: Source, labels, n: int, gen: torch.Generator, dev, dtype, model):
    """``(x1, c)``: rows of a data tensor with their ``labels``, or a sampler's ``(x1, c)``; c is None
    for an unlabelled target (then the same draws as :func:`_draw`)."""
    if isinstance(src, torch.Tensor):
        idx = torch.randint(0, src.shape[0], (n,), generator=gen, device=gen.device)
        x = src[idx.to(src.device)].to(dev, dtype)
        if labels is None:
            return x, None
        c = labels[idx.to(labels.device)]
        return x, c.to(dev, dtype) if c.is_floating_point() else c.to(dev)
    out = src(n, gen, dev)
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"a labelled target sampler must return (x1, c), got a tuple of {len(out)}")
        return _labelled(out, n, dev, dtype, "target", model)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"target sampler must return a tensor, got {type(out).__name__}")
    return out.to(dev, dtype), None


def _check_labels(labels, model, source, target, coupling, label_dropout) -> None:
    """The checks of ``labels=`` and ``label_dropout=`` (before any work)."""
    if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) \
            or not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must be a float in [0, 1), got {label_dropout!r}")
    if labels is None:
        return
    data = source if coupling == "paired" else target
    if not isinstance(data, torch.Tensor):
        raise ValueError("labels= labels the rows of a data tensor (target, or the pairs with coupling='paired'); "
                         "a sampler returns its labels itself, as (x1, c)")
    check_condition(labels, data.shape[0], "labels", n_classes=getattr(model, "n_classes", None),
                    context_dim=getattr(model, "context_dim", None))


def _check_conditional_model(model, c) -> None:
    """A labelled fit calls ``model(t, x, c)``: refuse a model that cannot take c."""
    try:
        inspect.signature(getattr(model, "forward", model)).bind(c, c, c)  # Module.__call__ takes *args
    except TypeError:
        raise TypeError(f"labelled data needs a conditional model taking (t, x, c) (e.g. "
                        f"genstat.nn.ConditionalTimeMLP), got {type(model).__name__}") from None
    except ValueError:  # no signature to inspect: let the call decide
        pass


def _check_args(interpolant, model, source, target, *, generator, field, steps, batch_size, lr, coupling,
                antithetic, time_sampling, lr_schedule, ema, coupling_every, grad_clip, warmup_steps,
                checkpoint_every) -> None:
    """The argument checks of :func:`fit` (all before any work)."""
    if not isinstance(interpolant, Interpolant):
        raise TypeError(f"interpolant must be an Interpolant, got {type(interpolant).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator (the only source of randomness)")
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("coupling_every", coupling_every),
                    ("checkpoint_every", checkpoint_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive, got {lr}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    if ema is not None and not 0.0 < ema < 1.0:
        raise ValueError(f"ema must be in (0, 1), got {ema}")
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
    if antithetic and not interpolant.has_noise:
        raise ValueError("antithetic=True needs an interpolant with a noise gamma")
    if coupling == "paired" and isinstance(source, torch.Tensor):
        if not isinstance(target, torch.Tensor) or target.shape != source.shape:
            raise ValueError("coupling='paired' with tensors needs source and target of the same shape")
    if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
        raise ValueError(f"grad_clip must be a positive finite float, got {grad_clip}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")


def _check_mixed_precision(mixed_precision, model) -> None:
    if mixed_precision is None:
        return
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be None or one of {sorted(MIXED_PRECISIONS)}, got {mixed_precision!r}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        raise ValueError(f"mixed_precision={mixed_precision!r} needs float32 parameters, the model has "
                         f"{sorted(str(d) for d in dtypes)}")


def _optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list, grad_clip: float | None,
                    scaler) -> None:
    """Backward pass, optional clipping of the (unscaled) gradients, optimiser step."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()


def _schedule(opt: torch.optim.Optimizer, lr_schedule: str, steps: int, warmup_steps: int):
    """The learning-rate scheduler of :func:`fit` (None for a constant rate without warm-up)."""
    if not warmup_steps:  # kept as before, so that earlier runs reproduce bit for bit
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if lr_schedule == "cosine" else None

    def factor(k: int) -> float:  # k = optimiser steps taken so far
        f = 0.5 * (1.0 + math.cos(math.pi * k / steps)) if lr_schedule == "cosine" else 1.0
        return f * min(1.0, (k + 1) / warmup_steps)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _pairs(step, pool, interpolant, source, target, labels, coupling, coupling_every, reg, batch_size, generator,
           dev, dtype, model):
    """The training pairs of one step of :func:`fit`: ``(x0, x1, c, pool)``, with c the condition of
    each pair (None for unlabelled data, which draw exactly as before labels existed) and the
    amortised-coupling pool after the step. With labels, OT/Sinkhorn couple within each class only."""
    gdev = generator.device
    c = None
    if coupling == "paired":
        if isinstance(source, torch.Tensor):
            idx = torch.randint(0, source.shape[0], (batch_size,), generator=generator, device=gdev).cpu()
            x0 = source[idx.to(source.device)].to(dev, dtype)
            x1 = target[idx.to(target.device)].to(dev, dtype)
            if labels is not None:
                c = labels[idx.to(labels.device)]
                c = c.to(dev, dtype) if c.is_floating_point() else c.to(dev)
        else:
            out = source(batch_size, generator, dev)
            if not (isinstance(out, tuple) and len(out) in (2, 3)):
                raise TypeError("with coupling='paired' the source sampler must return (x0, x1) or (x0, x1, c)")
            x0, x1, *rest = _labelled(out, batch_size, dev, dtype, "source", model) if len(out) == 3 \
                else (o.to(dev, dtype) for o in out)
            c = rest[0] if rest else None
        return x0, x1, c, pool
    if pool is None or step % coupling_every == 0:
        x1, c = _draw_target(target, labels, batch_size, generator, dev, dtype, model)
        if interpolant.mirror:
            x0 = x1
        elif source is None:
            x0 = torch.randn(x1.shape, generator=generator, device=gdev, dtype=dtype).to(dev)
        else:
            x0 = _draw(source, batch_size, generator, dev, dtype, "source")
        if step == 0 and x0.shape != x1.shape:
            raise ValueError(f"source and target batches differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
        if c is not None and c.is_floating_point() and coupling in ("ot", "sinkhorn"):
            raise ValueError(f"coupling={coupling!r} with contexts: class-blocked couplings need integer class "
                             "labels; use coupling='independent' with continuous contexts")
        classes = c if c is not None and not c.is_floating_point() else None
        x0, x1 = couple(x0, x1, coupling, generator=generator, reg=reg, labels=classes)
        batch = (x0, x1) if c is None else (x0, x1, c)
        if coupling_every > 1:
            keep = (coupling_every - 1) * batch_size
            pool = batch if pool is None else tuple(torch.cat([p[-keep:], q]) for p, q in zip(pool, batch))
    if pool is not None:  # amortised coupling: train on pairs drawn from the pool
        idx = torch.randint(0, pool[0].shape[0], (batch_size,), generator=generator, device=gdev).to(dev)
        x0, x1 = pool[0][idx], pool[1][idx]
        c = pool[2][idx] if len(pool) == 3 else None
    return x0, x1, c, pool


def fit(interpolant: Interpolant, model: torch.nn.Module, source: Source, target: Source, *, field: str = "b",
        steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, coupling: str = "independent",
        antithetic: bool = False, time_sampling: str = "uniform", t_range: tuple[float, float] = (0.0, 1.0),
        lr_schedule: str = "constant", ema: float | None = None, reg: float = 0.05, coupling_every: int = 1,
        generator: torch.Generator | None = None, progress: bool = False,
        callback: Callable[[int, float], None] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None, grad_clip: float | None = None,
        warmup_steps: int = 0, checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 100, labels: torch.Tensor | None = None, label_dropout: float = 0.0,
        mixed_precision: str | None = None) -> FitResult:
    """Fit ``model(t, x)`` (or a conditional ``model(t, x, c)``) to the field ``field`` of ``interpolant``
    by stochastic gradient descent.

    Parameters
    ----------
    interpolant : Interpolant
    model : torch.nn.Module
        Maps (t of shape (n,), x of shape (n, d)) to (n, d), e.g. :class:`genstat.nn.TimeMLP`.
    source, target : callable, Tensor or None
        Samplers ``(n, generator, device) -> (n, d)`` or data tensors (rows drawn with replacement).
        ``source=None`` means N(0, I) (one-sided paths); the mirror path ignores ``source``. With
        ``coupling="paired"``: a sampler returning ``(x0, x1)`` as ``source`` (``target=None``), or two
        tensors with the same number of rows whose rows are pairs. Labelled (conditional) data: a
        target sampler returning ``(x1, c)``, a paired sampler returning ``(x0, x1, c)``, or a data
        tensor with ``labels=``; the model is then called as ``model(t, x, c)`` (see ``labels``).
    field : str
        ``"b"`` (velocity), ``"eta"`` (denoiser; score = -eta/gamma), ``"x1"``, ``"x0"``.
    steps, batch_size, lr
        Adam steps, pairs per step, learning rate.
    coupling : str
        ``"independent"``, ``"ot"`` (``ot.emd`` on the batch), ``"sinkhorn"``, ``"paired"``.
    antithetic : bool
        Evaluate the loss at ``x_t^±`` (± z): twice the model evaluations per pair.
    time_sampling : str
        See :func:`sample_times`. ``t_range`` restricts the times (e.g. away from a singular gamma').
    lr_schedule : str
        ``"constant"`` or ``"cosine"`` (decays to 0 at the last step).
    optimizer : callable, optional
        ``optimizer(params, lr=lr) -> torch.optim.Optimizer`` (a class such as ``torch.optim.SGD``
        or a ``functools.partial`` of one); default ``torch.optim.Adam``.
    grad_clip : float, optional
        Clip the gradients' total L2 norm to this value before every step
        (``torch.nn.utils.clip_grad_norm_``).
    warmup_steps : int
        Linear learning-rate warm-up: step k (from 1) uses ``lr * min(1, k / warmup_steps)`` times the
        schedule's factor.
    checkpoint : path, optional
        Save the whole training state (model, optimiser, schedule, EMA, generator, coupling pool,
        losses) there every ``checkpoint_every`` steps and at the end, atomically. When the file
        exists, ``fit`` resumes from it: an interrupted run continued this way ends bitwise where the
        uninterrupted one does (the samplers must draw only from ``generator``). A checkpoint written
        with other settings is refused (``ValueError``).
    checkpoint_every : int
        Steps between checkpoints.
    ema : float, optional
        Exponential moving average decay of the weights, with the usual warm-up: step k (from 1)
        uses ``min(ema, (1 + k) / (10 + k))``, so the random initial weights are forgotten (without
        it 0.999 over 2000 steps kept 13.5% of them: W2 0.421 instead of 0.219). The averaged weights
        are loaded into ``model`` at the end.
    reg : float
        Relative entropic regularisation of the Sinkhorn coupling.
    coupling_every : int
        Amortised couplings: every ``coupling_every`` steps one fresh batch is coupled and pushed to a
        pool holding the last ``coupling_every`` coupled batches; each step trains on ``batch_size``
        pairs drawn uniformly from the pool. ``1`` (default) couples a fresh batch every step. This
        cuts the cost of ``"ot"`` / ``"sinkhorn"`` by that factor at the same number of steps.
    generator : torch.Generator
        The only source of randomness (data, times, noise, couplings).
    progress : bool
        tqdm bar when stderr is a terminal.
    callback : callable, optional
        ``callback(step, loss)`` after every step.
    labels : Tensor, optional
        Condition of each row of the data tensor ``target`` (of the pairs with ``coupling="paired"``):
        integer class labels of shape (n,) (``0..model.n_classes-1``) or float contexts of shape
        (n, k). The source is drawn independently of the condition; ``"ot"`` / ``"sinkhorn"`` couple
        within each class only (class-blocked, see :func:`couple`; contexts need
        ``"independent"``).
    label_dropout : float
        In [0, 1): each pair's condition is replaced by the null one (``NULL_LABEL``, or a NaN
        context row) with this probability, one uniform per pair from ``generator``, so that the
        model also learns the unconditional field that :func:`guided` needs (Ho & Salimans 2022).
        Unlabelled fits draw exactly as before (no extra draws).
    mixed_precision : str, optional
        ``"bfloat16"`` or ``"float16"``: the model's forward pass and the loss run under
        ``torch.autocast`` on the parameters' device with that dtype (the parameters, the optimiser
        state and the loss record stay float32). ``"float16"`` scales the loss with
        ``torch.amp.GradScaler`` (its state is checkpointed); steps whose gradients overflow are
        skipped by the scaler and their loss is still recorded. Meant for CUDA (``"bfloat16"`` also
        works on CPU, usually slower there); needs float32 parameters. ``None`` (default): off.

    Returns
    -------
    FitResult

    Raises
    ------
    FloatingPointError
        The loss became NaN or infinite (the message gives the step).

    References
    ----------
    Albergo, Boffi, Vanden-Eijnden (2023), eqs. (2.11), (2.14); Tong et al. (2024) for minibatch OT;
    Ho & Salimans (2022), Zheng et al. (2023) for label dropout and guidance.

    Examples
    --------
    >>> import torch
    >>> from genstat.nn import TimeMLP
    >>> g = torch.Generator().manual_seed(0)
    >>> I = Interpolant("linear", "none")
    >>> rec = fit(I, TimeMLP(2, hidden=16), lambda n, g, d: torch.randn(n, 2, generator=g),
    ...           lambda n, g, d: torch.randn(n, 2, generator=g) + 3, steps=5, batch_size=32, generator=g)
    >>> rec.losses.shape
    torch.Size([5])
    """
    _check_args(interpolant, model, source, target, generator=generator, field=field, steps=steps,
                batch_size=batch_size, lr=lr, coupling=coupling, antithetic=antithetic, time_sampling=time_sampling,
                lr_schedule=lr_schedule, ema=ema, coupling_every=coupling_every, grad_clip=grad_clip,
                warmup_steps=warmup_steps, checkpoint_every=checkpoint_every)
    _check_mixed_precision(mixed_precision, model)
    _check_labels(labels, model, source, target, coupling, label_dropout)
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    opt = (torch.optim.Adam if optimizer is None else optimizer)(model.parameters(), lr=lr)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer must build a torch.optim.Optimizer, got {type(opt).__name__}")
    sched = _schedule(opt, lr_schedule, steps, warmup_steps)
    scaler = torch.amp.GradScaler(dev.type) if mixed_precision == "float16" else None
    autocast = (contextlib.nullcontext() if mixed_precision is None
                else torch.autocast(dev.type, dtype=MIXED_PRECISIONS[mixed_precision]))
    ema_model = copy.deepcopy(model) if ema is not None else None
    if ema_model is not None:
        ema_params = [p for p in ema_model.parameters()]
        for p in ema_params:
            p.requires_grad_(False)
    params = [p for p in model.parameters()]
    losses = torch.empty(steps, dtype=torch.float64)
    gdev = generator.device
    pool: tuple[torch.Tensor, torch.Tensor] | None = None
    start, spent = 0, (0.0, 0.0)
    parts = dict(model=model, optimizer=opt, scheduler=sched, ema=ema_model)  # what a checkpoint holds
    if scaler is not None:
        parts["scaler"] = scaler
    ckpt = None if checkpoint is None else Path(checkpoint)
    if ckpt is not None:
        fingerprint = dict(interpolant=repr(interpolant), field=field, steps=steps, batch_size=batch_size, lr=lr,
                           coupling=coupling, coupling_every=coupling_every, antithetic=antithetic,
                           time_sampling=time_sampling, t_range=tuple(t_range), lr_schedule=lr_schedule, ema=ema,
                           reg=reg, grad_clip=grad_clip, warmup_steps=warmup_steps, optimizer=type(opt).__name__)
        if labels is not None or label_dropout:  # only then: earlier checkpoints stay valid
            fingerprint.update(labels=labels is not None, label_dropout=label_dropout)
        if mixed_precision is not None:
            fingerprint.update(mixed_precision=mixed_precision)
        state = _checkpoint.load(ckpt, fingerprint)
        if state is not None:
            start, pool, spent = _checkpoint.restore(state, parts, generator, losses, dev)

    w0, c0 = time.perf_counter(), time.process_time()
    bar = tqdm(range(start, steps), disable=not (progress and sys.stderr.isatty()), leave=False, desc="fit")
    model.train()
    for step in bar:
        x0, x1, c, pool = _pairs(step, pool, interpolant, source, target, labels, coupling, coupling_every, reg,
                                 batch_size, generator, dev, dtype, model)
        if step == start and c is not None:
            _check_conditional_model(model, c)
        if label_dropout:
            if c is None:
                raise ValueError("label_dropout needs labelled data (labels=, or a sampler returning (x1, c))")
            c = drop_condition(c, label_dropout, generator)
        t = sample_times(batch_size, time_sampling, generator, t_range=t_range, dtype=dtype, device=dev)
        z = torch.randn(x1.shape, generator=generator, device=gdev, dtype=dtype).to(dev) \
            if interpolant.has_noise else None
        with autocast:
            loss = interpolant_loss(interpolant, model, x0, x1, t, z, field=field, antithetic=antithetic, c=c)
        loss = loss.float()
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"training produced a non-finite loss ({lv}) at step {step + 1}")
        _optimizer_step(loss, opt, params, grad_clip, scaler)
        if sched is not None:
            with warnings.catch_warnings():  # a step the float16 scaler skipped still advances the schedule
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
                sched.step()
        if ema_model is not None:
            with torch.no_grad():
                decay = min(ema, (2.0 + step) / (11.0 + step))
                torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
        losses[step] = lv
        if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            _checkpoint.save(ckpt, _checkpoint.capture(
                fingerprint, step + 1, parts, generator, losses, pool,
                (spent[0] + time.perf_counter() - w0, spent[1] + time.process_time() - c0)))
        if callback is not None:
            callback(step + 1, lv)
    wall, cpu = spent[0] + time.perf_counter() - w0, spent[1] + time.process_time() - c0
    if ema_model is not None:
        model.load_state_dict(ema_model.state_dict())
    model.eval()
    return FitResult(losses, wall, cpu, steps, batch_size)
