"""Closed-form entropic OT / Schroedinger bridge between two Gaussians (the exact oracle)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from genstat.metrics.gaussian import sqrtm_psd

from genstat.mc import block_generator

from .mixture import GaussianMixture, _check_generator
from .model import LightSB, _check_epsilon

__all__ = ["GaussianEOT", "gaussian_eot", "random_gaussian_eot"]


@dataclass(frozen=True, slots=True)
class GaussianEOT:
    """The entropic OT plan between ``N(a, A)`` and ``N(b, B)`` (cost ``|x - y|^2 / 2``).

    Attributes
    ----------
    a, b : Tensor, shape (d,)
    A, B : Tensor, shape (d, d)
    epsilon : float
    cross_covariance : Tensor, shape (d, d)
        ``C = Cov(X, Y) = (A^1/2 D A^-1/2 - eps I) / 2``, ``D = (4 A^1/2 B A^1/2 + eps^2 I)^1/2``.
    transport_matrix : Tensor, shape (d, d)
        ``C^T A^-1`` (``= Sigma / eps``), so ``E[Y | x] = b + C^T A^-1 (x - a)``.
    conditional_covariance : Tensor, shape (d, d)
        ``Sigma = B - C^T A^-1 C``.
    """

    a: Tensor
    A: Tensor
    b: Tensor
    B: Tensor
    epsilon: float
    cross_covariance: Tensor
    transport_matrix: Tensor
    conditional_covariance: Tensor

    @property
    def dim(self) -> int:
        return self.a.shape[0]

    @property
    def target_variance(self) -> float:
        """``tr B`` (the normaliser of BW-UVP)."""
        return float(torch.trace(self.B))

    def conditional_mean(self, x: Tensor) -> Tensor:
        """``E[Y | X = x] = b + C^T A^-1 (x - a)``; x of shape (n, d)."""
        return self.b + (x - self.a) @ self.transport_matrix.T

    def conditional(self, x: Tensor) -> GaussianMixture:
        """``pi*(. | x)`` as a one-component :class:`GaussianMixture`."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite (found NaN or inf)")
        n = x.shape[0]
        return GaussianMixture(x.new_zeros(n, 1), self.conditional_mean(x).unsqueeze(1),
                               self.conditional_covariance.unsqueeze(0))

    def bridge_marginal(self, t: float) -> tuple[Tensor, Tensor]:
        """Mean and covariance of the SB marginal ``X_t``.

        ``X_t ~ N((1-t) a + t b, (1-t)^2 A + t^2 B + t(1-t)(C + C^T) + eps t (1-t) I)``.
        """
        if not 0 <= t <= 1:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        C = self.cross_covariance
        eye = torch.eye(self.dim, dtype=C.dtype, device=C.device)
        mean = (1 - t) * self.a + t * self.b
        cov = ((1 - t) ** 2 * self.A + t**2 * self.B + t * (1 - t) * (C + C.T)
               + self.epsilon * t * (1 - t) * eye)
        return mean, 0.5 * (cov + cov.T)

    def sample_source(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """``n`` samples of ``P0 = N(a, A)`` drawn with ``generator`` (required: the global RNG is never used)."""
        _check_generator(generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.a.dtype, device=self.a.device)
        return (self.a + z @ torch.linalg.cholesky(self.A).T).to(device=device)

    def sample_target(self, n: int, generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """``n`` samples of ``P1 = N(b, B)`` drawn with ``generator`` (required)."""
        _check_generator(generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.b.dtype, device=self.b.device)
        return (self.b + z @ torch.linalg.cholesky(self.B).T).to(device=device)

    def lightsb_parameters(self) -> tuple[Tensor, Tensor]:
        """``(S, r)`` with ``S = Sigma / eps`` and ``r = b - S a``: the exact LightSB with K = 1."""
        S = self.conditional_covariance / self.epsilon
        return S, self.b - S @ self.a

    def as_lightsb(self) -> LightSB:
        """A full-covariance :class:`LightSB` (K = 1) equal to this plan."""
        S, r = self.lightsb_parameters()
        model = LightSB(self.dim, 1, self.epsilon, dtype=self.a.dtype, device=self.a.device)
        return model.set_parameters(r=r.unsqueeze(0), S=S.unsqueeze(0))


def _check_gaussian(mean: Tensor, cov: Tensor, mname: str, cname: str) -> None:
    for name, v in ((mname, mean), (cname, cov)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} must be finite")
    if mean.dim() != 1:
        raise ValueError(f"{mname} must have shape (d,), got {tuple(mean.shape)}")
    d = mean.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"{cname} must have shape ({d}, {d}), got {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.T, rtol=1e-6, atol=1e-8 * float(cov.abs().max())):
        raise ValueError(f"{cname} must be symmetric")
    evals = torch.linalg.eigvalsh(cov)
    if not bool(evals.min() > 1e-12 * max(float(evals.max()), 1e-300)):
        raise ValueError(f"{cname} must be positive definite (smallest eigenvalue {float(evals.min()):.3g})")


def gaussian_eot(a: Tensor, A: Tensor, b: Tensor, B: Tensor, epsilon: float) -> GaussianEOT:
    """Closed-form entropic OT between ``N(a, A)`` and ``N(b, B)``.

    Solves ``min E|X - Y|^2 / 2 + eps KL(pi || P0 x P1)``, i.e. the Schroedinger bridge with
    reference ``dX = sqrt(eps) dW``.

    Parameters
    ----------
    a, b : Tensor, shape (d,)
    A, B : Tensor, shape (d, d)
        Symmetric positive definite.
    epsilon : float
        Positive regularisation.

    Returns
    -------
    GaussianEOT

    References
    ----------
    H. Janati, B. Muzellec, G. Peyre, M. Cuturi, "Entropic optimal transport between unbalanced
    Gaussian measures has a closed form", NeurIPS 2020; REFERENCE.md section 2.

    Examples
    --------
    >>> import torch
    >>> e = gaussian_eot(torch.zeros(1), torch.eye(1), torch.zeros(1), torch.eye(1), 2.0)
    >>> round(float(e.cross_covariance), 6)  # (sqrt(4 + 4) - 2) / 2
    0.414214
    """
    _check_gaussian(a, A, "a", "A")
    _check_gaussian(b, B, "b", "B")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    eps = _check_epsilon(epsilon)
    A = 0.5 * (A + A.T)
    B = 0.5 * (B + B.T)
    d = a.shape[0]
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    evals, evecs = torch.linalg.eigh(A)
    root = (evecs * evals.sqrt()) @ evecs.T
    inv_root = (evecs / evals.sqrt()) @ evecs.T
    D = sqrtm_psd(4 * root @ B @ root + eps**2 * eye)
    # C = (A^1/2 D A^-1/2 - eps I)/2;  C^T A^-1 = (A^-1/2 D A^-1/2 - eps A^-1)/2 is symmetric
    C = 0.5 * (root @ D @ inv_root - eps * eye)
    T = 0.5 * (inv_root @ D @ inv_root - eps * (evecs / evals) @ evecs.T)
    T = 0.5 * (T + T.T)
    # Sigma = B - C^T A^-1 C = eps T (the EOT identity); compute it as B - T A T for a symmetric form
    sigma = B - T @ A @ T
    sigma = 0.5 * (sigma + sigma.T)
    if not math.isfinite(float(sigma.abs().max())):
        raise ValueError("gaussian_eot produced non-finite values; check the conditioning of A and B")
    return GaussianEOT(a, A, b, B, eps, C, T, sigma)


def _random_spd(d: int, n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    """``n`` SPD matrices ``Q diag(u) Q^T`` with Haar rotations and log-uniform spectrum in [low, high]."""
    z = torch.randn(n, d, d, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    u = torch.exp(math.log(low) + (math.log(high) - math.log(low))
                  * torch.rand(n, d, generator=gen, dtype=torch.float64))
    out = (q * u.unsqueeze(-2)) @ q.mT
    return 0.5 * (out + out.mT)


def random_gaussian_eot(dim: int, epsilon: float, *, seed: int = 0) -> GaussianEOT:
    """The EOT problem between two random rotated Gaussians (float64), a function of ``(seed, dim)``.

    Means are ``N(0, I)``; covariances are ``Q diag(u) Q^T`` with Haar ``Q`` and ``u`` log-uniform in
    ``[0.25, 4]`` (strongly non-diagonal, the case where diagonal ``S`` cannot fit).

    Examples
    --------
    >>> e = random_gaussian_eot(3, 0.5, seed=1)
    >>> e.A.shape, e.epsilon
    (torch.Size([3, 3]), 0.5)
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    gen = block_generator(seed, dim, stream=5)
    a, b = torch.randn(2, dim, generator=gen, dtype=torch.float64)
    A, B = _random_spd(dim, 2, 0.25, 4.0, gen)
    return gaussian_eot(a, A, b, B, epsilon)
