"""Conditional BW^2-UVP of a learned plan against an exact one: exact moments, or the paper's sampling protocol."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

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
    protocol : {"exact", "paper"}
        How the model's conditional moments were obtained (see :func:`cbw2_uvp`).
    floor : float
        What the TRUE plan scores under the same protocol and seed (percent), with its standard
        error ``floor_stderr``: 0 for ``"exact"``, the sampling floor for ``"paper"``. A model
        cannot be told from the truth when ``estimate`` is within a few ``stderr`` of ``floor``.
    floor_stderr : float
    n_per_x : int
        Model samples per test point (``"paper"``; 0 for ``"exact"``).
    """

    estimate: float
    stderr: float
    n_samples: int
    mean_error: float
    covariance_error: float
    protocol: str = "exact"
    floor: float = 0.0
    floor_stderr: float = 0.0
    n_per_x: int = 0

    def confidence_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval for the population mean over ``x ~ P0``."""
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.estimate - z * self.stderr, self.estimate + z * self.stderr

    def to_frame(self) -> pd.DataFrame:
        """One-row tidy table."""
        return pd.DataFrame([{f: getattr(self, f) for f in self.__slots__}])


#: test points per chunk of the paper protocol (fixed, so results depend on ``seed`` only)
_PAPER_CHUNK = 16


def _empirical_moments(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and unbiased covariance (``np.cov``'s, as the paper's code) per point, float64."""
    y = samples.to(torch.float64)
    mean = y.mean(1)
    centred = y - mean.unsqueeze(1)
    cov = centred.mT @ centred / (y.shape[1] - 1)
    return mean, 0.5 * (cov + cov.mT)


def _draw(cond, n_per_x: int, seed: int, chunk: int, who: str) -> Tensor:
    if not callable(getattr(cond, "sample", None)):
        raise TypeError(f"protocol='paper' samples the {who}'s conditionals, but {type(cond).__name__} "
                        "has no sample(n_per_x, generator=...)")
    device = (cond.means if hasattr(cond, "means") else cond.atoms).device
    # the model and the truth draw from the same stream (common random numbers): the true plan
    # passed as the model scores exactly the floor
    return cond.sample(n_per_x, generator=block_generator(seed, chunk, device, stream=12))


def cbw2_uvp(model: _Plan, benchmark, n_test: int = 1000, *, protocol: Literal["exact", "paper"] = "exact",
             n_per_x: int = 1000, x_test: Tensor | None = None, seed: int = 0,
             batch_size: int = 256) -> CBW2UVPResult:
    """Conditional BW^2-UVP (%) of ``model``'s plan against ``benchmark``'s exact plan.

    Both plans' conditionals at each test point are compared by the Bures-Wasserstein distance of
    their moment-matched Gaussians, normalised by ``tr Cov(P1)``. Two protocols:

    - ``"exact"`` (default): the model's exact mixture moments; no sampling noise, and the true
      plan scores 0.
    - ``"paper"``: the protocol of the benchmark's code (``calculate_cond_bw``), used for the
      paper's tables: ``n_per_x`` model samples per test point, their empirical mean and unbiased
      covariance against the exact true moments. It has a floor: the true plan itself scores
      ``> 0``. The floor is computed here from the true plan under the same protocol (same test
      points, same random stream) and returned beside the estimate.

    Parameters
    ----------
    model : object with ``conditional(x)``
        E.g. a :class:`~genstat.lightsb.LightSB`. ``"paper"`` also needs ``conditional(x).sample``.
    benchmark : GaussianEOT or EOTBenchmark
        Needs ``conditional(x)``, ``sample_source(n, generator)`` and ``target_variance``. When both
        have an ``epsilon`` they must agree (relative difference <= 1e-12): the plans of two
        different EOT problems are not comparable.
    n_test : int
        Test points ``x ~ P0`` (drawn with a generator seeded from ``seed``), unless ``x_test`` given.
    protocol : {"exact", "paper"}
    n_per_x : int
        Samples per test point for ``"paper"`` (the paper: 1000).
    x_test : Tensor, shape (n, d), optional
        Fixed test inputs.
    seed : int
        Seeds the test points (stream 11) and the samples of ``"paper"`` (stream 12, one generator
        per block of 16 test points, on the device of the plan's conditional).
    batch_size : int
        Points per chunk of ``"exact"`` (bounds memory at large d and K).

    Returns
    -------
    CBW2UVPResult
        Always the same type; ``floor``/``floor_stderr`` are 0 and ``n_per_x`` is 0 for ``"exact"``.

    References
    ----------
    N. Gushchin et al., NeurIPS 2023 (cBW2-UVP, and ``calculate_cond_bw`` in the benchmark's
    ``metrics.py``); A. Korotin, N. Gushchin, E. Burnaev, ICLR 2024, Table 2.

    Examples
    --------
    >>> import torch
    >>> from genstat.lightsb import gaussian_eot
    >>> e = gaussian_eot(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64),
    ...                  torch.ones(2, dtype=torch.float64), 2 * torch.eye(2, dtype=torch.float64), 1.0)
    >>> cbw2_uvp(e.as_lightsb(), e, n_test=100).estimate < 1e-8
    True
    >>> res = cbw2_uvp(e.as_lightsb(), e, n_test=100, protocol="paper", n_per_x=200)
    >>> res.floor > 0, abs(res.estimate - res.floor) < 1e-9
    (True, True)
    """
    if protocol not in ("exact", "paper"):
        raise ValueError(f"protocol must be 'exact' or 'paper', got {protocol!r}")
    if protocol == "paper" and (isinstance(n_per_x, bool) or not isinstance(n_per_x, int) or n_per_x < 2):
        raise ValueError(f"n_per_x must be an int >= 2, got {n_per_x!r}")
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
    scale = 100.0 / float(benchmark.target_variance)
    vals, means, covs, floors = [], [], [], []
    with torch.no_grad():
        for i, chunk in enumerate(torch.split(x_test, batch_size if protocol == "exact" else _PAPER_CHUNK)):
            truth = benchmark.conditional(chunk.to(torch.float64))
            mt, ct = truth.mean(), truth.covariance()
            if protocol == "exact":
                pred = model.conditional(chunk)
                mp, cp = pred.mean().to(torch.float64), pred.covariance().to(torch.float64)
            else:
                mp, cp = _empirical_moments(_draw(model.conditional(chunk), n_per_x, seed, i, "model"))
                mf, cf = _empirical_moments(_draw(truth, n_per_x, seed, i, "benchmark"))
                floors.append(bures_wasserstein(mf, cf, mt, ct))
            mp, cp = mp.to(mt.device), cp.to(mt.device)
            vals.append(bures_wasserstein(mp, cp, mt, ct))
            means.append(((mp - mt) ** 2).sum(-1))
            covs.append(torch.linalg.matrix_norm(cp - ct) / torch.linalg.matrix_norm(ct))
    w2 = torch.cat(vals) * scale
    n = w2.shape[0]
    floor = torch.cat(floors) * scale if floors else torch.zeros(n, dtype=torch.float64)
    return CBW2UVPResult(
        estimate=float(w2.mean()),
        stderr=float(w2.std() / math.sqrt(n)),
        n_samples=n,
        mean_error=float(torch.cat(means).mean() * scale),
        covariance_error=float(torch.cat(covs).mean()),
        protocol=protocol,
        floor=float(floor.mean()),
        floor_stderr=float(floor.std() / math.sqrt(n)),
        n_per_x=n_per_x if protocol == "paper" else 0,
    )
