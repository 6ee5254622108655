"""Intrinsic dimension from score fields (Horvat & Pfister 2024; Stanczuk et al. 2024; Kamkari et al.
2024) and the classical nearest-neighbour baselines (Levina & Bickel 2004; Facco et al. 2017).

Score callables take ``(x, sigma)`` with ``x`` of shape (n, D) and return (n, D).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from ._autodiff import check_field_output, check_points, jacobian

__all__ = ["IDEstimate", "id_flipd", "id_flow_jacobian", "id_mle", "id_score_svd", "id_twonn", "spectral_gap"]

Score = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True, slots=True)
class IDEstimate:
    """An intrinsic-dimension estimate.

    Attributes
    ----------
    dimension : int
        The integer estimate (the mode of the per-point dimensions for spectral methods, the rounded
        ``estimate`` otherwise).
    estimate : float
        The continuous estimate (mean of the per-point statistic for score methods).
    statistic : Tensor, shape (n,)
        The raw per-point statistic (per-point dimension, local ID or Levina-Bickel estimate).
    spectrum : Tensor or None, shape (D,)
        The averaged spectrum the dimension was read from (singular values, eigenvalues), decreasing.
    method : str
    """

    dimension: int
    estimate: float
    statistic: torch.Tensor
    spectrum: torch.Tensor | None
    method: str

    def to_frame(self) -> pd.DataFrame:
        """One-row tidy table."""
        return pd.DataFrame([{"method": self.method, "dimension": self.dimension, "estimate": self.estimate,
                              "n_points": int(self.statistic.numel())}])


def _check_sigma(sigma, name: str = "sigma") -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(sigma).__name__}")
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"{name} must be > 0, got {sigma}")
    return float(sigma)


def _score_field(score: Score, sigma: float, name: str = "score") -> Callable[[torch.Tensor], torch.Tensor]:
    def f(z: torch.Tensor) -> torch.Tensor:
        return check_field_output(score(z, sigma), z, name)
    return f


def spectral_gap(values: torch.Tensor, *, criterion: str = "gap") -> torch.Tensor:
    """Number of values before the largest drop in each row of decreasing ``values`` (n, D).

    ``criterion="gap"``: largest difference ``v_j - v_{j+1}``; ``"ratio"``: largest ``log v_j - log v_{j+1}``.

    Examples
    --------
    >>> spectral_gap(torch.tensor([[9.0, 8.0, 0.1, 0.05]]))
    tensor([2])
    """
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"values must have shape (n, D) with D >= 2, got {tuple(values.shape)}")
    if criterion == "gap":
        drops = values[:, :-1] - values[:, 1:]
    elif criterion == "ratio":
        v = values.clamp_min(torch.finfo(values.dtype).tiny)
        drops = v[:, :-1].log() - v[:, 1:].log()
    else:
        raise ValueError(f"criterion must be 'gap' or 'ratio', got {criterion!r}")
    return drops.argmax(1) + 1


def _mode(d: torch.Tensor) -> int:
    return int(torch.bincount(d.long()).argmax())


def id_score_svd(score: Score, x0: torch.Tensor, *, sigma: float, n_neighbors: int | None = None,
                 generator: torch.Generator, criterion: str = "gap", center: bool = True) -> IDEstimate:
    """Intrinsic dimension from the singular values of scores near ``x0`` (Stanczuk et al. 2024).

    For each point, ``K = n_neighbors`` scores at ``x0 + sigma eps`` are centred and stacked; the
    ``D - d`` normal directions carry singular values ~ ``sqrt(K) / sigma``, the ``d`` tangent ones
    ~ ``sqrt(K) sigma``. The dimension is ``D`` minus the position of the largest gap.

    Parameters
    ----------
    score : callable
        ``score(x, sigma)``, (m, D) -> (m, D).
    x0 : Tensor, shape (n, D) or (D,)
        Points on (or near) the data manifold.
    sigma : float
        Noise level (small, e.g. <= 0.1 of the manifold's scale).
    n_neighbors : int, optional
        ``K >= 2 D`` (default ``4 D``). With fewer samples the smallest normal singular values of the
        K x (D - d) random block fall towards the tangent ones (Marchenko-Pastur: ``sqrt(K) - sqrt(D - d)``)
        and the gap disappears; ``K < D`` cannot even span the normal space.
    generator : torch.Generator
    criterion : {"gap", "ratio"}
        Largest absolute drop or largest log-drop of the singular values.
    center : bool
        Subtract the mean score (without it, the mean ``-P_T x0 / (tau^2 + sigma^2)`` adds one large
        tangent singular value and the estimate becomes ``d - 1``).

    Returns
    -------
    IDEstimate
        ``statistic``: per-point dimensions; ``spectrum``: mean singular values / sqrt(K).

    References
    ----------
    Stanczuk, Batzolis, Deveney, Schoenlieb, "Diffusion models encode the intrinsic dimension of data
    manifolds", ICML 2024; Horvat & Pfister (ICLR 2024), section 5.

    Examples
    --------
    >>> from genstat.datasets import LinearSubspace
    >>> m = LinearSubspace(2, 6, generator=torch.Generator().manual_seed(0))
    >>> g = torch.Generator().manual_seed(1)
    >>> id_score_svd(m.score, m.sample(5, g), sigma=0.05, generator=g).dimension
    2
    """
    sigma = _check_sigma(sigma)
    if x0.ndim == 1:
        x0 = x0[None]
    x0 = check_points(x0, name="x0")
    n, D = x0.shape
    K = 4 * D if n_neighbors is None else n_neighbors
    if isinstance(K, bool) or not isinstance(K, int):
        raise TypeError(f"n_neighbors must be an int, got {type(K).__name__}")
    if K < 2 * D:
        raise ValueError(f"n_neighbors must be >= 2 D = {2 * D}, got {K}: with fewer scores the smallest normal "
                         "singular values (about sqrt(K) - sqrt(D - d) times 1/sigma) sink towards the tangent "
                         "ones and the spectral gap is lost")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    eps = torch.randn((n, K, D), generator=generator, dtype=x0.dtype, device=generator.device).to(x0.device)
    x = (x0[:, None, :] + sigma * eps).reshape(n * K, D)
    with torch.no_grad():
        s = _score_field(score, sigma)(x).detach().reshape(n, K, D)
    if center:
        s = s - s.mean(1, keepdim=True)
    sv = torch.linalg.svdvals(s.double())  # (n, D) decreasing
    n_normal = spectral_gap(sv, criterion=criterion)
    dims = D - n_normal
    return IDEstimate(_mode(dims), float(dims.double().mean()), dims, (sv / math.sqrt(K)).mean(0), "score_svd")


def id_flow_jacobian(score: Score, x: torch.Tensor, *, sigma_max: float = 1.0, sigma_min: float = 1e-3,
                     n_steps: int = 64, criterion: str = "ratio") -> IDEstimate:
    """Intrinsic dimension from the Jacobian of the probability-flow map (Horvat & Pfister, Theorem 2).

    The variance-exploding probability-flow ODE ``dx/dsigma = -sigma s(x, sigma)`` is integrated (RK4,
    uniform in ``log sigma``) from ``sigma_max`` down to ``sigma_min``; its Jacobian ``Y`` (the solution of
    ``dY/dsigma = -sigma grad s Y``) keeps ``d`` singular values of order one along the manifold while the
    ``D - d`` normal ones vanish like ``sigma_min / sigma_max``. For the exact linear score with scale tau:
    tangent ``sqrt((tau^2 + sigma_min^2) / (tau^2 + sigma_max^2))``, normal ``sigma_min / sigma_max``.

    Parameters
    ----------
    score : callable
        ``score(x, sigma)``.
    x : Tensor, shape (n, D)
        Starting points at noise level ``sigma_max`` (e.g. data plus ``sigma_max`` noise).
    sigma_max, sigma_min : float
        Noise range of the flow (keep ``sigma_min`` inside a learned model's training range).
    n_steps : int
        RK4 steps.
    criterion : {"ratio", "gap"}
        How the singular-value drop is found (log-scale by default).

    Returns
    -------
    IDEstimate
        ``statistic``: per-point dimensions; ``spectrum``: mean singular values of ``Y``.

    Examples
    --------
    >>> from genstat.datasets import LinearSubspace
    >>> m = LinearSubspace(2, 5, generator=torch.Generator().manual_seed(0))
    >>> x = m.sample(3, torch.Generator().manual_seed(1), noise=1.0)
    >>> est = id_flow_jacobian(m.score, x, n_steps=32)
    >>> est.dimension, round(float(est.spectrum[0]), 3)
    (2, 0.707)
    """
    sigma_max, sigma_min = _check_sigma(sigma_max, "sigma_max"), _check_sigma(sigma_min, "sigma_min")
    if sigma_min >= sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} >= {sigma_max}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    x = check_points(x)
    h = (math.log(sigma_min) - math.log(sigma_max)) / n_steps

    def velocity(z: torch.Tensor, u: float) -> torch.Tensor:
        sig = math.exp(u)
        return -(sig**2) * check_field_output(score(z, sig), z, "score")

    def flow(z: torch.Tensor) -> torch.Tensor:
        u = math.log(sigma_max)
        for _ in range(n_steps):
            k1 = velocity(z, u)
            k2 = velocity(z + 0.5 * h * k1, u + 0.5 * h)
            k3 = velocity(z + 0.5 * h * k2, u + 0.5 * h)
            k4 = velocity(z + h * k3, u + h)
            z = z + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            u = u + h
        return z

    Y = jacobian(flow, x)
    sv = torch.linalg.svdvals(Y.double())
    dims = spectral_gap(sv, criterion=criterion)
    return IDEstimate(_mode(dims), float(dims.double().mean()), dims, sv.mean(0), "flow_jacobian")


def id_flipd(score: Score, x: torch.Tensor, sigma: float) -> IDEstimate:
    """FLIPD local intrinsic dimension ``LID(x) = D + sigma^2 (tr grad s(x, sigma) + ||s(x, sigma)||^2)``.

    Evaluated at the (clean) points ``x`` with the exact trace of the score Jacobian. The integer
    dimension is the rounded median over the points.

    Parameters
    ----------
    score : callable
        ``score(x, sigma)``.
    x : Tensor, shape (n, D)
        Points on the data manifold.
    sigma : float

    Returns
    -------
    IDEstimate
        ``statistic``: per-point LID; ``spectrum``: mean eigenvalues of the symmetrised denoiser Jacobian
        ``I + sigma^2 grad s`` (near 1 along the manifold, 0 across it).

    References
    ----------
    Kamkari, Ross, Hosseinzadeh, Cresswell, Loaiza-Ganem, "A geometric view of data complexity: efficient
    local intrinsic dimension estimation with diffusion models", NeurIPS 2024.

    Examples
    --------
    >>> from genstat.datasets import LinearSubspace
    >>> m = LinearSubspace(5, 20, generator=torch.Generator().manual_seed(0))
    >>> x = m.sample(4, torch.Generator().manual_seed(1))
    >>> id_flipd(m.score, x, 0.01).dimension
    5
    """
    sigma = _check_sigma(sigma)
    x = check_points(x)
    D = x.shape[1]
    f = _score_field(score, sigma)
    J = jacobian(f, x).double()
    with torch.no_grad():
        s = f(x).detach().double()
    lid = D + sigma**2 * (torch.diagonal(J, dim1=1, dim2=2).sum(1) + (s * s).sum(1))
    A = torch.eye(D, dtype=torch.float64) + sigma**2 * J
    eig = torch.linalg.eigvalsh(0.5 * (A + A.transpose(1, 2))).flip(1)
    return IDEstimate(int(round(float(lid.median()))), float(lid.mean()), lid, eig.mean(0), "flipd")


def _knn_distances(x: torch.Tensor, k: int) -> torch.Tensor:
    xd = x.double()
    d = torch.cdist(xd, xd)
    d.fill_diagonal_(float("inf"))
    return torch.topk(d, k, dim=1, largest=False).values  # (n, k) increasing


def id_mle(x: torch.Tensor, *, n_neighbors: int = 20, average: str = "mean", unbiased: bool = True) -> IDEstimate:
    """Levina-Bickel maximum-likelihood intrinsic dimension.

    ``m_k(x) = [(1 / (k - 2)) sum_{j<k} log(T_k(x) / T_j(x))]^{-1}`` with ``T_j`` the distance to the j-th
    neighbour (the unbiased normalisation ``k - 2`` of Levina & Bickel, as in scikit-dimension;
    ``unbiased=False``: the maximum-likelihood ``k - 1``); averaged over points (``average="mean"``) or by
    MacKay-Ghahramani's inverse average (``"inverse"``).

    References
    ----------
    Levina & Bickel, "Maximum likelihood estimation of intrinsic dimension", NIPS 2004, eq. (8)-(9).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(1000, 3, generator=g, dtype=torch.float64) @ torch.eye(3, 8, dtype=torch.float64)
    >>> id_mle(x).dimension
    3
    """
    x = check_points(x)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or not 2 <= n_neighbors < x.shape[0]:
        raise ValueError(f"n_neighbors must be an int in [2, n), got {n_neighbors!r}")
    T = _knn_distances(x, n_neighbors).clamp_min(torch.finfo(torch.float64).tiny)
    if n_neighbors < 3 and unbiased:
        raise ValueError(f"n_neighbors must be >= 3 with unbiased=True, got {n_neighbors}")
    inv = torch.log(T[:, -1:] / T[:, :-1]).sum(1) / (n_neighbors - (2 if unbiased else 1))
    pw = 1.0 / inv
    if average == "mean":
        est = float(pw.mean())
    elif average == "inverse":
        est = float(1.0 / inv.mean())
    else:
        raise ValueError(f"average must be 'mean' or 'inverse', got {average!r}")
    return IDEstimate(int(round(est)), est, pw, None, "mle")


def id_twonn(x: torch.Tensor, *, discard_fraction: float = 0.1) -> IDEstimate:
    """TwoNN intrinsic dimension (Facco et al. 2017) from the ratios ``mu = r_2 / r_1``.

    The empirical law of ``mu`` is Pareto with exponent ``d``: ``-log(1 - F(mu)) = d log mu``; ``d`` is the
    least-squares slope through the origin after discarding the largest ``discard_fraction`` of ratios.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2000, 2, generator=g, dtype=torch.float64) @ torch.eye(2, 6, dtype=torch.float64)
    >>> id_twonn(x).dimension
    2
    """
    x = check_points(x)
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"x needs at least 3 points, got {n}")
    r = _knn_distances(x, 2)
    mu = torch.sort(r[:, 1] / r[:, 0].clamp_min(torch.finfo(torch.float64).tiny)).values
    F = torch.arange(1, n + 1, dtype=torch.float64) / n
    keep = int(math.floor(n * (1.0 - discard_fraction)))
    keep = min(max(keep, 2), n - 1)  # F = 1 at the last point would give log(0)
    lx, ly = torch.log(mu[:keep]), -torch.log1p(-F[:keep])
    est = float((lx * ly).sum() / (lx * lx).sum())
    return IDEstimate(int(round(est)), est, torch.log(mu), None, "twonn")
