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


def sample_distribution(
    dist: torch.distributions.Distribution, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw ``n`` samples from a ``torch.distributions.Distribution`` with an explicit generator.

    ``Distribution.sample`` only uses the global RNG. Common families (Normal, MultivariateNormal,
    Uniform, Independent of those, LowRankMultivariateNormal, and anything with an ``icdf``) are
    sampled by reparametrisation from ``generator``. Any other distribution is sampled inside
    ``torch.random.fork_rng`` seeded from ``generator``, so the global RNG state is left untouched.
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
    if isinstance(dist, D.MultivariateNormal):
        eps = torch.randn(shape, generator=generator, device=dev, dtype=dist.loc.dtype)
        return dist.loc + (dist.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if isinstance(dist, D.LowRankMultivariateNormal):
        # rsample with our own noise: W eps_W + sqrt(D) eps_D
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
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev).item())
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return dist.sample((n,))
