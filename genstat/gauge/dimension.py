"""Intrinsic dimension from score fields (Horvat & Pfister 2024; Stanczuk et al. 2024; Kamkari et al.
2024) and the classical nearest-neighbour baselines (Levina & Bickel 2004; Facco et al. 2017).

Score callables take ``(x, sigma)`` with ``x`` of shape (n, D) and return (n, D).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from scipy import stats

from ._autodiff import check_field_output, check_points, jacobian
from ._knn import knn_distances as _knn_distances

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
        The raw per-point statistic (per-point dimension, local ID, Levina-Bickel estimate or TwoNN
        ``log mu``), in the order of the points; NaN where a point was dropped (duplicates, degenerate
        neighbourhoods).
    spectrum : Tensor or None, shape (D,)
        The averaged spectrum the dimension was read from (singular values, eigenvalues), decreasing.
    method : str
    stderr : float
        Standard error of ``estimate`` from the sampling of the points (NaN where not available); each
        estimator says how it is obtained. It does not include the method's bias.
    n_samples : int
        Number of points that entered ``estimate`` (default: the finite entries of ``statistic``).
    dof : float
        Degrees of freedom of ``stderr``: ``confidence_interval`` uses Student's t (normal when inf).
    """

    dimension: int
    estimate: float
    statistic: torch.Tensor
    spectrum: torch.Tensor | None
    method: str
    stderr: float = math.nan
    n_samples: int | None = None
    dof: float = math.inf

    def __post_init__(self) -> None:
        if self.n_samples is None:
            object.__setattr__(self, "n_samples", int(torch.isfinite(self.statistic).sum()))

    def confidence_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided interval ``estimate +- q stderr`` with ``q`` the t (``dof``) or normal quantile."""
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        p = 0.5 + 0.5 * float(level)
        q = float(stats.t.ppf(p, self.dof) if math.isfinite(self.dof) else stats.norm.ppf(p))
        return self.estimate - q * self.stderr, self.estimate + q * self.stderr

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """One-row tidy table."""
        lo, hi = self.confidence_interval(level)
        return pd.DataFrame([{"method": self.method, "dimension": self.dimension, "estimate": self.estimate,
                              "stderr": self.stderr, "ci_low": lo, "ci_high": hi, "level": level,
                              "n_samples": self.n_samples, "n_points": int(self.statistic.numel())}])


def _mean_stderr(values: torch.Tensor) -> dict:
    """Standard error of the mean of independent per-point values, with its degrees of freedom."""
    v = values.double()
    if v.numel() < 2:
        return {"stderr": math.nan}
    return {"stderr": float(v.std() / math.sqrt(v.numel())), "dof": float(v.numel() - 1)}


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
        ``statistic``: per-point dimensions; ``spectrum``: mean singular values / sqrt(K); ``stderr``: of the
        mean per-point dimension, ``sd / sqrt(n)`` (the points and their noise draws are independent).

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
    mode = _mode(dims)
    agree = float((dims == mode).double().mean())
    if agree < 0.8:
        warnings.warn(f"id_score_svd: only {agree:.0%} of the points give the modal dimension {mode} at sigma={sigma:g} "
                      f"(mean {float(dims.double().mean()):.2f}): sigma is comparable to a tangent scale of the data or "
                      "to its curvature radius, so the spectral gap is ambiguous; rerun at a smaller sigma (the "
                      "estimate should not change between two sigmas)", RuntimeWarning, stacklevel=2)
    return IDEstimate(mode, float(dims.double().mean()), dims, (sv / math.sqrt(K)).mean(0), "score_svd",
                      **_mean_stderr(dims))


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
        ``statistic``: per-point dimensions; ``spectrum``: mean singular values of ``Y``; ``stderr``: of the
        mean per-point dimension, ``sd / sqrt(n)`` over independent starting points.

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
    return IDEstimate(_mode(dims), float(dims.double().mean()), dims, sv.mean(0), "flow_jacobian",
                      **_mean_stderr(dims))


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
        ``I + sigma^2 grad s`` (near 1 along the manifold, 0 across it); ``stderr``: of the mean LID,
        ``sd / sqrt(n)`` over independent points.

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
    mean = float(lid.mean())
    if abs(mean - round(mean)) > 0.25:
        warnings.warn(f"id_flipd: the mean LID {mean:.2f} at sigma={sigma:g} is far from an integer: sigma is "
                      "comparable to a tangent scale of the data (or the score is inexact at this sigma); rerun at "
                      "a smaller sigma and look for a plateau of the LID over sigma", RuntimeWarning, stacklevel=2)
    return IDEstimate(int(round(float(lid.median()))), mean, lid, eig.mean(0), "flipd", **_mean_stderr(lid))


# --- nearest-neighbour estimators -----------------------------------------------------------------------------------

def _check_knn_args(x: torch.Tensor, n_batches: int, generator: torch.Generator | None) -> torch.Tensor:
    x = check_points(x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, got NaN or inf entries")
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches == 1 or n_batches < 0:
        raise ValueError(f"n_batches must be 0 (no stderr) or an int >= 2, got {n_batches!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return x


def _drop(valid: torch.Tensor, what: str) -> None:
    if not bool(valid.all()):
        warnings.warn(f"dropping {int((~valid).sum())} of {valid.numel()} points with {what}", RuntimeWarning,
                      stacklevel=4)  # the caller of id_mle / id_twonn


def _batch_stderr(x: torch.Tensor, fit: Callable[[torch.Tensor], float], *, n_batches: int,
                  generator: torch.Generator | None, min_points: int) -> float:
    """Batch-means standard error: the spread of ``fit`` over disjoint batches of the points, over sqrt(batches)."""
    n = x.shape[0]
    if n_batches == 0:
        return math.nan
    if n // n_batches < min_points:
        warnings.warn(f"stderr is NaN: {n_batches} batches of {n // n_batches} points, need {min_points} each; "
                      "pass a smaller n_batches", RuntimeWarning, stacklevel=3)
        return math.nan
    if generator is None:
        order = torch.arange(n, device=x.device)
    else:
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # duplicates were reported for the whole sample
        for i in range(n_batches):
            try:
                fits.append(fit(x[order[i::n_batches]]))
            except ValueError:  # a degenerate batch (all ties): no spread to report
                fits.append(math.nan)
    return float(torch.tensor(fits, dtype=torch.float64).std() / math.sqrt(n_batches))


def _mle_fit(x: torch.Tensor, k: int, unbiased: bool, average: str) -> tuple[float, torch.Tensor]:
    T = _knn_distances(x, k)
    # a zero distance (duplicate) or k equidistant neighbours leave the per-point likelihood without a maximum
    S = torch.log(T[:, -1:] / T[:, :-1]).sum(1)
    valid = (T[:, 0] > 0) & (S > 0)
    _drop(valid, "a degenerate neighbourhood (a duplicate point or all neighbours equidistant)")
    if not bool(valid.any()):
        raise ValueError("no point has a non-degenerate neighbourhood")
    inv = S[valid] / (k - (2 if unbiased else 1))
    est = float((1.0 / inv).mean()) if average == "mean" else float(1.0 / inv.mean())
    pw = torch.full_like(S, math.nan)
    pw[valid] = 1.0 / inv
    return est, pw


def id_mle(x: torch.Tensor, *, n_neighbors: int = 20, average: str = "mean", unbiased: bool = True,
           n_batches: int = 10, generator: torch.Generator | None = None) -> IDEstimate:
    """Levina-Bickel maximum-likelihood intrinsic dimension.

    ``m_k(x) = [(1 / (k - 2)) sum_{j<k} log(T_k(x) / T_j(x))]^{-1}`` with ``T_j`` the distance to the j-th
    nearest other point: under a locally uniform density the sum is Gamma(k - 1, rate m), so ``k - 2`` makes
    ``m_k`` unbiased (``unbiased=False``: the maximum-likelihood ``k - 1``). The per-point estimates are
    averaged (``average="mean"``) or combined by MacKay-Ghahramani's inverse average (``"inverse"``,
    ``1 / mean(1 / m_k)``).

    scikit-dimension's ``skdim.id.MLE().fit(x, n_neighbors=k).dimension_`` defaults to ``unbiased=False`` and
    the inverse average (its ``comb="mle"``): ``id_mle(x, n_neighbors=k, unbiased=False, average="inverse")``
    gives the same number; the defaults here are the unbiased per-point estimates and their mean.

    Parameters
    ----------
    x : Tensor, shape (n, D)
        The points (distances are computed in float64).
    n_neighbors : int
        ``k``, in ``[3, n)`` (``[2, n)`` with ``unbiased=False``).
    average : {"mean", "inverse"}
    unbiased : bool
    n_batches : int
        Batches for ``stderr`` (0: none); each needs more than ``k`` points.
    generator : torch.Generator, optional
        Assigns the points to the batches.

    Returns
    -------
    IDEstimate
        ``statistic``: the per-point ``m_k`` (NaN for points dropped, with a warning, because a neighbour is at
        distance 0 or all ``k`` are equidistant); ``stderr``: batch means. The points are split into
        ``n_batches`` disjoint batches (at random with ``generator``, else by row, ``i mod n_batches``, which
        assumes the rows in random order, as for samples), the estimator is rerun on each, and ``stderr =
        sd(batch estimates) / sqrt(n_batches)`` with ``n_batches - 1`` degrees of freedom: disjoint batches of
        independent points are independent and the variance scales as ``1 / n``. The per-point values share
        neighbours, so treating them as independent is wrong (on the uniform flat torus, ``sd / sqrt(n)`` of the
        MLE per-point values is 14 % too small at d = 4, and a bootstrap over the TwoNN ratios about 20 % too
        small). Bias (curvature, boundary, finite n) is not included.

    References
    ----------
    Levina & Bickel, "Maximum likelihood estimation of intrinsic dimension", NIPS 2004, eq. (8)-(9);
    MacKay & Ghahramani, "Comments on 'Maximum likelihood estimation of intrinsic dimension'", 2005.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(1000, 3, generator=g, dtype=torch.float64) @ torch.eye(3, 8, dtype=torch.float64)
    >>> est = id_mle(x)
    >>> est.dimension, est.stderr < 0.1
    (3, True)
    """
    x = _check_knn_args(x, n_batches, generator)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or not 2 <= n_neighbors < x.shape[0]:
        raise ValueError(f"n_neighbors must be an int in [2, n), got {n_neighbors!r}")
    if n_neighbors < 3 and unbiased:
        raise ValueError(f"n_neighbors must be >= 3 with unbiased=True, got {n_neighbors}")
    if average not in ("mean", "inverse"):
        raise ValueError(f"average must be 'mean' or 'inverse', got {average!r}")
    est, pw = _mle_fit(x, n_neighbors, unbiased, average)
    se = _batch_stderr(x, lambda z: _mle_fit(z, n_neighbors, unbiased, average)[0], n_batches=n_batches,
                       generator=generator, min_points=n_neighbors + 1)
    return IDEstimate(int(round(est)), est, pw, None, "mle", stderr=se, dof=float(max(n_batches - 1, 1)))


def _twonn_fit(x: torch.Tensor, discard_fraction: float) -> tuple[float, torch.Tensor]:
    r = _knn_distances(x, 2)
    valid = r[:, 0] > 0
    _drop(valid, "a duplicate (r1 = 0, the ratio r2 / r1 is undefined)")
    log_mu = torch.full_like(r[:, 0], math.nan)
    log_mu[valid] = torch.log(r[valid, 1] / r[valid, 0])
    lm = torch.sort(log_mu[valid]).values
    N = lm.numel()
    if N < 3:
        raise ValueError(f"TwoNN needs at least 3 points without duplicates, got {N}")
    keep = min(max(int(math.floor(N * (1.0 - discard_fraction))), 2), N - 1)  # F = 1 at the last point: log(0)
    F = torch.arange(1, keep + 1, dtype=torch.float64, device=lm.device) / N
    lx, ly = lm[:keep], -torch.log1p(-F)
    sxx = float((lx * lx).sum())
    if sxx == 0.0:
        raise ValueError("all kept ratios r2 / r1 equal 1 (lattice-like ties): TwoNN is undefined")
    return float((lx * ly).sum()) / sxx, log_mu


def id_twonn(x: torch.Tensor, *, discard_fraction: float = 0.1, n_batches: int = 10,
             generator: torch.Generator | None = None) -> IDEstimate:
    """TwoNN intrinsic dimension (Facco et al. 2017) from the ratios ``mu = r_2 / r_1``.

    The empirical law of ``mu`` is Pareto with exponent ``d``: ``-log(1 - F(mu)) = d log mu``; ``d`` is the
    least-squares slope through the origin after discarding the largest ``discard_fraction`` of ratios
    (as scikit-dimension's ``skdim.id.TwoNN()``, which gives the same number on the same points).

    Parameters
    ----------
    x : Tensor, shape (n, D)
        The points (distances in float64). Duplicates (``r_1 = 0``) are dropped with a warning.
    discard_fraction : float
        In ``[0, 1)``.
    n_batches : int
        Batches for ``stderr`` (0: none); each needs at least 3 points.
    generator : torch.Generator, optional
        Assigns the points to the batches.

    Returns
    -------
    IDEstimate
        ``statistic``: per-point ``log mu`` (NaN for dropped duplicates); ``stderr``: batch means, as in
        :func:`id_mle`.

    References
    ----------
    Facco, d'Errico, Rodriguez, Laio, "Estimating the intrinsic dimension of datasets by a minimal
    neighborhood information", Scientific Reports 7, 12140 (2017), eq. (4)-(5).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2000, 2, generator=g, dtype=torch.float64) @ torch.eye(2, 6, dtype=torch.float64)
    >>> id_twonn(x).dimension
    2
    """
    x = _check_knn_args(x, n_batches, generator)
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    if x.shape[0] < 3:
        raise ValueError(f"x needs at least 3 points, got {x.shape[0]}")
    est, log_mu = _twonn_fit(x, discard_fraction)
    se = _batch_stderr(x, lambda z: _twonn_fit(z, discard_fraction)[0], n_batches=n_batches, generator=generator,
                       min_points=3)
    return IDEstimate(int(round(est)), est, log_mu, None, "twonn", stderr=se, dof=float(max(n_batches - 1, 1)))
