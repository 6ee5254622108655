"""Conditional fields ``b(t, x, c)`` and classifier-free guidance.

A *conditional field* is a callable ``(t, x, c) -> (n, d)``. The condition ``c`` is either

- class labels: an integer tensor of shape (n,) with values ``0..K-1``, or :data:`NULL_LABEL` (-1)
  for "no label" (the unconditional field), or
- contexts: a float tensor of shape (n, k); a row of NaNs is the null context.

Training with label dropout (:func:`genstat.interpolants.fit` with ``label_dropout=p``) replaces the
condition by the null one with probability p, so one network learns both the conditional velocity
``b(t, x | c) = E[alpha' x0 + beta' x1 + gamma' z | x_t = x, c]`` and the unconditional one
``b(t, x) = E[... | x_t = x]``. :func:`guided` combines them (classifier-free guidance):

    b_w(t, x) = b(t, x, null) + w (b(t, x, c) - b(t, x, null)).

``w = 1`` is the conditional field (its flow carries rho_0 to the conditional law rho_1(. | c)),
``w = 0`` the unconditional one; ``w > 1`` sharpens the classes (it is no longer the field of a known
law).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["NULL_LABEL", "null_condition", "guided"]

#: the label meaning "no label" (the unconditional branch of a class-conditional field)
NULL_LABEL = -1

ConditionalField = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def null_condition(c: torch.Tensor) -> torch.Tensor:
    """The null condition shaped like ``c``: ``NULL_LABEL`` for integer labels, NaN rows for contexts.

    Examples
    --------
    >>> import torch
    >>> null_condition(torch.tensor([0, 2]))
    tensor([-1, -1])
    >>> null_condition(torch.zeros(1, 2))
    tensor([[nan, nan]])
    """
    c = torch.as_tensor(c)
    if c.is_floating_point():
        return torch.full_like(c, float("nan"))
    return torch.full_like(c, NULL_LABEL)


def is_null(c: torch.Tensor) -> torch.Tensor:
    """Boolean (n,): which rows of ``c`` are the null condition."""
    return torch.isnan(c).any(1) if c.is_floating_point() else c == NULL_LABEL


def check_condition(c, n: int, name: str, *, n_classes: int | None = None,
                    context_dim: int | None = None) -> torch.Tensor:
    """``c`` as a tensor after checking it holds ``n`` data labels (>= 0, < n_classes) or finite
    contexts (n, k); raises ValueError/TypeError naming ``name``."""
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of labels (n,) or contexts (n, k), got {type(c).__name__}")
    if c.dtype == torch.bool or c.is_complex():
        raise TypeError(f"{name} must hold integer labels or float contexts, got dtype {c.dtype}")
    if c.is_floating_point():
        if c.ndim != 2 or c.shape[0] != n:
            raise ValueError(f"{name} (contexts) must have shape ({n}, k), got {tuple(c.shape)}")
        if context_dim is not None and c.shape[1] != context_dim:
            raise ValueError(f"{name} (contexts) must have shape ({n}, {context_dim}), got {tuple(c.shape)}")
        if not bool(torch.isfinite(c).all()):
            raise ValueError(f"{name} (contexts) must be finite (NaN rows are reserved for the null context)")
        return c
    if c.shape != (n,):
        raise ValueError(f"{name} (class labels) must have shape ({n},), got {tuple(c.shape)}")
    if n:
        lo, hi = int(c.min()), int(c.max())
        if lo < 0 or (n_classes is not None and hi >= n_classes):
            want = f"in 0..{n_classes - 1}" if n_classes is not None else ">= 0"
            raise ValueError(f"{name} must hold class labels {want}, got values in [{lo}, {hi}]")
    return c


def drop_condition(c: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``c`` with each row replaced by the null condition with probability ``p`` (one uniform per row
    from ``generator``)."""
    drop = torch.rand(c.shape[0], generator=generator, device=generator.device) < p
    drop = drop.to(c.device)
    null = null_condition(c)
    return torch.where(drop[:, None] if c.ndim == 2 else drop, null, c)


def _rows(c: torch.Tensor, n: int) -> torch.Tensor:
    """The condition ``c`` (one label / context, or one per row) for a batch of ``n`` rows."""
    single = (c.ndim == 0) if not c.is_floating_point() else (c.ndim == 1)
    if single:
        return c.expand(n) if c.ndim == 0 else c.expand(n, -1)
    if c.shape[0] != n:
        raise ValueError(f"c holds {c.shape[0]} conditions but the field was called on {n} rows; give one "
                         "label/context for the whole batch, or sample with batch_size=None")
    return c


class _Guided:
    """The guided field of :func:`guided` (a class so that it has a readable repr)."""

    __slots__ = ("b", "c", "scale")

    def __init__(self, b: ConditionalField, c: torch.Tensor, scale: float):
        self.b, self.c, self.scale = b, c, scale

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        c = _rows(self.c.to(x.device), n)
        w = self.scale
        if w == 1.0:
            return self.b(t, x, c)
        null = null_condition(c)
        if w == 0.0:
            return self.b(t, x, null)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(n) if t.ndim == 0 else t
        out = self.b(torch.cat([t, t]), torch.cat([x, x]), torch.cat([c, null]))  # one batched call
        if not isinstance(out, torch.Tensor) or out.shape != (2 * n, *x.shape[1:]):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"b must return a tensor of shape {(2 * n, *x.shape[1:])}, got {shape}")
        cond, uncond = out[:n], out[n:]
        return uncond + w * (cond - uncond)

    def __repr__(self) -> str:
        return f"guided({self.b!r}, c={self.c.tolist()!r}, scale={self.scale})"


def guided(b: ConditionalField, c, *, scale: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance: the field ``(t, x) -> b(t, x, null) + scale (b(t, x, c) - b(t, x, null))``.

    The result is an ordinary field for :func:`sample_ode` / :func:`sample_sde` (wrap the score the
    same way for an SDE). ``scale=1`` evaluates only ``b(t, x, c)``, ``scale=0`` only
    ``b(t, x, null)``; other scales evaluate both in one batched call of 2n rows (twice the work per
    sampler step; the samplers' ``nfe`` counts calls of the guided field).

    Parameters
    ----------
    b : callable
        Conditional field ``b(t, x, c) -> (n, d)``, e.g. a :class:`genstat.nn.ConditionalTimeMLP`
        trained with ``fit(..., label_dropout=p)`` or a :class:`ConditionalExactFields`.
    c : int, Tensor
        One label (an int or a 0-dim integer tensor) or one context (shape (k,)) for every row, or one
        per row: labels of shape (n,), contexts of shape (n, k) (then the sampler must be called with
        those n rows in one batch).
    scale : float
        Guidance scale w >= 0.

    Returns
    -------
    callable
        ``b_w(t, x) -> (n, d)``.

    References
    ----------
    Ho & Salimans (2022), "Classifier-Free Diffusion Guidance", eq. (6) (there on the score, with
    w_paper = scale - 1); Zheng, Le, Shaul, Lipman, Grover & Chen (2023), "Guided Flows for Generative
    Modeling and Decision Making", eq. (9) (the same combination of flow-matching velocities).

    Examples
    --------
    >>> import torch
    >>> b = lambda t, x, c: x + (c >= 0).to(x.dtype)[:, None]   # null: x, labelled: x + 1
    >>> guided(b, 0, scale=3.0)(torch.zeros(2), torch.zeros(2, 1))
    tensor([[3.],
            [3.]])
    """
    if not callable(b):
        raise TypeError(f"b must be callable, got {type(b).__name__}")
    if isinstance(c, bool):
        raise TypeError("c must be an int label, a tensor of labels or contexts, got bool")
    if isinstance(c, int):
        c = torch.tensor(c, dtype=torch.int64)
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"c must be an int label or a tensor of labels or contexts, got {type(c).__name__}")
    if c.dtype == torch.bool or c.is_complex():
        raise TypeError(f"c must hold integer labels or float contexts, got dtype {c.dtype}")
    if c.is_floating_point() and c.ndim not in (1, 2):
        raise ValueError(f"c (contexts) must have shape (k,) or (n, k), got {tuple(c.shape)}")
    if not c.is_floating_point() and c.ndim not in (0, 1):
        raise ValueError(f"c (labels) must have shape () or (n,), got {tuple(c.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale >= 0 and scale < float("inf")):
        raise ValueError(f"scale must be a finite float >= 0, got {scale!r}")
    return _Guided(b, c, float(scale))
