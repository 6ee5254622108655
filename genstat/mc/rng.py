"""Block-seeded random number generation.

A Monte Carlo computation is a sequence of fixed-size *blocks*; block ``b`` draws from a
generator seeded from ``(seed, b)`` only. Which worker or which batch computes a block never
changes its numbers, so results do not depend on batch size or world size.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["block_seed", "block_generator", "as_device", "child_generator", "sample_distribution"]


def block_seed(seed: int, block: int, stream: int = 0) -> int:
    """Return a 63-bit seed derived from ``(seed, block, stream)`` by ``numpy.random.SeedSequence``.

    Parameters
    ----------
    seed : int
        The user's seed (non-negative).
    block : int
        Block index (non-negative).
    stream : int, optional
        An extra key to derive independent streams (e.g. one for sampling, one for probes).

    Returns
    -------
    int
        A seed in ``[0, 2**63)``.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if block < 0:
        raise ValueError(f"block must be non-negative, got {block}")
    state = np.random.SeedSequence(int(seed), spawn_key=(int(block), int(stream))).generate_state(
        2, dtype=np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def as_device(device: str | torch.device | None) -> torch.device:
    """Normalise a device argument (``None`` means CPU)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device must be a valid torch device, got {device!r}") from exc
    if isinstance(device, torch.device):
        return device
    raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")


def block_generator(
    seed: int, block: int, device: str | torch.device | None = None, stream: int = 0
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, block, stream)``.

    CPU and CUDA generators give different streams for the same seed; results are reproducible
    per device type.
    """
    dev = as_device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(block_seed(seed, block, stream))
    return gen


def child_generator(generator: torch.Generator, device: str | torch.device | None = None) -> torch.Generator:
    """Derive an independent generator (on ``device``) from ``generator`` by drawing a seed from it."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    gen = torch.Generator(device=as_device(device) if device is not None else generator.device)
    gen.manual_seed(seed)
    return gen


def _standard_gamma(concentration: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Gamma(concentration, 1) draws from ``generator`` (Marsaglia & Tsang 2000, vectorised rejection)."""
    conc = concentration.expand(shape)
    dtype, dev = conc.dtype, generator.device
    boost = conc < 1  # Gamma(a) = Gamma(a + 1) * U^(1/a) for a < 1
    a = torch.where(boost, conc + 1, conc)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=dtype, device=dev)
    todo = torch.ones(shape, dtype=torch.bool, device=dev)
    while bool(todo.any()):
        idx = todo.nonzero(as_tuple=True)
        m = idx[0].numel()
        x = torch.randn(m, generator=generator, device=dev, dtype=dtype)
        u = torch.rand(m, generator=generator, device=dev, dtype=dtype)
        v = (1 + c[idx] * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d[idx] - d[idx] * v + d[idx] * torch.log(v.clamp_min(1e-300)))
        sel = tuple(i[ok] for i in idx)
        out[sel] = (d[idx] * v)[ok]
        todo[sel] = False
    if bool(boost.any()):
        u = torch.rand(shape, generator=generator, device=dev, dtype=dtype)
        out = torch.where(boost, out * u ** (1.0 / conc), out)
    return out


def sample_distribution(
    dist: torch.distributions.Distribution, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw ``n`` samples from a ``torch.distributions.Distribution`` with an explicit generator.

    ``Distribution.sample`` only uses the global RNG, so families are sampled here by
    reparametrisation from ``generator``: Normal, MultivariateNormal, LowRankMultivariateNormal,
    Uniform, Gamma (and Chi2), Independent of those, and any scalar distribution with an ``icdf``
    (Exponential, Cauchy, Laplace, ...). Others raise ``TypeError``: pass a sampler callable
    ``(n, generator, device)`` instead. The global RNG is never used.
    """
    D = torch.distributions
    shape = (n,) + tuple(dist.batch_shape) + tuple(dist.event_shape)
    base = dist.base_dist if isinstance(dist, D.Independent) else dist
    dev = generator.device
    if isinstance(base, D.Normal):
        eps = torch.randn(shape, generator=generator, device=dev, dtype=base.loc.dtype)
        return base.loc + base.scale * eps
    if isinstance(base, D.Uniform):
        u = torch.rand(shape, generator=generator, device=dev, dtype=base.low.dtype)
        return base.low + (base.high - base.low) * u
    if isinstance(base, D.Gamma):
        return _standard_gamma(base.concentration, shape, generator) / base.rate
    if isinstance(dist, D.MultivariateNormal):
        eps = torch.randn(shape, generator=generator, device=dev, dtype=dist.loc.dtype)
        return dist.loc + (dist.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if isinstance(dist, D.LowRankMultivariateNormal):
        rank = dist.cov_factor.shape[-1]
        eps_w = torch.randn(shape[:-1] + (rank,), generator=generator, device=dev, dtype=dist.loc.dtype)
        eps_d = torch.randn(shape, generator=generator, device=dev, dtype=dist.loc.dtype)
        return dist.loc + (dist.cov_factor @ eps_w.unsqueeze(-1)).squeeze(-1) + dist.cov_diag.sqrt() * eps_d
    if type(dist).icdf is not D.Distribution.icdf and not dist.event_shape:
        dtype = dist.mean.dtype if dist.mean.is_floating_point() else torch.get_default_dtype()
        u = torch.rand(shape, generator=generator, device=dev, dtype=dtype)
        u = u.clamp(torch.finfo(dtype).tiny, 1 - torch.finfo(dtype).eps)
        try:
            return dist.icdf(u)
        except NotImplementedError:
            pass
    raise TypeError(
        f"cannot sample {type(dist).__name__} with an explicit generator; pass a sampler callable "
        "(n, generator, device) -> Tensor instead"
    )
