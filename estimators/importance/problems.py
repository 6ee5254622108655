"""Test problems with known answers: Gaussian moments, the cantilever beam, Ishigami, linear-Gaussian.

References
----------
Demange-Chryst, Bachoc & Morio (2023), Sec. 5 (Gaussian moments, cantilever beam);
Ishigami & Homma (1990); Sobol' indices of the Ishigami function, e.g. Saltelli et al. (2008).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.stats import qmc

from genstat.mc import sample_distribution

__all__ = [
    "Problem",
    "gaussian_moments",
    "CantileverInputs",
    "cantilever_beam",
    "cantilever_deflection",
    "ishigami",
    "ishigami_indices",
    "linear_gaussian",
]

D = torch.distributions


@dataclass(frozen=True, slots=True)
class Problem:
    """A many-expectation problem: integrands, inputs, and (when known) exact values."""

    phis: Callable[[torch.Tensor], torch.Tensor]
    inputs: object
    truth: torch.Tensor | None
    weights: torch.Tensor
    names: tuple[str, ...]


def gaussian_moments(J: int = 10, dtype: torch.dtype = torch.float64) -> Problem:
    """I_j = E[X^{2j}] = (2j-1)!!, X ~ N(0, 1), j = 1..J, with weights 1/I_j^2 (paper Sec. 5.1).

    Examples
    --------
    >>> p = gaussian_moments(3)
    >>> p.truth.tolist()
    [1.0, 3.0, 15.0]
    """
    if not isinstance(J, int) or J < 1:
        raise ValueError(f"J must be a positive int, got {J!r}")
    powers = 2 * torch.arange(1, J + 1, dtype=dtype)
    truth = torch.tensor([float(math.prod(range(1, 2 * j, 2))) for j in range(1, J + 1)], dtype=torch.float64)
    f = D.Normal(torch.tensor(0.0, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    return Problem(lambda x: x**powers, f, truth, 1.0 / truth**2, tuple(f"E[X^{2 * j}]" for j in range(1, J + 1)))


def cantilever_deflection(x: torch.Tensor) -> torch.Tensor:
    """Tip deflection of a cantilever beam, x = (F_X [N], F_Y [N], E [GPa], w [m], t [m], L [m]):

    D = 4 L^3 / (E w t) * sqrt((F_X / w^2)^2 + (F_Y / t^2)^2)

    (absolute values of E, w, t, L are used so a proposal's rare non-physical draw stays >= 0;
    there the input density is 0 or negligible).
    """
    fx, fy, e, w, t, L = x.unbind(-1)
    w, t = w.abs(), t.abs()
    return 4 * L.abs() ** 3 / (1e9 * e.abs() * w * t) * torch.sqrt((fx / w**2) ** 2 + (fy / t**2) ** 2)


class CantileverInputs(D.Distribution):
    """J input distributions of the cantilever beam (batch_shape (J,), event_shape (6,)).

    F_X, F_Y, E are independent log-normals with means ``delta[:, :3]`` and coefficients of variation
    (0.08, 0.08, 0.06); (w, t, L) are jointly Gaussian with means ``delta[:, 3:6]``, standard
    deviations 10% of the means and correlations ``rho(w,t), rho(w,L), rho(t,L) = delta[:, 6:9]``
    (a Gaussian copula with Gaussian marginals), independent of the loads and of E.
    """

    arg_constraints = {}
    support = D.constraints.real_vector
    has_rsample = False

    def __init__(self, delta: torch.Tensor, validate_args: bool | None = False):
        delta = torch.as_tensor(delta, dtype=torch.float64)
        if delta.ndim != 2 or delta.shape[1] != 9:
            raise ValueError(f"delta must have shape (J, 9), got {tuple(delta.shape)}")
        self.delta = delta
        cv = torch.tensor([0.08, 0.08, 0.06], dtype=torch.float64)
        s2 = torch.log1p(cv**2)
        self.log_loc = torch.log(delta[:, :3]) - 0.5 * s2
        self.log_scale = s2.sqrt().expand(delta.shape[0], 3)
        sd = 0.1 * delta[:, 3:6]
        J = delta.shape[0]
        corr = torch.eye(3, dtype=torch.float64).repeat(J, 1, 1)
        for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
            corr[:, a, b] = corr[:, b, a] = delta[:, 6 + k]
        cov = corr * sd[:, :, None] * sd[:, None, :]
        self.gauss = D.MultivariateNormal(delta[:, 3:6], covariance_matrix=cov)
        super().__init__(torch.Size([J]), torch.Size([6]), validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([self.delta[:, :3], self.delta[:, 3:6]], -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        pos = x[..., :3] > 0
        lx = torch.log(torch.where(pos, x[..., :3], torch.ones_like(x[..., :3])))
        z = (lx - self.log_loc) / self.log_scale
        lp = -0.5 * z**2 - torch.log(self.log_scale) - 0.5 * math.log(2 * math.pi) - lx
        lp = torch.where(pos, lp, torch.full_like(lp, -math.inf)).sum(-1)
        return lp + self.gauss.log_prob(x[..., 3:6])

    def sample_with(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, J, 6) draws using ``generator`` only."""
        J = self.delta.shape[0]
        z = torch.randn(n, J, 3, generator=generator, dtype=torch.float64, device=generator.device)
        logn = torch.exp(self.log_loc + self.log_scale * z)
        return torch.cat([logn, sample_distribution(self.gauss, n, generator)], -1)

    def item(self, j: int) -> "CantileverInputs":
        """The j-th input distribution alone (batch_shape (1,))."""
        return _Single(CantileverInputs(self.delta[j : j + 1]))


class _Single(D.Distribution):
    """A batch-(1,) distribution seen as an unbatched one."""

    arg_constraints = {}
    support = D.constraints.real_vector

    def __init__(self, inner: CantileverInputs):
        self.inner = inner
        super().__init__(torch.Size([]), torch.Size([6]), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.inner.mean[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.log_prob(x[..., None, :])[..., 0]

    def sample_with(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.inner.sample_with(n, generator)[:, 0]


_CANTILEVER_RANGES = np.array(
    [[525, 575], [425, 475], [175, 225], [0.06, 0.07], [0.09, 0.1], [4, 5], [-0.6, 0], [0, 0.5], [0, 0.5]],
    dtype=float,
)


def cantilever_beam(J: int = 100, seed: int = 0) -> Problem:
    """The paper's cantilever-beam case: E_{f_j}[D(X)] for J parametrisations f_j of the inputs.

    The 9 distribution parameters (means of F_X, F_Y, E, w, t, L and the three correlations of
    (w, t, L)) are a Latin hypercube of size J on the paper's ranges, seeded by ``seed``; a row
    whose correlation matrix is not positive definite is redrawn uniformly (our choice: the
    ranges allow such rows, the paper does not say how they were handled). No exact values:
    ``truth`` is None.

    Examples
    --------
    >>> p = cantilever_beam(5)
    >>> p.inputs.batch_shape
    torch.Size([5])
    """
    if not isinstance(J, int) or J < 1:
        raise ValueError(f"J must be a positive int, got {J!r}")
    rng = np.random.default_rng(seed)
    lo, hi = _CANTILEVER_RANGES[:, 0], _CANTILEVER_RANGES[:, 1]
    delta = qmc.scale(qmc.LatinHypercube(d=9, rng=rng).random(J), lo, hi)
    for j in range(J):
        while not _pd(delta[j, 6:]):
            delta[j] = lo + (hi - lo) * rng.random(9)
    inputs = CantileverInputs(torch.as_tensor(delta))
    return Problem(
        lambda x: cantilever_deflection(x)[:, None].expand(-1, J),
        inputs,
        None,
        torch.ones(J, dtype=torch.float64),
        tuple(f"D_{j}" for j in range(J)),
    )


def _pd(r: np.ndarray) -> bool:
    a, b, c = r
    return bool(np.all(np.linalg.eigvalsh(np.array([[1, a, b], [a, 1, c], [b, c, 1]])) > 1e-6))


def ishigami(x: torch.Tensor, a: float = 7.0, b: float = 0.1) -> torch.Tensor:
    """Ishigami function sin x1 + a sin^2 x2 + b x3^4 sin x1 on (n, 3) inputs, X_i ~ U(-pi, pi)."""
    return torch.sin(x[:, 0]) * (1 + b * x[:, 2] ** 4) + a * torch.sin(x[:, 1]) ** 2


def ishigami_indices(a: float = 7.0, b: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact first-order and total Sobol' indices of the Ishigami function.

    V = a^2/8 + b pi^4/5 + b^2 pi^8/18 + 1/2, V_1 = (1 + b pi^4/5)^2 / 2, V_2 = a^2/8,
    V_13 = b^2 pi^8 (1/18 - 1/50) (Sobol' & Levitan 1999).
    """
    pi4 = math.pi**4
    V = a**2 / 8 + b * pi4 / 5 + b**2 * pi4**2 / 18 + 0.5
    V1 = 0.5 * (1 + b * pi4 / 5) ** 2
    V2 = a**2 / 8
    V13 = b**2 * pi4**2 * (1 / 18 - 1 / 50)
    s1 = torch.tensor([V1, V2, 0.0], dtype=torch.float64) / V
    st = torch.tensor([V1 + V13, V2, V13], dtype=torch.float64) / V
    return s1, st


def linear_gaussian(beta, mu, sigma) -> tuple[Callable, list, torch.Tensor]:
    """Y = sum_i beta_i X_i, X_i ~ N(mu_i, sigma_i^2): S_i = ST_i = beta_i^2 sigma_i^2 / sum_j beta_j^2 sigma_j^2.

    Returns ``(model, inputs, indices)``.
    """
    beta, mu, sigma = (torch.as_tensor(v, dtype=torch.float64) for v in (beta, mu, sigma))
    share = beta**2 * sigma**2
    inputs = [D.Normal(m, s) for m, s in zip(mu, sigma)]
    return (lambda x: x @ beta.to(x.dtype)), inputs, share / share.sum()
