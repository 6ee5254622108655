"""Exact velocity, score and denoisers for Gaussian-mixture endpoints (the ground truth of the tests).

For independent x0 ~ N(m0, C0), x1 ~ N(m1, C1), x_t is Gaussian with mean m_t = alpha m0 + beta m1 and
covariance C_t = alpha^2 C0 + beta^2 C1 + gamma^2 I, and

    b(t, x) = alpha' m0 + beta' m1 + (alpha alpha' C0 + beta beta' C1 + gamma gamma' I) C_t^{-1} (x - m_t),
    s(t, x) = -C_t^{-1} (x - m_t).

For mixtures every x0 component is paired with every x1 component and the fields are the
responsibility-weighted sums, with weights proportional to pi_i pi_j N(x; m_t^{ij}, C_t^{ij}).
For the mirror path x0 = x1, so x_t = (alpha + beta) x1 + gamma z.

Conditional ground truth: when the target's components carry class labels and x0 is independent of
the class, the law of (x0, x1) given class k is source x (class-k sub-mixture), so the exact
conditional fields are the fields above for the sub-mixture (weights renormalised within the class),
and the unconditional ones those of the whole mixture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..datasets.toy2d import GaussianMixture
from .fields import eta_from_score
from .paths import Interpolant, _as_time

__all__ = ["ConditionalExactFields", "ExactFields", "conditional_exact_fields", "exact_fields"]


def _params(gm: GaussianMixture, dtype: torch.dtype, device: torch.device):
    """``(weights, means, covariances)`` of ``gm`` in ``dtype`` on ``device`` (weights renormalised there)."""
    w = gm.weights.to(dtype=dtype, device=device)
    return w / w.sum(), gm.means.to(dtype=dtype, device=device), gm.covariances.to(dtype=dtype, device=device)


@dataclass(frozen=True, slots=True)
class ExactFields:
    """Closed-form fields of an interpolant between two Gaussian mixtures.

    Use :func:`exact_fields` to build one. All methods take ``t`` of shape (n,) (or a float) and
    ``x`` of shape (n, d), and return tensors in ``x``'s dtype.
    """

    interpolant: Interpolant
    source: GaussianMixture
    target: GaussianMixture

    def _components(self, t: torch.Tensor, dtype: torch.dtype):
        """Per-pair (weights (P,), m_t (n,P,d), C_t (n,P,d,d), Cdot (n,P,d,d), mdot (n,P,d),
        and the per-pair pieces used by the denoisers)."""
        I = self.interpolant
        # the raw parameters only: GaussianMixture.to would re-validate and re-factorise on every call
        src_w, src_m, src_c = _params(self.source, dtype, t.device)
        tgt_w, tgt_m, tgt_c = _params(self.target, dtype, t.device)
        d = self.target.dim
        eye = torch.eye(d, dtype=dtype, device=t.device)
        tc = t[:, None, None, None]
        a, b, g2 = I.alpha(tc), I.beta(tc), I.gamma(tc) ** 2
        da, db, ggd = I.dalpha(tc), I.dbeta(tc), I.gamma_dgamma(tc)
        if I.mirror:
            s, ds = a + b, da + db
            w = tgt_w
            m1, C1 = tgt_m, tgt_c
            mt = s[..., 0] * m1[None]
            Ct = s**2 * C1[None] + g2 * eye
            K = s * ds * C1[None] + ggd * eye
            mdot = ds[..., 0] * m1[None]
            return w, mt, Ct, K, mdot
        k0, k1 = src_m.shape[0], tgt_m.shape[0]
        w = (src_w[:, None] * tgt_w[None, :]).reshape(-1)
        m0 = src_m[:, None, :].expand(k0, k1, d).reshape(-1, d)[None]
        m1 = tgt_m[None, :, :].expand(k0, k1, d).reshape(-1, d)[None]
        C0 = src_c[:, None].expand(k0, k1, d, d).reshape(-1, d, d)[None]
        C1 = tgt_c[None, :].expand(k0, k1, d, d).reshape(-1, d, d)[None]
        mt = a[..., 0] * m0 + b[..., 0] * m1
        Ct = a**2 * C0 + b**2 * C1 + g2 * eye
        K = a * da * C0 + b * db * C1 + ggd * eye
        mdot = da[..., 0] * m0 + db[..., 0] * m1
        return w, mt, Ct, K, mdot

    def _prep(self, t, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.target.dim:
            raise ValueError(f"x must have shape (n, {self.target.dim}), got {getattr(x, 'shape', None)}")
        tt = _as_time(t, x, x.shape[0])
        # samplers call with one common time: factorise the P covariances once, not n times
        common = bool((tt == tt[0]).all())
        w, mt, Ct, K, mdot = self._components(tt[:1] if common else tt, x.dtype)
        L = torch.linalg.cholesky(Ct)
        diff = x[:, None, :] - mt  # (n, P, d)
        if common:
            Linv = torch.linalg.solve_triangular(L[0], torch.eye(x.shape[1], dtype=x.dtype, device=x.device),
                                                 upper=False)  # (P, d, d)
            half = torch.einsum("pij,npj->npi", Linv, diff)
            sol = torch.einsum("pji,npj->npi", Linv, half)  # C_t^{-1} (x - m_t)
        else:
            sol = torch.cholesky_solve(diff[..., None], L)[..., 0]
            half = torch.linalg.solve_triangular(L, diff[..., None], upper=False)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        d = x.shape[1]
        logc = torch.log(w)[None] - 0.5 * ((half**2).sum(-1) + logdet + d * math.log(2 * math.pi))
        return logc, sol, K, mdot, tt

    def log_prob(self, t, x: torch.Tensor) -> torch.Tensor:
        """log rho_t(x), shape (n,)."""
        logc, *_ = self._prep(t, x)
        return torch.logsumexp(logc, 1)

    def velocity(self, t, x: torch.Tensor) -> torch.Tensor:
        """The velocity b(t, x) = E[alpha' x0 + beta' x1 + gamma' z | x_t = x], shape (n, d)."""
        return self.velocity_and_score(t, x)[0]

    def velocity_and_score(self, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(velocity(t, x), score(t, x))`` from one factorisation of the covariances C_t (what an
        SDE step needs: calling the two separately factorises them twice)."""
        logc, sol, K, mdot, _ = self._prep(t, x)
        resp = torch.softmax(logc, 1)[..., None]
        bij = mdot + torch.einsum("npij,npj->npi", K.expand(x.shape[0], -1, -1, -1), sol) if K.shape[0] > 1 \
            else mdot + torch.einsum("pij,npj->npi", K[0], sol)
        return (resp * bij).sum(1), -(resp * sol).sum(1)

    def score(self, t, x: torch.Tensor) -> torch.Tensor:
        """The score grad log rho_t(x), shape (n, d)."""
        logc, sol, *_ = self._prep(t, x)
        resp = torch.softmax(logc, 1)[..., None]
        return -(resp * sol).sum(1)

    def eta(self, t, x: torch.Tensor) -> torch.Tensor:
        """The denoiser, shape (n, d), with the convention of :func:`~genstat.interpolants.score_from_eta`:
        ``E[z | x_t = x] = -gamma(t) s(t, x)`` on a path with noise; on a noise-free one-sided path the
        latent x0 ~ N(0, I) is the noise and ``eta = E[x0 | x_t = x] = -alpha(t) s(t, x)``.

        Raises
        ------
        ValueError
            On a noise-free two-sided path (no Gaussian latent: eta is not defined).
        """
        I = self.interpolant
        if not (I.has_noise or I.one_sided):
            raise ValueError("eta needs a noise gamma or a one-sided path (this path has neither)")
        tt = _as_time(t, x, x.shape[0])
        return eta_from_score(I, tt, self.score(tt, x))

    def marginal(self, t: float) -> GaussianMixture:
        """The law of x_t as a :class:`~genstat.datasets.GaussianMixture`."""
        tt = torch.full((1,), float(t), dtype=self.target.means.dtype)
        w, mt, Ct, _, _ = self._components(tt, tt.dtype)
        return GaussianMixture(w, mt[0], Ct[0])

    def __call__(self, t, x: torch.Tensor) -> torch.Tensor:
        return self.velocity(t, x)


def exact_fields(interpolant: Interpolant, source: GaussianMixture, target: GaussianMixture) -> ExactFields:
    """Exact b, s, eta and log rho_t for independent Gaussian-mixture endpoints.

    Parameters
    ----------
    interpolant : Interpolant
    source, target : GaussianMixture
        Laws of x0 and x1 (independent). For one-sided paths the source should be N(0, I); for the
        mirror path the source is ignored (x0 = x1).

    Returns
    -------
    ExactFields
        ``velocity(t, x)``, ``score(t, x)``, ``eta(t, x)``, ``log_prob(t, x)``, ``marginal(t)``.

    References
    ----------
    Albergo, Boffi, Vanden-Eijnden (2023), Section 3.1 (Gaussian mixtures), eqs. (2.10), (2.13).

    Examples
    --------
    >>> import torch
    >>> from genstat.datasets import GaussianMixture
    >>> g = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
    ...                     torch.ones(1, dtype=torch.float64))
    >>> f = exact_fields(Interpolant("linear", "none"), g, g)
    >>> f.velocity(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)).shape
    torch.Size([2, 2])
    """
    if not isinstance(interpolant, Interpolant):
        raise TypeError(f"interpolant must be an Interpolant, got {type(interpolant).__name__}")
    for name, g in (("source", source), ("target", target)):
        if not isinstance(g, GaussianMixture):
            raise TypeError(f"{name} must be a GaussianMixture, got {type(g).__name__}")
    if source.dim != target.dim:
        raise ValueError(f"source and target dimensions differ: {source.dim} vs {target.dim}")
    return ExactFields(interpolant, source, target)


@dataclass(frozen=True, slots=True)
class ConditionalExactFields:
    """Exact class-conditional fields ``b(t, x, c)`` of an interpolant to a labelled Gaussian mixture.

    Use :func:`conditional_exact_fields` to build one. ``c`` is an integer tensor of shape (n,) (or an
    int for all rows) with labels ``0..n_classes-1`` or ``NULL_LABEL`` (-1): row i gets the field of
    class ``c[i]``'s sub-mixture, or of the whole mixture for -1. Every method groups the rows by
    label (one factorisation per class present).

    Attributes
    ----------
    unconditional : ExactFields
        Fields of the whole target mixture.
    classes : tuple of ExactFields
        ``classes[k]``: fields of the class-k sub-mixture.
    labels : Tensor, shape (K,)
        Class of each target component.
    class_weights : Tensor, shape (n_classes,)
        P(class = k): the summed weights of its components.
    """

    unconditional: ExactFields
    classes: tuple[ExactFields, ...]
    labels: torch.Tensor
    class_weights: torch.Tensor

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def given(self, c: int) -> ExactFields:
        """The fields of class ``c`` (``-1``: the unconditional fields)."""
        if isinstance(c, bool) or not isinstance(c, int) or not -1 <= c < self.n_classes:
            raise ValueError(f"c must be an int in -1..{self.n_classes - 1}, got {c!r}")
        return self.unconditional if c == -1 else self.classes[c]

    def _grouped(self, name: str, t, x: torch.Tensor, c):
        """``ExactFields.<name>`` of each row's class, rows grouped by label."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(f"x must have shape (n, {self.unconditional.target.dim}), got "
                             f"{getattr(x, 'shape', None)}")
        n = x.shape[0]
        if isinstance(c, int) and not isinstance(c, bool):
            c = torch.full((n,), c, dtype=torch.int64)
        if not isinstance(c, torch.Tensor) or c.is_floating_point() or c.dtype == torch.bool or c.shape != (n,):
            raise ValueError(f"c must be an int or an integer tensor of shape ({n},), got "
                             f"{getattr(c, 'dtype', type(c).__name__)} of shape {tuple(getattr(c, 'shape', ()))}")
        c = c.to(x.device)
        if n == 0:
            return getattr(self.unconditional, name)(t, x)
        if int(c.min()) < -1 or int(c.max()) >= self.n_classes:
            raise ValueError(f"c must hold labels in 0..{self.n_classes - 1} or -1 (null), got values in "
                             f"[{int(c.min())}, {int(c.max())}]")
        tt = _as_time(t, x, n)
        groups = [(k, (c == k).nonzero()[:, 0]) for k in torch.unique(c).tolist()]
        if len(groups) == 1:
            return getattr(self.given(groups[0][0]), name)(tt, x)
        outs = None
        for k, rows in groups:
            res = getattr(self.given(k), name)(tt[rows], x[rows])
            res = res if isinstance(res, tuple) else (res,)
            if outs is None:
                outs = tuple(r.new_empty((n, *r.shape[1:])) for r in res)
            for o, r in zip(outs, res):
                o[rows] = r
        return outs if len(outs) > 1 else outs[0]

    def velocity(self, t, x: torch.Tensor, c) -> torch.Tensor:
        """``b(t, x | c)``, shape (n, d)."""
        return self._grouped("velocity", t, x, c)

    def score(self, t, x: torch.Tensor, c) -> torch.Tensor:
        """``grad log rho_t(x | c)``, shape (n, d)."""
        return self._grouped("score", t, x, c)

    def velocity_and_score(self, t, x: torch.Tensor, c) -> tuple[torch.Tensor, torch.Tensor]:
        """``(velocity(t, x, c), score(t, x, c))`` from one factorisation per class."""
        return self._grouped("velocity_and_score", t, x, c)

    def log_prob(self, t, x: torch.Tensor, c) -> torch.Tensor:
        """``log rho_t(x | c)``, shape (n,)."""
        return self._grouped("log_prob", t, x, c)

    def __call__(self, t, x: torch.Tensor, c) -> torch.Tensor:
        return self.velocity(t, x, c)


def conditional_exact_fields(interpolant: Interpolant, source: GaussianMixture, target: GaussianMixture,
                             labels: torch.Tensor) -> ConditionalExactFields:
    """Exact class-conditional fields for a target mixture whose components carry class labels.

    With x0 ~ ``source`` independent of the class and x1 | class k ~ the class-k sub-mixture
    (component weights renormalised within the class), the conditional velocity, score and density
    given class k are those of :func:`exact_fields` on that sub-mixture, and the unconditional ones
    (label -1) those of the whole mixture. These are what a field trained with label dropout
    estimates, and the ground truth of the guidance tests.

    Parameters
    ----------
    interpolant : Interpolant
    source, target : GaussianMixture
    labels : Tensor, shape (K,)
        Integer class of each target component; the classes are ``0..labels.max()`` and each must own
        at least one component.

    Returns
    -------
    ConditionalExactFields

    References
    ----------
    Albergo, Boffi, Vanden-Eijnden (2023), Section 3.1; Ho & Salimans (2022), Zheng et al. (2023)
    for the conditional/unconditional pair that guidance combines.

    Examples
    --------
    >>> import torch
    >>> from genstat.datasets import GaussianMixture
    >>> tgt = GaussianMixture(torch.ones(2), torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), torch.ones(2))
    >>> src = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.ones(1))
    >>> F = conditional_exact_fields(Interpolant("linear", "none"), src, tgt, torch.tensor([0, 1]))
    >>> F.velocity(0.0, torch.zeros(2, 2), torch.tensor([0, 1]))
    tensor([[-3.,  0.],
            [ 3.,  0.]])
    """
    full = exact_fields(interpolant, source, target)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
    k = target.n_components
    if labels.shape != (k,):
        raise ValueError(f"labels must have shape ({k},) (one class per target component), got {tuple(labels.shape)}")
    labels = labels.to(torch.int64).cpu()
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    n_classes = int(labels.max()) + 1
    missing = sorted(set(range(n_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"labels must use every class 0..{n_classes - 1}; classes {missing} have no component")
    classes, weights = [], []
    w = target.weights
    for j in range(n_classes):
        m = (labels == j).to(target.means.device)
        weights.append(w[m].sum())
        sub = GaussianMixture(w[m], target.means[m], target.covariances[m])
        classes.append(exact_fields(interpolant, source, sub))
    return ConditionalExactFields(full, tuple(classes), labels, torch.stack(weights))
