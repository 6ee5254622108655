"""Gaussian-mixture auxiliary densities, their cross-entropy fits, and log-densities of the inputs.

Everything here works in log space and in float64: the auxiliary density of expectation ``j`` is a
mixture of ``c`` Gaussians (``c = 1`` for ``family="gaussian"``, ``c = 2`` for ``"mixture2"``), and
the sampling density ``g_alpha = (1 - delta) sum_j alpha_j g_j + delta fbar`` is evaluated with
``logsumexp``. Internal module: the public API is in :mod:`estimators.importance.aiscv`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from genstat.mc import sample_distribution

__all__ = ["GaussianFamily", "InputSet", "fit_cross_entropy", "DEFAULT_COV_FLOOR"]

#: relative covariance floor: ``cov_floor * diag(pooled sample variance)`` is added to every fit
DEFAULT_COV_FLOOR = 1e-6
_LOG2PI = math.log(2.0 * math.pi)


def draw(dist: torch.distributions.Distribution, n: int, generator: torch.Generator) -> torch.Tensor:
    """Sample ``n`` points from ``dist`` with an explicit generator (``sample_with`` if it has one)."""
    own = getattr(dist, "sample_with", None)
    if callable(own):
        return own(n, generator)
    return sample_distribution(dist, n, generator)


def safe_log_prob(dist: torch.distributions.Distribution, x: torch.Tensor) -> torch.Tensor:
    """``dist.log_prob(x)`` with ``-inf`` (not NaN or an exception) outside the support."""
    try:
        inside = dist.support.check(x)
    except NotImplementedError:
        inside = None
    if inside is None or bool(inside.all()):
        return dist.log_prob(x)
    ev = len(dist.event_shape)
    shape = torch.broadcast_shapes(x.shape, dist.batch_shape + dist.event_shape)
    xb = x.expand(shape)
    fill = dist.mean.to(x.dtype).expand(shape)
    m = inside.expand(shape[: len(shape) - ev])
    mx = m.reshape(m.shape + (1,) * ev).expand(shape)
    lp = dist.log_prob(torch.where(mx, xb, fill))
    return torch.where(m, lp, torch.full_like(lp, -math.inf))


class InputSet:
    """The J input densities f_j: one shared distribution, a batched one (batch_shape (J,)) or a list.

    ``log_prob(x)`` returns (n, J) float64 (a shared input gives (n, 1), broadcast by the caller);
    ``log_mean(x)`` is the log of the equal mixture ``fbar = (1/J) sum_j f_j``; ``sample_mean`` draws
    from ``fbar`` (the shared input itself when there is one).
    """

    def __init__(self, inputs, n_expectations: int | None = None):
        D = torch.distributions
        if isinstance(inputs, D.Distribution):
            if len(inputs.batch_shape) == 0:
                self.kind, self.dists, self.J = "shared", [inputs], None
            elif len(inputs.batch_shape) == 1:
                self.kind, self.dists, self.J = "batched", [inputs], int(inputs.batch_shape[0])
            else:
                raise ValueError(
                    f"inputs must have batch_shape () or (J,), got {tuple(inputs.batch_shape)}"
                )
            ev = inputs.event_shape
        elif isinstance(inputs, (list, tuple)) and len(inputs) > 0:
            for i, d in enumerate(inputs):
                if not isinstance(d, D.Distribution):
                    raise TypeError(f"inputs[{i}] must be a torch Distribution, got {type(d).__name__}")
                if d.batch_shape != () or d.event_shape != inputs[0].event_shape:
                    raise ValueError(
                        f"inputs[{i}] must have batch_shape () and event_shape {tuple(inputs[0].event_shape)}, "
                        f"got {tuple(d.batch_shape)} and {tuple(d.event_shape)}"
                    )
            self.kind, self.dists, self.J = "list", list(inputs), len(inputs)
            ev = inputs[0].event_shape
        else:
            raise TypeError(
                "inputs must be a torch.distributions.Distribution or a non-empty list of them, "
                f"got {type(inputs).__name__}"
            )
        if len(ev) > 1:
            raise ValueError(f"inputs must have event_shape () or (d,), got {tuple(ev)}")
        self.univariate = len(ev) == 0
        self.d = 1 if self.univariate else int(ev[0])
        if n_expectations is not None and self.J is not None and self.J != n_expectations:
            raise ValueError(f"inputs describe {self.J} densities but phis returns {n_expectations} columns")

    @property
    def shared(self) -> bool:
        return self.kind == "shared"

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.univariate else x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(n, J) float64 log-densities (n, 1) for a shared input; x is (n, d)."""
        xx = self._x(x)
        if self.kind == "shared":
            out = safe_log_prob(self.dists[0], xx)[:, None]
        elif self.kind == "batched":
            xb = xx[:, None] if self.univariate else xx[:, None, :]
            out = safe_log_prob(self.dists[0], xb)
        else:
            out = torch.stack([safe_log_prob(d, xx) for d in self.dists], 1)
        out = out.to(torch.float64)
        if bool(torch.isnan(out).any()):
            raise ValueError("an input distribution returned NaN log-densities")
        return out

    def log_mean(self, x: torch.Tensor, logf: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) log of the equal mixture of the inputs."""
        lf = self.log_prob(x) if logf is None else logf
        return torch.logsumexp(lf, 1) - math.log(lf.shape[1])

    def sample_mean(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d) draws from the equal mixture of the inputs (from the shared input if there is one)."""
        if self.kind == "shared":
            x = draw(self.dists[0], n, generator)
            return x[:, None] if self.univariate else x
        J = self.J
        counts = torch.bincount(
            torch.randint(0, J, (n,), generator=generator, device=generator.device), minlength=J
        )
        if self.kind == "batched":
            m = int(counts.max())
            xs = draw(self.dists[0], max(m, 1), generator)  # (m, J, d) or (m, J)
            if self.univariate:
                xs = xs[..., None]
            keep = torch.arange(max(m, 1), device=xs.device)[:, None] < counts.to(xs.device)[None, :]
            return xs.permute(1, 0, 2)[keep.T]
        parts = []
        for j, c in enumerate(counts.tolist()):
            if c:
                xj = draw(self.dists[j], c, generator)
                parts.append(xj[:, None] if self.univariate else xj)
        return torch.cat(parts, 0)

    @property
    def dtype(self) -> torch.dtype:
        m = self.dists[0].mean
        return m.dtype if m.is_floating_point() else torch.get_default_dtype()


@dataclass(frozen=True, slots=True)
class GaussianFamily:
    """J auxiliary densities, each a mixture of ``c`` Gaussians: means (J, c, d), Cholesky factors
    (J, c, d, d), within-mixture log-weights (J, c)."""

    mean: torch.Tensor
    scale_tril: torch.Tensor
    log_pi: torch.Tensor

    @property
    def J(self) -> int:
        return self.mean.shape[0]

    @property
    def c(self) -> int:
        return self.mean.shape[1]

    def log_prob(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """(n, J) log-densities log g_j(x) of the J auxiliary densities, x of shape (n, d)."""
        J, c, d = self.mean.shape
        mu = self.mean.reshape(J * c, d)
        L = self.scale_tril.reshape(J * c, d, d)
        logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        outs = []
        x = x.to(torch.float64)
        for s in range(0, x.shape[0], chunk):
            xc = x[s : s + chunk]
            diff = (xc[None, :, :] - mu[:, None, :]).transpose(1, 2)  # (Jc, d, n)
            z = torch.linalg.solve_triangular(L, diff, upper=False)
            lp = -0.5 * (z * z).sum(1) - logdet[:, None] - 0.5 * d * _LOG2PI  # (Jc, n)
            lp = lp.T.reshape(-1, J, c) + self.log_pi[None]
            outs.append(torch.logsumexp(lp, -1))
        return torch.cat(outs, 0) if outs else x.new_zeros((0, J))

    def sample(self, comp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw from g_{comp[i]} for each index in ``comp`` (n,): (n, d)."""
        n = comp.shape[0]
        J, c, d = self.mean.shape
        dev = self.mean.device
        if c > 1:
            sub = torch.multinomial(self.log_pi[comp].exp(), 1, replacement=True, generator=generator)[:, 0]
        else:
            sub = torch.zeros(n, dtype=torch.long, device=dev)
        eps = torch.randn(n, d, generator=generator, device=dev, dtype=torch.float64)
        return self.mean[comp, sub] + (self.scale_tril[comp, sub] @ eps[:, :, None])[:, :, 0]


def _chol_with_floor(cov: torch.Tensor, floor_diag: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of ``cov + diag(floor)``, raising the floor until it succeeds."""
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    eye = torch.diag_embed(floor_diag.expand(cov.shape[:-1]))
    for k in range(8):
        L, info = torch.linalg.cholesky_ex(cov + eye * (10.0**k))
        if not bool((info != 0).any()):
            return L
    raise ValueError("could not factor a fitted covariance even with a raised floor")


def _weighted_gaussian(x: torch.Tensor, v: torch.Tensor, floor: torch.Tensor):
    """Weighted mean (J, d) and covariance Cholesky (J, d, d) for weight columns v (n, J).

    With few effective points (Kish ESS of the weights) the weighted covariance is shrunk toward the
    pooled sample covariance, ``lam = ess / (ess + d + 1)``: a fit on a handful of points is
    near-singular and would give infinite-variance importance weights.
    """
    d = x.shape[1]
    s = v.sum(0)
    p = v / s
    ess = 1.0 / (p**2).sum(0)
    mu = p.T @ x
    second = torch.einsum("nj,nd,ne->jde", p, x, x)
    cov = second - mu[:, :, None] * mu[:, None, :]
    xc = x - x.mean(0)
    pooled = xc.T @ xc / max(x.shape[0] - 1, 1)
    lam = (ess / (ess + d + 1))[:, None, None]
    cov = lam * cov + (1 - lam) * pooled[None]
    return mu, _chol_with_floor(cov, floor)


def fit_cross_entropy(
    x: torch.Tensor,
    v: torch.Tensor,
    *,
    components: int = 1,
    cov_floor: float = DEFAULT_COV_FLOOR,
    em_steps: int = 30,
) -> GaussianFamily:
    """Cross-entropy fit of J auxiliary densities to the weighted sample (x, v[:, j]).

    Parameters
    ----------
    x : Tensor, shape (n, d)
        Points (all adaptive points so far).
    v : Tensor, shape (n, J)
        Non-negative CE weights ``W_ij phi_j(X_i)`` with ``W_ij = f_j(X_i) / h(X_i)``.
    components : {1, 2}
        One Gaussian (closed-form weighted moments) or a 2-component mixture by weighted EM.
    cov_floor : float
        ``cov_floor * diag(var(x))`` is added to each covariance (narrow fits give heavy weights).

    Returns
    -------
    GaussianFamily
    """
    x = x.to(torch.float64)
    v = v.to(torch.float64)
    n, d = x.shape
    J = v.shape[1]
    scale = x.var(0, unbiased=False).clamp_min(1e-300) if n > 1 else torch.ones(d, dtype=torch.float64)
    floor = cov_floor * scale + 1e-300
    dead = v.sum(0) <= 0
    if bool(dead.any()):
        idx = torch.nonzero(dead)[:, 0].tolist()
        warnings.warn(
            f"phi_j was 0 at every adaptive point for expectation(s) {idx[:10]}; their auxiliary "
            "densities are fitted to the unweighted sample (the event may be rare: raise the budget)",
            RuntimeWarning,
            stacklevel=3,
        )
        v = v.clone()
        v[:, dead] = 1.0
    mu, L = _weighted_gaussian(x, v, floor)
    if components == 1:
        return GaussianFamily(mu[:, None], L[:, None], torch.zeros(J, 1, dtype=torch.float64, device=x.device))
    if components != 2:
        raise ValueError(f"components must be 1 or 2, got {components}")
    # split each Gaussian fit along its principal axis, then weighted EM (vectorised over j)
    cov = L @ L.transpose(-1, -2)
    evals, evecs = torch.linalg.eigh(cov)
    shift = evecs[..., -1] * evals[..., -1].clamp_min(0).sqrt()[:, None]
    means = torch.stack([mu - shift, mu + shift], 1)  # (J, 2, d)
    Ls = torch.stack([L, L], 1)
    log_pi = torch.full((J, 2), -math.log(2.0), dtype=torch.float64, device=x.device)
    p = v / v.sum(0)
    xc = x - x.mean(0)
    pooled = xc.T @ xc / max(n - 1, 1)
    for _ in range(em_steps):
        fam = GaussianFamily(means, Ls, log_pi)
        lp = _component_log_prob(fam, x) + log_pi[None]  # (n, J, 2)
        r = torch.softmax(lp, -1) * p[:, :, None]  # responsibilities times weights
        rs = r.sum(0).clamp_min(1e-300)  # (J, 2)
        log_pi = torch.log(rs / rs.sum(-1, keepdim=True)).clamp_min(-30.0)
        q = r / rs[None]
        means = torch.einsum("njc,nd->jcd", q, x)
        second = torch.einsum("njc,nd,ne->jcde", q, x, x)
        cov = second - means[..., :, None] * means[..., None, :]
        lam = (1.0 / (q**2).sum(0))  # Kish ESS of each component's weights
        lam = (lam / (lam + d + 1))[..., None, None]
        Ls = _chol_with_floor(lam * cov + (1 - lam) * pooled, floor)
    return GaussianFamily(means, Ls, log_pi - torch.logsumexp(log_pi, -1, keepdim=True))


def _component_log_prob(fam: GaussianFamily, x: torch.Tensor) -> torch.Tensor:
    """(n, J, c) Gaussian log-densities of each mixture component."""
    J, c, d = fam.mean.shape
    mu = fam.mean.reshape(J * c, d)
    L = fam.scale_tril.reshape(J * c, d, d)
    logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    diff = (x[None] - mu[:, None]).transpose(1, 2)
    z = torch.linalg.solve_triangular(L, diff, upper=False)
    lp = -0.5 * (z * z).sum(1) - logdet[:, None] - 0.5 * d * _LOG2PI
    return lp.T.reshape(-1, J, c)
