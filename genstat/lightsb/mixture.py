"""Batches of Gaussian mixtures (one mixture per conditioning point), with exact moments."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GaussianMixture"]


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (the global RNG is never used), "
                        f"got {type(generator).__name__}")


class GaussianMixture:
    """A batch of ``n`` Gaussian mixtures with ``K`` components in ``R^d``.

    Mixture ``i`` is ``sum_k weights[i, k] N(means[i, k], covariances[i, k])``. Components that
    share their covariance across the batch (as in LightSB, where ``Cov = eps S_k``) are stored
    once as ``(K, d, d)`` and only expanded (a view, no copy) when :attr:`covariances` is read.

    Parameters
    ----------
    log_weights : Tensor, shape (n, K)
        Unnormalised log-weights (normalised here by log-sum-exp).
    means : Tensor, shape (n, K, d)
    covariances : Tensor, shape (K, d, d) or (n, K, d, d)
        Symmetric positive definite.

    Examples
    --------
    >>> import torch
    >>> gm = GaussianMixture(torch.zeros(1, 2), torch.tensor([[[-1.0], [1.0]]]), torch.ones(2, 1, 1))
    >>> gm.mean().tolist(), gm.covariance().tolist()
    ([[0.0]], [[[2.0]]])
    """

    __slots__ = ("log_weights", "means", "_cov", "_tril")

    def __init__(self, log_weights: Tensor, means: Tensor, covariances: Tensor):
        if log_weights.dim() != 2:
            raise ValueError(f"log_weights must have shape (n, K), got {tuple(log_weights.shape)}")
        n, k = log_weights.shape
        if means.dim() != 3 or means.shape[:2] != (n, k):
            raise ValueError(f"means must have shape ({n}, {k}, d), got {tuple(means.shape)}")
        d = means.shape[-1]
        if covariances.shape not in ((k, d, d), (n, k, d, d)):
            raise ValueError(f"covariances must have shape ({k}, {d}, {d}) or ({n}, {k}, {d}, {d}), "
                             f"got {tuple(covariances.shape)}")
        self.log_weights = log_weights - torch.logsumexp(log_weights, dim=1, keepdim=True)
        self.means = means
        self._cov = covariances
        self._tril: Tensor | None = None

    # -- shapes
    @property
    def n(self) -> int:
        return self.means.shape[0]

    @property
    def n_components(self) -> int:
        return self.means.shape[1]

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    @property
    def weights(self) -> Tensor:
        """Normalised weights, shape (n, K)."""
        return self.log_weights.exp()

    @property
    def covariances(self) -> Tensor:
        """Component covariances, shape (n, K, d, d) (an expanded view when shared)."""
        if self._cov.dim() == 3:
            return self._cov.expand(self.n, *self._cov.shape)
        return self._cov

    # -- exact moments
    def mean(self) -> Tensor:
        """Exact mixture mean ``sum_k w_k mu_k``, shape (n, d)."""
        return torch.einsum("nk,nkd->nd", self.weights, self.means)

    def covariance(self) -> Tensor:
        """Exact mixture covariance ``sum_k w_k (Sigma_k + (mu_k - mu)(mu_k - mu)^T)``, shape (n, d, d)."""
        w = self.weights
        centred = self.means - self.mean().unsqueeze(1)
        between = torch.einsum("nk,nki,nkj->nij", w, centred, centred)
        if self._cov.dim() == 3:
            within = torch.einsum("nk,kij->nij", w, self._cov)
        else:
            within = torch.einsum("nk,nkij->nij", w, self._cov)
        out = within + between
        return 0.5 * (out + out.mT)

    # -- sampling and density
    def _scale_tril(self) -> Tensor:
        if self._tril is None:
            self._tril = torch.linalg.cholesky(self._cov)
        return self._tril

    def sample(self, n_per_x: int = 1, *, generator: torch.Generator) -> Tensor:
        """Draw ``n_per_x`` samples from each mixture.

        Parameters
        ----------
        n_per_x : int
            Samples per mixture.
        generator : torch.Generator
            Source of randomness (on the tensors' device); required, so the global RNG is never used.

        Returns
        -------
        Tensor, shape (n, n_per_x, d)
        """
        if not isinstance(n_per_x, int) or n_per_x < 1:
            raise ValueError(f"n_per_x must be a positive int, got {n_per_x!r}")
        _check_generator(generator)
        n, k, d = self.means.shape
        idx = torch.multinomial(self.weights, n_per_x, replacement=True, generator=generator)  # (n, m)
        z = torch.randn(n, n_per_x, d, generator=generator, dtype=self.means.dtype, device=self.means.device)
        mu = torch.gather(self.means, 1, idx.unsqueeze(-1).expand(n, n_per_x, d))
        tril = self._scale_tril()
        out = mu.clone()
        for j in range(k):
            mask = idx == j
            if not bool(mask.any()):
                continue
            if tril.dim() == 3:
                out[mask] += z[mask] @ tril[j].mT
            else:
                rows = mask.nonzero(as_tuple=True)[0]
                out[mask] += torch.einsum("mij,mj->mi", tril[rows, j], z[mask])
        return out

    def log_prob(self, y: Tensor) -> Tensor:
        """Log-density of ``y`` (shape (n, d) or (m, n, d)) under each mixture; shape (n,) or (m, n)."""
        if y.shape[-2:] != (self.n, self.dim):
            raise ValueError(f"y must have shape (..., {self.n}, {self.dim}), got {tuple(y.shape)}")
        tril = self._scale_tril()
        if tril.dim() == 3:
            tril = tril.expand(self.n, *tril.shape)
        diff = y.unsqueeze(-2) - self.means  # (..., n, K, d)
        sol = torch.linalg.solve_triangular(tril, diff.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
        comp = -0.5 * (sol**2).sum(-1) - logdet - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.logsumexp(self.log_weights + comp, dim=-1)
