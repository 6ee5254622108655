"""Entropic OT benchmark pairs with a known conditional plan (Gushchin et al., NeurIPS 2023).

The pairs are rebuilt offline from the construction's formulas and a seed (the published files are
not reachable): ``P0`` is a Gaussian mixture, the potential ``f(y) = sum_k q_k N(y | m_k, Lambda_k)``
and the optimal plan is

``pi*(y | x) = sum_k w_k(x) N(y | Lt_k (Lambda_k^-1 m_k + x / eps), Lt_k)``,
``Lt_k = (I / eps + Lambda_k^-1)^-1``, ``w_k(x) ∝ q_k N(x | m_k, Lambda_k + eps I)``;
``P1`` is the law of ``y``. Two ways of drawing the parameters (``construction=``):

- ``"genstat"``: this project's own choice (rotated covariances, means on spheres, one potential
  for every eps), documented in docs/lightsb.md.
- ``"authors"``: a reconstruction of the authors' published construction, after the only
  construction code in the benchmark repository's history (``notebooks/GaussianMixtureDraft.ipynb``
  of ngushchin/EntropicOTBenchmark, commit 438dcb9): isotropic covariances, grid-point means,
  uniform random weights, a separate potential per ``(d, eps)``. The draft has no seed, so the
  released files cannot be regenerated: the pairs share the authors' distribution of parameters,
  not their draws.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from genstat.mc import block_generator, estimate

from .mixture import GaussianMixture, _check_generator
from .model import LightSB, _check_epsilon
from .oracle import _random_spd

__all__ = ["AUTHORS_POTENTIAL_SCALE", "EOTBenchmark", "authors_potential_scale"]

#: ``p(eps, d)`` of the authors' draft notebook (its ``params`` table): the potential components
#: have standard deviation ``0.5 p(eps, d)`` in every coordinate.
AUTHORS_POTENTIAL_SCALE: dict[float, dict[int, float]] = {
    0.1: {2: 0.5, 4: 0.5, 8: 1.0, 16: 1.0, 32: 4.0, 64: 8.0, 128: 8.0},
    1.0: {2: 0.5, 4: 0.5, 8: 1.0, 16: 1.0, 32: 2.0, 64: 2.0, 128: 2.0},
    10.0: {2: 0.5, 4: 0.5, 8: 1.0, 16: 1.0, 32: 2.0, 64: 2.0, 128: 2.0},
}


def _nearest_in_log(value: float, keys) -> float:
    # ties go to the larger key (the table's scale grows with d and shrinks with eps)
    return min(sorted(keys, reverse=True), key=lambda k: abs(math.log(value) - math.log(k)))


def authors_potential_scale(epsilon: float, dim: int) -> float:
    """``p(eps, d)``: the potential components of ``construction="authors"`` have covariance ``(0.5 p)^2 I``.

    Exact on the draft notebook's grid (``eps`` in {0.1, 1, 10}, ``d`` in {2, 4, ..., 128}); off the
    grid the entry of the nearest tabulated ``eps`` and then ``d`` on a log scale (ties to the larger
    value), a choice of this reconstruction, not the authors'.

    Examples
    --------
    >>> authors_potential_scale(0.1, 64), authors_potential_scale(1.0, 16), authors_potential_scale(1.0, 1)
    (8.0, 1.0, 0.5)
    """
    eps = _check_epsilon(epsilon)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    table = AUTHORS_POTENTIAL_SCALE[_nearest_in_log(eps, AUTHORS_POTENTIAL_SCALE)]
    return table[int(_nearest_in_log(float(dim), table))]


def _grid_means(n: int, dim: int, spacing: float, gen: torch.Generator) -> Tensor:
    """``(n, dim)`` means whose every coordinate is a random permutation of the centred grid ``spacing * {0..n-1}``."""
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(dim)], dim=1)
    return spacing * (perms.to(torch.float64) - (n - 1) / 2)


def _eps_stream(eps: float) -> int:
    """An RNG stream key for ``eps`` (its float64 bit pattern): one potential per ``(seed, d, eps)``."""
    return int(np.float64(eps).view(np.uint64))


class EOTBenchmark:
    """A reproducible EOT pair with an exact conditional plan.

    Parameters
    ----------
    dim : int
    epsilon : float
    n_input_components : int
        Components of the Gaussian-mixture input ``P0``. ``"genstat"``: means on a sphere of
        radius 2, covariances with spectrum in [0.25, 1], equal weights. ``"authors"``: every
        coordinate of the means a random permutation of ``{-2, 0, 2}`` (spacing 2, centred),
        covariances ``0.25 I``, uniform random weights.
    n_potential_components : int
        Components of the potential ``f``. ``"genstat"``: means on a sphere of radius 3,
        ``Lambda_k`` with spectrum in [0.25, 2], exponential weights. ``"authors"``: every
        coordinate of the means a random permutation of ``{-2, -1, 0, 1, 2}`` (spacing 1,
        centred), ``Lambda_k = (0.5 p(eps, d))^2 I`` (:func:`authors_potential_scale`), uniform
        random weights.
    seed : int
        ``"genstat"``: every parameter is a function of ``(seed, dim)``, one pair serves every eps.
        ``"authors"``: ``P0`` is a function of ``(seed, dim)`` and the potential of
        ``(seed, dim, eps)`` (as in the authors' construction, one ``P0`` per ``d``).
    construction : {"genstat", "authors"}
        How the parameters are drawn (module docstring). ``"authors"`` is a reconstruction: same
        distribution of parameters as the authors' draft, not the released draws.
    dtype : torch.dtype
        Of the samples (the stored parameters are float64).

    References
    ----------
    N. Gushchin, A. Kolesov, P. Mokrov, et al., "Building the Bridge of Schroedinger: A Continuous
    Entropic Optimal Transport Benchmark", NeurIPS 2023 (construction: Section 3; the parameters of
    ``"authors"`` from notebooks/GaussianMixtureDraft.ipynb of ngushchin/EntropicOTBenchmark).

    Examples
    --------
    >>> from genstat.mc import block_generator
    >>> bm = EOTBenchmark(2, 0.1, seed=0)
    >>> g = block_generator(0, 0)
    >>> bm.sample_source(5, g).shape, bm.sample_target(5, g).shape
    (torch.Size([5, 2]), torch.Size([5, 2]))
    >>> EOTBenchmark(2, 0.1, construction="authors").potential_covariances[0].diagonal().tolist()
    [0.0625, 0.0625]
    """

    def __init__(self, dim: int, epsilon: float, *, n_input_components: int = 3,
                 n_potential_components: int = 5, seed: int = 0,
                 construction: Literal["genstat", "authors"] = "genstat", dtype: torch.dtype = torch.float64):
        for name, v in (("dim", dim), ("n_input_components", n_input_components),
                        ("n_potential_components", n_potential_components)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if construction not in ("genstat", "authors"):
            raise ValueError(f"construction must be 'genstat' or 'authors', got {construction!r}")
        self.dim, self.epsilon, self.seed = dim, _check_epsilon(epsilon), seed
        self.construction = construction
        self.dtype = dtype
        if construction == "genstat":
            self._draw_genstat(n_input_components, n_potential_components)
        else:
            self._draw_authors(n_input_components, n_potential_components)
        eye = torch.eye(dim, dtype=torch.float64)
        lam_inv = torch.linalg.inv(self.potential_covariances)
        self.plan_covariances = torch.linalg.inv(eye / self.epsilon + lam_inv)  # Lt_k
        self._plan_shift = (self.plan_covariances @ (lam_inv @ self.potential_means.unsqueeze(-1))).squeeze(-1)
        smooth = self.potential_covariances + self.epsilon * eye
        self._smooth_tril = torch.linalg.cholesky(smooth)
        self._target_variance: float | None = None

    def _draw_genstat(self, k0: int, k1: int) -> None:
        dim = self.dim
        gen = block_generator(self.seed, dim, stream=7)  # parameters depend on (seed, dim), not on eps

        def sphere(n: int, radius: float) -> Tensor:
            v = torch.randn(n, dim, generator=gen, dtype=torch.float64)
            return radius * v / v.norm(dim=1, keepdim=True)

        self.input_weights = torch.full((k0,), 1.0 / k0, dtype=torch.float64)
        self.input_means = sphere(k0, 2.0)
        self.input_covariances = _random_spd(dim, k0, 0.25, 1.0, gen)
        q = -torch.log(torch.rand(k1, generator=gen, dtype=torch.float64))
        self.potential_weights = q / q.sum()
        self.potential_means = sphere(k1, 3.0)
        self.potential_covariances = _random_spd(dim, k1, 0.25, 2.0, gen)

    def _draw_authors(self, k0: int, k1: int) -> None:
        # the draft: initialize_gaussians(dim, n_comp=3, dist=2, std=0.5) for P0 once per d, and
        # initialize_gaussians(dim, n_comp=5, dist=1, std=0.5 p(eps, d)) for each (d, eps)
        dim, eye = self.dim, torch.eye(self.dim, dtype=torch.float64)
        gen = block_generator(self.seed, dim, stream=8)
        w = torch.rand(k0, generator=gen, dtype=torch.float64)
        self.input_weights = w / w.sum()
        self.input_means = _grid_means(k0, dim, 2.0, gen)
        self.input_covariances = 0.25 * eye.expand(k0, dim, dim).clone()
        gen = block_generator(self.seed, dim, stream=_eps_stream(self.epsilon))
        q = torch.rand(k1, generator=gen, dtype=torch.float64)
        self.potential_weights = q / q.sum()
        self.potential_means = _grid_means(k1, dim, 1.0, gen)
        std = 0.5 * authors_potential_scale(self.epsilon, dim)
        self.potential_covariances = std**2 * eye.expand(k1, dim, dim).clone()

    # ------------------------------------------------------------------ plan
    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(getattr(x, 'shape', ()))}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite (found NaN or inf)")
        return x.to(torch.float64)

    def conditional(self, x: Tensor) -> GaussianMixture:
        """The exact optimal plan ``pi*(. | x)`` (float64), directly from the construction's formulas."""
        x = self._check_x(x)
        diff = x.unsqueeze(0) - self.potential_means.unsqueeze(1)  # (K, n, d)
        sol = torch.linalg.solve_triangular(self._smooth_tril, diff.mT, upper=False)
        logdet = torch.log(torch.diagonal(self._smooth_tril, dim1=-2, dim2=-1)).sum(-1)
        log_w = (torch.log(self.potential_weights).unsqueeze(1) - logdet.unsqueeze(1)
                 - 0.5 * (sol**2).sum(-2))  # (K, n)
        means = self._plan_shift.unsqueeze(0) + torch.einsum("kij,nj->nki", self.plan_covariances, x) / self.epsilon
        return GaussianMixture(log_w.T, means, self.plan_covariances)

    def as_lightsb(self, dtype: torch.dtype | None = None) -> LightSB:
        """The exact plan written as a full-covariance :class:`LightSB` with ``K = n_potential_components``.

        ``eps S_k = Lt_k``, ``r_k = Lt_k Lambda_k^-1 m_k``,
        ``log alpha_k = log q_k - log det(Lambda_k + eps I) / 2 - m_k^T (Lambda_k + eps I)^-1 m_k / 2``.
        """
        eye = torch.eye(self.dim, dtype=torch.float64)
        smooth = self.potential_covariances + self.epsilon * eye
        m = self.potential_means
        quad = (m.unsqueeze(1) @ torch.linalg.solve(smooth, m.unsqueeze(-1))).reshape(-1)
        log_alpha = torch.log(self.potential_weights) - 0.5 * torch.logdet(smooth) - 0.5 * quad
        model = LightSB(self.dim, m.shape[0], self.epsilon, dtype=dtype or torch.float64)
        return model.set_parameters(log_alpha=log_alpha, r=self._plan_shift, S=self.plan_covariances / self.epsilon)

    # ------------------------------------------------------------------ samplers
    def sample_source(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """``n`` samples of ``P0`` (a sampler ``(n, generator, device)`` usable by genstat.mc).

        ``generator`` is required (the global RNG is never used): successive calls with one generator
        give fresh draws, a generator seeded alike gives the same ones.
        """
        _check_generator(generator)
        p0 = GaussianMixture(self.input_weights.log().unsqueeze(0), self.input_means.unsqueeze(0),
                             self.input_covariances)
        return p0.sample(n, generator=generator)[0].to(dtype=self.dtype, device=device)

    def sample_target(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """``n`` samples of ``P1`` (``x ~ P0``, then ``y ~ pi*(. | x)``)."""
        return self.sample_pairs(n, generator, device)[1]

    def sample_pairs(self, n: int, generator: torch.Generator,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``n`` pairs ``(x, y) ~ pi*`` drawn with ``generator`` (required)."""
        _check_generator(generator)
        x = self.sample_source(n, generator).to(torch.float64)
        # chunks bound the (chunk, K, d) intermediates at large n and d
        y = torch.cat([self.conditional(c).sample(1, generator=generator)[:, 0] for c in torch.split(x, 16384)])
        return x.to(dtype=self.dtype, device=device), y.to(dtype=self.dtype, device=device)

    @property
    def target_variance(self) -> float:
        """``tr Cov(P1)`` by Monte Carlo over ``x`` with exact conditional moments (2^17 draws)."""
        if self._target_variance is None:
            def fn(x: Tensor) -> Tensor:
                gm = self.conditional(x)
                w = gm.weights
                # E[|Y|^2 | x] = sum_k w_k (tr Lt_k + |mu_k|^2)
                second = w @ traces + torch.einsum("nk,nkd->n", w, gm.means**2)
                return torch.cat([second.unsqueeze(1), gm.mean()], dim=1)

            traces = torch.diagonal(self.plan_covariances, dim1=-2, dim2=-1).sum(-1)

            res = estimate(fn, lambda n, g, dev: self.sample_source(n, g).to(torch.float64), 2**17,
                           seed=self.seed, block_size=4096)
            est = res.estimate
            self._target_variance = float(est[0] - (est[1:] ** 2).sum())
        return self._target_variance
