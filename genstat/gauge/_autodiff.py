"""Jacobian products of batched fields ``f: (n, D) -> (n, D)`` acting pointwise.

torch.func (``jvp``, ``vjp``, ``jacrev``) is used first; fields that call ``torch.autograd.grad`` inside
(which torch.func cannot trace) fall back to plain autograd (double-backward trick for the JVP). Only the
errors torch.func raises for such fields trigger the fallback; every other error reaches the caller.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import jacrev, jvp, vjp

Field = Callable[[torch.Tensor], torch.Tensor]

# Fragments of the messages torch.func raises for code it cannot transform (autograd.grad / requires_grad_
# inside the field, or reading a functionalised tensor's data); checked against torch 2.1-2.13.
_TRANSFORM_ERRORS = ("functorch", "torch.func", "vmap", "doesn't have storage", "data-dependent")


def is_transform_error(err: RuntimeError) -> bool:
    """Whether ``err`` says that torch.func cannot trace the function (so plain autograd may)."""
    return any(frag in str(err) for frag in _TRANSFORM_ERRORS)


def check_field_output(y: torch.Tensor, x: torch.Tensor, name: str = "field") -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(y).__name__}")
    if y.shape != x.shape:
        raise ValueError(f"{name} must map x of shape {tuple(x.shape)} to the same shape, got {tuple(y.shape)}")
    return y


def check_points(x, dim: int | None = None, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, D)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def _autograd_jvp_vjp(f: Field, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        y = f(xr)
        u = torch.zeros_like(y, requires_grad=True)
        jtu = torch.autograd.grad(y, xr, u, create_graph=True)[0]       # J^T u, linear in u
        jv = torch.autograd.grad(jtu, u, v, retain_graph=True)[0]        # d<J^T u, v>/du = J v
        jtv = torch.autograd.grad(y, xr, v)[0]
    return y.detach(), jv.detach(), jtv.detach()


def jvp_vjp(f: Field, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(f(x), J v, J^T v)`` per point, each (n, D)."""
    try:
        y, jv = jvp(f, (x,), (v,))
        _, pullback = vjp(f, x)
        (jtv,) = pullback(v)
        return y.detach(), jv.detach(), jtv.detach()
    except RuntimeError as err:
        if not is_transform_error(err):
            raise
        return _autograd_jvp_vjp(f, x, v)


def jacobian(f: Field, x: torch.Tensor) -> torch.Tensor:
    """Per-point Jacobians ``J[i, a, b] = d f_a(x_i) / d x_b``, shape (n, D, D)."""
    try:
        jac = jacrev(lambda z: f(z).sum(0))(x)  # (D_out, n, D_in): rows of each block-diagonal J
        return jac.permute(1, 0, 2).detach()
    except RuntimeError as err:
        if not is_transform_error(err):
            raise
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            y = f(xr)
            rows = [torch.autograd.grad(y[:, a].sum(), xr, retain_graph=a < y.shape[1] - 1)[0]
                    for a in range(y.shape[1])]
        return torch.stack(rows, 1).detach()


def divergence(f: Field, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x), div f(x))`` with the exact trace of the Jacobian, shapes (n, D) and (n,)."""
    J = jacobian(f, x)
    with torch.no_grad():
        y = f(x)
    return y, torch.diagonal(J, dim1=1, dim2=2).sum(1)
