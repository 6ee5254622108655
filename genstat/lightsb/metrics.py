"""Conditional BW^2-UVP of a learned plan against an exact one, from exact mixture moments."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import torch
from torch import Tensor

from genstat.mc import block_generator
from genstat.metrics.gaussian import bures_wasserstein

from .mixture import GaussianMixture

__all__ = ["CBW2UVPResult", "cbw2_uvp"]


class _Plan(Protocol):
    def conditional(self, x: Tensor) -> GaussianMixture: ...


@dataclass(frozen=True, slots=True)
class CBW2UVPResult:
    """Result of :func:`cbw2_uvp`.

    Attributes
    ----------
    estimate : float
        ``cBW^2-UVP`` in percent: ``100 mean_x W2^2(pi*(.|x), pi_hat(.|x)) / tr Cov(P1)`` on
        moment-matched Gaussians (= REFERENCE.md's ``BW / (tr Cov P1 / 2)``).
    stderr : float
        Standard error of the mean over the test points.
    n_samples : int
        Number of test points ``x ~ P0``.
    mean_error : float
        ``mean_x |E_hat[Y|x] - E*[Y|x]|^2 / tr Cov(P1)`` in percent (the mean part of the estimate).
    covariance_error : float
        Raw relative conditional-covariance error ``mean_x ||Cov_hat(Y|x) - Cov*(Y|x)||_F / ||Cov*(Y|x)||_F``.
    """

    estimate: float
    stderr: float
    n_samples: int
    mean_error: float
    covariance_error: float

    def confidence_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval for the population mean over ``x ~ P0``."""
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.estimate - z * self.stderr, self.estimate + z * self.stderr

    def to_frame(self) -> pd.DataFrame:
        """One-row tidy table."""
        return pd.DataFrame([{f: getattr(self, f) for f in self.__slots__}])


def cbw2_uvp(model: _Plan, benchmark, n_test: int = 1000, *, x_test: Tensor | None = None,
             seed: int = 0, batch_size: int = 256) -> CBW2UVPResult:
    """Conditional BW^2-UVP (%) of ``model``'s plan against ``benchmark``'s exact plan.

    Both conditionals are Gaussian mixtures; their exact means and covariances are compared by the
    Bures-Wasserstein distance (no sampling noise from the model side).

    Parameters
    ----------
    model : object with ``conditional(x) -> GaussianMixture``
        E.g. a :class:`~genstat.lightsb.LightSB`.
    benchmark : GaussianEOT or EOTBenchmark
        Needs ``conditional(x)``, ``sample_source(n, generator)`` and ``target_variance``. When both
        have an ``epsilon`` they must agree (relative difference <= 1e-12): the plans of two
        different EOT problems are not comparable.
    n_test : int
        Test points ``x ~ P0`` (drawn with a generator seeded from ``seed``), unless ``x_test`` given.
    x_test : Tensor, shape (n, d), optional
        Fixed test inputs.
    seed : int
    batch_size : int
        Points per chunk (bounds memory at large d and K).

    Returns
    -------
    CBW2UVPResult

    Examples
    --------
    >>> import torch
    >>> from genstat.lightsb import gaussian_eot
    >>> e = gaussian_eot(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64),
    ...                  torch.ones(2, dtype=torch.float64), 2 * torch.eye(2, dtype=torch.float64), 1.0)
    >>> cbw2_uvp(e.as_lightsb(), e, n_test=100).estimate < 1e-8
    True
    """
    m_eps, b_eps = getattr(model, "epsilon", None), getattr(benchmark, "epsilon", None)
    if m_eps is not None and b_eps is not None and not math.isclose(m_eps, b_eps, rel_tol=1e-12):
        raise ValueError(f"model.epsilon={m_eps!r} differs from benchmark.epsilon={b_eps!r}: cBW2-UVP compares "
                         "the plans of one EOT problem")
    if x_test is None:
        if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 2:
            raise ValueError(f"n_test must be an int >= 2, got {n_test!r}")
        x_test = benchmark.sample_source(n_test, block_generator(seed, 0, stream=11))
    if x_test.dim() != 2 or x_test.shape[0] < 2:
        raise ValueError(f"x_test must have shape (n >= 2, d), got {tuple(x_test.shape)}")
    variance = float(benchmark.target_variance)
    vals, means, covs = [], [], []
    with torch.no_grad():
        for chunk in torch.split(x_test, batch_size):
            truth = benchmark.conditional(chunk.to(torch.float64))
            pred = model.conditional(chunk)
            mt, ct = truth.mean(), truth.covariance()
            mp, cp = pred.mean().to(torch.float64), pred.covariance().to(torch.float64)
            vals.append(bures_wasserstein(mp, cp, mt, ct))
            means.append(((mp - mt) ** 2).sum(-1))
            covs.append(torch.linalg.matrix_norm(cp - ct) / torch.linalg.matrix_norm(ct))
    w2 = torch.cat(vals) * (100.0 / variance)
    n = w2.shape[0]
    return CBW2UVPResult(
        estimate=float(w2.mean()),
        stderr=float(w2.std() / math.sqrt(n)),
        n_samples=n,
        mean_error=float(torch.cat(means).mean() * (100.0 / variance)),
        covariance_error=float(torch.cat(covs).mean()),
    )
