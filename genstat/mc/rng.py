"""Block-seeded random number generation.

A Monte Carlo computation is a sequence of fixed-size *blocks*; block ``b`` draws from a
generator seeded from ``(seed, b)`` only. Which worker or which batch computes a block never
changes its numbers, so results do not depend on batch size or world size.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["block_seed", "block_seeds", "block_generator", "as_device", "child_generator", "sample_distribution"]


# numpy.random.SeedSequence's hash constants (O'Neill's seed_seq_fe; numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_M32 = 0xFFFFFFFF
_POOL = 4


def _words(v: int) -> list[int]:
    """Little-endian 32-bit words of a non-negative int (0 -> [0]), as SeedSequence coerces it."""
    out = []
    while True:
        out.append(v & _M32)
        v >>= 32
        if not v:
            return out


@functools.lru_cache(maxsize=256)
def _seed_prefix(seed: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Pool after mixing the seed's words, the seed words left over, and the hash constant then.

    SeedSequence(seed, spawn_key=(block, stream)) mixes the first four entropy words into its pool,
    then every further word into every pool word. The seed's part is the same for all blocks, so
    :func:`block_seeds` computes it once and vectorises the rest over blocks.
    """
    ent = _words(seed)
    if len(ent) < _POOL:
        ent = ent + [0] * (_POOL - len(ent))  # a spawn key pads the run entropy to the pool size
    h = _INIT_A
    pool = []
    for i in range(_POOL):
        v = ent[i] ^ h
        h = (h * _MULT_A) & _M32
        v = (v * h) & _M32
        pool.append(v ^ (v >> 16))
    for s in range(_POOL):
        for d in range(_POOL):
            if s != d:
                v = pool[s] ^ h
                h = (h * _MULT_A) & _M32
                v = (v * h) & _M32
                v ^= v >> 16
                r = (_MIX_L * pool[d] - _MIX_R * v) & _M32
                pool[d] = r ^ (r >> 16)
    return tuple(pool), tuple(ent[_POOL:]), h


def _scalar_seed(seed: int, block: int, stream: int) -> int:
    """:func:`block_seeds` for one block in plain Python ints (faster than numpy for a few blocks)."""
    pool0, rest, h = _seed_prefix(seed)
    pool = list(pool0)
    for word in (*rest, *_words(block), *_words(stream)):
        for d in range(_POOL):
            v = word ^ h
            h = (h * _MULT_A) & _M32
            v = (v * h) & _M32
            v ^= v >> 16
            r = (_MIX_L * pool[d] - _MIX_R * v) & _M32
            pool[d] = r ^ (r >> 16)
    hb, state = _INIT_B, []
    for i in range(2):
        v = pool[i] ^ hb
        hb = (hb * _MULT_B) & _M32
        v = (v * hb) & _M32
        state.append(v ^ (v >> 16))
    return ((state[0] << 31) ^ state[1]) & ((1 << 63) - 1)


def block_seeds(seed: int, blocks, stream: int = 0) -> np.ndarray:
    """Vectorised :func:`block_seed`: the seeds of many blocks at once (uint64 array).

    Bitwise equal to ``numpy.random.SeedSequence(seed, spawn_key=(block, stream))`` for every
    block (tested), but computed with a few numpy operations for the whole array instead of one
    SeedSequence object per block (about 50 µs each).
    """
    _check_seed(seed)
    b = np.asarray(blocks, dtype=np.int64).reshape(-1)
    if b.size and int(b.min()) < 0:
        raise ValueError(f"block must be non-negative, got {int(b.min())}")
    if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) or stream < 0:
        raise ValueError(f"stream must be a non-negative int, got {stream!r}")
    out = np.empty(b.size, dtype=np.uint64)
    big = b >= 2**32
    if b.size <= 16:
        big[:] = True
    for i in np.flatnonzero(big):  # few blocks, or a two-word block index: one at a time
        out[i] = _scalar_seed(int(seed), int(b[i]), int(stream))
    small = ~big
    if small.any():
        pool0, rest, h = _seed_prefix(int(seed))
        words = [np.uint32(w) for w in rest]
        with np.errstate(over="ignore"):
            pool = [np.full(int(small.sum()), p, dtype=np.uint32) for p in pool0]
            tail = [np.full(pool[0].shape, w, dtype=np.uint32) for w in words]
            tail.append(b[small].astype(np.uint32))
            tail += [np.full(pool[0].shape, w, dtype=np.uint32) for w in _words(int(stream))]
            hc = np.uint32(h)
            for word in tail:
                for d in range(_POOL):
                    v = word ^ hc
                    hc = np.uint32((int(hc) * _MULT_A) & _M32)
                    v = v * hc
                    v ^= v >> np.uint32(16)
                    r = np.uint32(_MIX_L) * pool[d] - np.uint32(_MIX_R) * v
                    pool[d] = r ^ (r >> np.uint32(16))
            hb = _INIT_B
            state = []
            for i in range(2):
                v = pool[i] ^ np.uint32(hb)
                hb = (hb * _MULT_B) & _M32
                v = v * np.uint32(hb)
                state.append(v ^ (v >> np.uint32(16)))
        s0, s1 = state[0].astype(np.uint64), state[1].astype(np.uint64)
        out[small] = ((s0 << np.uint64(31)) ^ s1) & np.uint64((1 << 63) - 1)
    return out


def _check_seed(seed) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


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
        A seed in ``[0, 2**63)``: the first two 32-bit words of
        ``SeedSequence(seed, spawn_key=(block, stream)).generate_state`` combined.
    """
    _check_seed(seed)
    if block < 0:
        raise ValueError(f"block must be non-negative, got {block}")
    if stream < 0:
        raise ValueError(f"stream must be non-negative, got {stream}")
    return _scalar_seed(int(seed), int(block), int(stream))


def as_device(device: str | torch.device | None) -> torch.device:
    """Normalise a device argument (``None`` means CPU); a CUDA device must exist here."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device must be a valid torch device, got {device!r}") from exc
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available on this machine (use 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


def block_generator(
    seed: int, block: int, device: str | torch.device | None = None, stream: int = 0
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, block, stream)``.

    CPU and CUDA generators give different streams for the same seed; results are reproducible
    per device type.
    """
    return seeded_generator(block_seed(seed, block, stream), as_device(device))


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (a torch.device) seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
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
