"""Seeded 2-D toy samplers and Gaussian mixtures with exact log-density (issue: interpolants).

Every sampler has the engine's signature ``sampler(n, generator, device)`` (plus keyword options) and
draws only from the explicit ``generator``. The shapes follow the conventions of the flow-matching
literature (torchcfm's ``sample_8gaussians`` / ``sample_moons``) so that W2 numbers are comparable:
8 gaussians on a circle of radius 5 with per-coordinate variance ``sqrt(0.1)``, torchdyn's moons
(noise 0.2) mapped by ``3 x - 1``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

__all__ = [
    "GaussianMixture",
    "MOONS_STYLES",
    "TOY2D_NAMES",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "eight_gaussians_mixture",
    "moons",
    "spirals",
    "toy2d_sampler",
]


def _start(n: int, generator: torch.Generator | None) -> tuple[torch.Generator, torch.device]:
    """Check a sampler's ``n`` and ``generator``; return the generator and its device (where samples go)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator, generator.device


class GaussianMixture:
    """A finite Gaussian mixture ``sum_k w_k N(m_k, C_k)`` with exact log-density and seeded sampling.

    Parameters
    ----------
    weights : Tensor, shape (K,)
        Non-negative mixture weights (normalised internally).
    means : Tensor, shape (K, d)
    covariances : Tensor, shape (K, d, d), (K, d) (diagonal) or (K,) (isotropic)
        Positive definite component covariances.

    Examples
    --------
    >>> import torch
    >>> gm = GaussianMixture(torch.ones(2), torch.tensor([[0., 0.], [3., 0.]]), torch.ones(2))
    >>> x = gm.sample(5, torch.Generator().manual_seed(0))
    >>> gm.log_prob(x).shape
    torch.Size([5])
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor):
        means = torch.as_tensor(means)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(weights.shape)}")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        cov = torch.as_tensor(covariances, dtype=means.dtype, device=means.device)
        eye = torch.eye(d, dtype=means.dtype, device=means.device)
        if cov.shape == (k,):
            cov = cov[:, None, None] * eye
        elif cov.shape == (k, d):
            cov = torch.diag_embed(cov)
        elif cov.shape != (k, d, d):
            raise ValueError(f"covariances must have shape ({k}, {d}, {d}), ({k}, {d}) or ({k},), "
                             f"got {tuple(cov.shape)}")
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError("covariances must be positive definite")
        self.weights = weights / weights.sum()
        self.means = means
        self.covariances = cov
        self._chol = chol

    @property
    def dim(self) -> int:
        """Dimension d."""
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self.means.shape[0]

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "GaussianMixture":
        """A copy with parameters converted to ``dtype`` / ``device``."""
        return GaussianMixture(self.weights.to(dtype=dtype, device=device), self.means.to(dtype=dtype, device=device),
                               self.covariances.to(dtype=dtype, device=device))

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean, shape (d,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> torch.Tensor:
        """Mixture covariance (law of total covariance), shape (d, d)."""
        m = self.mean
        dm = self.means - m
        within = torch.einsum("k,kij->ij", self.weights, self.covariances)
        return within + torch.einsum("k,ki,kj->ij", self.weights, dm, dm)

    def noised(self, alpha: float = 1.0, noise_sd: float = 0.0) -> "GaussianMixture":
        """The law of ``alpha X + noise_sd eps`` (``X`` this mixture, ``eps ~ N(0, I)``): again a mixture,
        with means ``alpha m_k`` and covariances ``alpha^2 C_k + noise_sd^2 I`` (the marginal ``p_t`` of a VE
        or VP diffusion started from this mixture).

        Examples
        --------
        >>> import torch
        >>> gm = GaussianMixture(torch.ones(1), torch.ones(1, 2), torch.ones(1))
        >>> gm.noised(0.5, 2.0).covariance.diagonal().tolist()
        [4.25, 4.25]
        """
        if not (math.isfinite(alpha) and math.isfinite(noise_sd)) or noise_sd < 0 or (alpha == 0 and noise_sd == 0):
            raise ValueError(f"need finite alpha and noise_sd >= 0, not both 0, got alpha={alpha}, noise_sd={noise_sd}")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture(self.weights, alpha * self.means, alpha**2 * self.covariances + noise_sd**2 * eye)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; m_k, C_k)``, shape (n, K)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        x = x.to(self.means.dtype)
        diff = x[:, None, :] - self.means[None]  # (n, K, d)
        sol = torch.linalg.solve_triangular(self._chol[None].expand(x.shape[0], -1, -1, -1), diff[..., None],
                                            upper=False)[..., 0]
        maha = (sol**2).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights) - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, shape (n,) (logsumexp over components).

        Examples
        --------
        >>> import torch
        >>> gm = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.ones(1))
        >>> round(float(gm.log_prob(torch.zeros(1, 2))), 4)
        -1.8379
        """
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact score ``grad log p(x)``, shape (n, d)."""
        resp = torch.softmax(self.component_log_prob(x), dim=1)  # (n, K)
        prec_diff = torch.cholesky_solve((self.means[None] - x[:, None, :].to(self.means.dtype))[..., None],
                                         self._chol[None])[..., 0]
        return (resp[..., None] * prec_diff).sum(1)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> torch.Tensor:
        """Draw ``n`` samples using only ``generator``; shape (n, d).

        The samples are produced on the generator's device (``device`` is accepted for the engine's
        sampler signature and not used: callers move the result, e.g. ``fit`` draws with a CPU
        generator for a CUDA model).
        """
        gen, dev = _start(n, generator)
        comp = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=gen) if n else \
            torch.zeros(0, dtype=torch.long, device=dev)
        eps = torch.randn(n, self.dim, generator=gen, device=dev, dtype=self.means.dtype)
        chol = self._chol.to(dev)[comp]
        return self.means.to(dev)[comp] + (chol @ eps[..., None])[..., 0]

    __call__ = sample


_EIGHT_CENTRES = [(1, 0), (-1, 0), (0, 1), (0, -1), (1 / math.sqrt(2), 1 / math.sqrt(2)),
                  (1 / math.sqrt(2), -1 / math.sqrt(2)), (-1 / math.sqrt(2), 1 / math.sqrt(2)),
                  (-1 / math.sqrt(2), -1 / math.sqrt(2))]


def eight_gaussians_mixture(radius: float = 5.0, variance: float = math.sqrt(0.1),
                            dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """The 8-gaussians distribution as a :class:`GaussianMixture` (exact log-density).

    Equal weights, centres ``radius * (cos k pi/4, sin k pi/4)``, isotropic component covariance
    ``variance * I`` (default ``sqrt(0.1)``, the value torchcfm's ``sample_8gaussians`` uses).

    Examples
    --------
    >>> eight_gaussians_mixture().n_components
    8
    """
    means = torch.tensor(_EIGHT_CENTRES, dtype=dtype) * radius
    return GaussianMixture(torch.ones(8, dtype=dtype), means, torch.full((8,), float(variance), dtype=dtype))


def eight_gaussians(n: int, generator: torch.Generator, device=None, *, dtype: torch.dtype = torch.float32,
                    radius: float = 5.0, variance: float = math.sqrt(0.1)) -> torch.Tensor:
    """``n`` samples of 8 gaussians on a circle (see :func:`eight_gaussians_mixture`), shape (n, 2).

    Examples
    --------
    >>> import torch
    >>> eight_gaussians(4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """
    return _cached_eight_gaussians_mixture(float(radius), float(variance), dtype).sample(n, generator)


# the sampler is called once per training step: build (validate, factorise) each mixture once, not per call
_cached_eight_gaussians_mixture = functools.lru_cache(maxsize=16)(eight_gaussians_mixture)


MOONS_STYLES = ("torchdyn", "sklearn", "iid")


def moons(n: int, generator: torch.Generator, device=None, *, dtype: torch.dtype = torch.float32,
          noise: float = 0.2, scale: float = 3.0, shift: float = -1.0, style: str = "torchdyn") -> torch.Tensor:
    """Two interleaved half circles, mapped by ``scale * x + shift``; shape (n, 2), rows shuffled.

    ``style``:

    - ``"torchdyn"`` (default, the moons of torchcfm's ``sample_moons`` = torchdyn's
      ``generate_moons``): ``n // 2`` outer and ``n - n // 2`` inner points at evenly spaced angles,
      each point shifted by ``u (1, 1)`` with ``u ~ U[0, noise)``. The W2 noise floor of REFERENCE.md
      (0.076 at n = 2000) refers to this layout.
    - ``"sklearn"``: the same evenly spaced angles with isotropic Gaussian noise of sd ``noise``
      (``sklearn.datasets.make_moons``).
    - ``"iid"``: i.i.d. uniform angles and moon labels, Gaussian noise.

    Examples
    --------
    >>> import torch
    >>> moons(4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """
    gen, dev = _start(n, generator)
    if style not in MOONS_STYLES:
        raise ValueError(f"style must be one of {MOONS_STYLES}, got {style!r}")
    n_out = n // 2
    if style == "iid":
        theta = math.pi * torch.rand(n, generator=gen, device=dev, dtype=dtype)
        upper = torch.rand(n, generator=gen, device=dev) < 0.5
    else:
        theta = torch.cat([torch.linspace(0, math.pi, n_out, dtype=dtype, device=dev),
                           torch.linspace(0, math.pi, n - n_out, dtype=dtype, device=dev)])
        upper = torch.arange(n, device=dev) < n_out
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x, y], 1)
    if style == "torchdyn":
        pts = pts + noise * torch.rand(n, 1, generator=gen, device=dev, dtype=dtype)
    else:
        pts = pts + noise * torch.randn(n, 2, generator=gen, device=dev, dtype=dtype)
    pts = pts[torch.randperm(n, generator=gen, device=dev)]
    return scale * pts + shift


def checkerboard(n: int, generator: torch.Generator, device=None, *, dtype: torch.dtype = torch.float32,
                 scale: float = 1.0) -> torch.Tensor:
    """Uniform on the 8 black squares of a 4x4 checkerboard on ``[-4, 4]^2`` (times ``scale``); (n, 2).

    Examples
    --------
    >>> import torch
    >>> checkerboard(4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """
    gen, dev = _start(n, generator)
    x1 = torch.rand(n, generator=gen, device=dev, dtype=dtype) * 4 - 2
    x2_ = torch.rand(n, generator=gen, device=dev, dtype=dtype) - 2 * torch.randint(
        0, 2, (n,), generator=gen, device=dev).to(dtype)
    x2 = x2_ + (torch.floor(x1) % 2)
    return scale * 2 * torch.stack([x1, x2], 1)


def circles(n: int, generator: torch.Generator, device=None, *, dtype: torch.dtype = torch.float32,
            radii: tuple[float, float] = (1.0, 2.0), noise: float = 0.05, scale: float = 2.0) -> torch.Tensor:
    """Two concentric circles (equal probability) with radial Gaussian noise, times ``scale``; (n, 2).

    Examples
    --------
    >>> import torch
    >>> circles(4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """
    gen, dev = _start(n, generator)
    theta = 2 * math.pi * torch.rand(n, generator=gen, device=dev, dtype=dtype)
    which = torch.randint(0, 2, (n,), generator=gen, device=dev)
    r = torch.tensor(radii, dtype=dtype, device=dev)[which]
    r = r + noise * torch.randn(n, generator=gen, device=dev, dtype=dtype)
    return scale * torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)


def spirals(n: int, generator: torch.Generator, device=None, *, dtype: torch.dtype = torch.float32,
            noise: float = 0.1, turns: float = 1.5) -> torch.Tensor:
    """Two interleaved Archimedean spirals with Gaussian noise, in about ``[-4, 4]^2``; (n, 2).

    Examples
    --------
    >>> import torch
    >>> spirals(4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """
    gen, dev = _start(n, generator)
    u = torch.sqrt(torch.rand(n, generator=gen, device=dev, dtype=dtype))  # uniform along the arm
    theta = 2 * math.pi * turns * u
    arm = torch.randint(0, 2, (n,), generator=gen, device=dev).to(dtype) * math.pi
    r = 4.0 * u
    pts = torch.stack([r * torch.cos(theta + arm), r * torch.sin(theta + arm)], 1)
    return pts + noise * torch.randn(n, 2, generator=gen, device=dev, dtype=dtype)


TOY2D_NAMES = ("8gaussians", "moons", "checkerboard", "circles", "spirals", "gaussian")

_TOY: dict[str, Callable] = {"8gaussians": eight_gaussians, "moons": moons, "checkerboard": checkerboard,
                             "circles": circles, "spirals": spirals}


def toy2d_sampler(name: str, **kwargs) -> Callable[..., torch.Tensor]:
    """The sampler ``(n, generator, device=None) -> (n, 2)`` called ``name``.

    ``name`` is one of :data:`TOY2D_NAMES`; ``"gaussian"`` is the standard normal N(0, I_2).
    Keyword arguments are passed to the sampler (e.g. ``dtype``).

    Examples
    --------
    >>> import torch
    >>> s = toy2d_sampler("moons")
    >>> s(3, torch.Generator().manual_seed(1)).shape
    torch.Size([3, 2])
    """
    if name == "gaussian":
        dtype = kwargs.get("dtype", torch.float32)

        def gaussian(n: int, generator: torch.Generator, device=None) -> torch.Tensor:
            gen, dev = _start(n, generator)
            return torch.randn(n, 2, generator=gen, device=dev, dtype=dtype)

        return gaussian
    if name not in _TOY:
        raise ValueError(f"name must be one of {TOY2D_NAMES}, got {name!r}")
    fn = _TOY[name]
    return lambda n, generator, device=None: fn(n, generator, device, **kwargs)
