"""The generalized Gaussian distribution GGD(mu, alpha, beta) as a ``torch.distributions.Distribution``.

Density ``p(x) = beta / (2 alpha Gamma(1/beta)) exp(-(|x - mu| / alpha)^beta)`` (Kim et al. 2024, eq. 1;
``scipy.stats.gennorm(beta, loc=mu, scale=alpha)``). ``|x - mu| / alpha = G^(1/beta)`` with
``G ~ Gamma(1/beta, 1)``, which gives the cdf through the regularised incomplete gamma function and the
sampler through gamma variates drawn from an explicit generator.
"""
from __future__ import annotations

import math
from numbers import Number

import torch
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all

__all__ = ["GeneralizedGaussian", "ggd_excess_kurtosis", "gammaincinv"]


def ggd_excess_kurtosis(beta: torch.Tensor | float) -> torch.Tensor:
    """Excess kurtosis ``Gamma(5/b) Gamma(1/b) / Gamma(3/b)^2 - 3`` of a GGD with shape ``beta``.

    Examples
    --------
    >>> round(float(ggd_excess_kurtosis(2.0)), 12)
    0.0
    """
    b = torch.as_tensor(beta, dtype=torch.get_default_dtype() if isinstance(beta, Number) else None)
    lg = torch.lgamma
    return torch.exp(lg(5 / b) + lg(1 / b) - 2 * lg(3 / b)) - 3


_SERIES_TERMS = 20  # u < 1: the k-th series term is below 1/k!, and 1/20! < 5e-19


def _log_p_series(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``log P(a, e^w)`` for ``e^w < 1`` (any ``w < 0``, also ``-inf``) from the power series
    ``P(a, u) = u^a e^-u / Gamma(a + 1) * sum_k u^k / ((a + 1) ... (a + k))``."""
    u = w.exp()
    series = torch.ones_like(u)
    for k in range(_SERIES_TERMS, 0, -1):  # Horner: 1 + u/(a+1) (1 + u/(a+2) (1 + ...))
        series = 1 + u / (a + k) * series
    return a * w - u - torch.lgamma(a + 1) + series.log()


def _log_q_fraction(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``log Q(a, e^w)`` for ``e^w > a + 1`` from Legendre's continued fraction
    ``Q = u^a e^-u / Gamma(a) * 1 / (u + 1 - a - 1 (1 - a) / (u + 3 - a - ...))`` (modified Lentz,
    as in Numerical Recipes' ``gcf``); no underflow however small ``Q`` is."""
    x = w.exp()
    tiny = 1e-300
    b = x + 1 - a
    c = torch.full_like(x, 1 / tiny)
    d = 1 / b
    h = d.clone()
    for i in range(1, 2000):
        an = -i * (i - a)
        b = b + 2
        d = an * d + b
        d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
        c = b + an / c
        c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
        d = 1 / d
        delta = d * c
        h = h * delta
        if bool(((delta - 1).abs() <= 1e-15).all()):
            break
    return -x + a * w - torch.lgamma(a) + h.log()


def _log_gammainc(a: torch.Tensor, w: torch.Tensor, *, upper: bool) -> torch.Tensor:
    """``log P(a, e^w)`` (``log Q`` with ``upper=True``) in float64, accurate in both tails.

    ``u = e^w < 1``: the series; ``u > a + 1``: the continued fraction; in between torch's
    ``gammainc``/``gammaincc``, where neither ``P`` nor ``Q`` underflows. The complement is taken with
    ``log1p(-exp(.))`` only where it is the larger of the two.
    """
    u = w.exp()
    small = w < 0
    big = ~small & (u > a + 1)
    mid = ~small & ~big
    one = torch.ones_like(w)
    lp_small = _log_p_series(a, torch.where(small, w, -one))
    lq_big = _log_q_fraction(a, torch.where(big & torch.isfinite(u), w, (a + 2).log()))
    lq_big = torch.where(torch.isinf(u), torch.full_like(u, -math.inf), lq_big)
    um = torch.where(mid, u, one)
    if upper:
        lq_mid = torch.special.gammaincc(a, um).log()
        return torch.where(small, torch.log1p(-lp_small.exp()), torch.where(big, lq_big, lq_mid))
    lp_mid = torch.special.gammainc(a, um).log()
    return torch.where(small, lp_small, torch.where(big, torch.log1p(-lq_big.exp()), lp_mid))


def _log_gammaincinv(a: torch.Tensor, logp: torch.Tensor, *, upper: bool, max_iter: int = 200) -> torch.Tensor:
    """``w = log u`` solving ``log P(a, u) = logp`` (``log Q(a, u) = logp`` with ``upper=True``), float64.

    ``log P(a, e^w)`` and ``log Q(a, e^w)`` are concave in ``w`` (the log-gamma density ``exp(a w - e^w)``
    is log-concave, and so are its distribution and survival functions), so Newton's method converges
    monotonically: from the left for ``P``, starting at ``(logp + lgamma(a + 1)) / a`` (``P <= u^a / Gamma(a + 1)``),
    and from the right for ``Q``, starting at ``u = 2 (-logp) + 4a + 50`` (a Chernoff bound puts ``Q``
    below the target there).
    """
    if upper:
        w = torch.log(2 * (-logp) + 4 * a + 50)
    else:
        w = (logp + torch.lgamma(a + 1)) / a
    active = torch.isfinite(w)
    eps = torch.finfo(torch.float64).eps
    prev = torch.full_like(w, math.inf)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        wa = torch.where(active, w, torch.zeros_like(w))
        lf = _log_gammainc(a, wa, upper=upper)
        # d log P / dw = u p(u) / P with the gamma density p(u) = u^(a-1) e^-u / Gamma(a)
        slope = torch.exp(a * wa - wa.exp() - torch.lgamma(a) - lf)
        step = (lf - logp) / (-slope if upper else slope)
        step = torch.where(active & torch.isfinite(step), step, torch.zeros_like(step))
        w = w - step
        # converged at a few ulps, or stalled at rounding level (the method switch between the series,
        # torch's functions and the continued fraction leaves ~1e-15 jumps that Newton cannot resolve)
        scale = w.abs().clamp(min=1.0)
        stalled = (step.abs() < 1e-12 * scale) & (step.abs() >= prev.abs())
        active = active & (step.abs() > 4 * eps * scale) & ~stalled
        prev = step
    return w


def gammaincinv(a: torch.Tensor, p: torch.Tensor, *, upper: bool = False) -> torch.Tensor:
    """Inverse of the regularised lower (or upper) incomplete gamma function, elementwise.

    Solves ``P(a, x) = p`` (``Q(a, x) = p`` with ``upper=True``) for ``x``: Newton's method on
    ``log P`` (or ``log Q``) as a function of ``log x``, working with the smaller of ``p`` and
    ``1 - p`` (whichever is exact) so that neither tail loses relative accuracy and small ``x`` has
    no floor. Computed in float64; returned in the dtype of ``p``.

    Examples
    --------
    >>> a = torch.tensor([0.5, 2.0], dtype=torch.float64)
    >>> x = gammaincinv(a, torch.tensor([0.3, 0.7], dtype=torch.float64))
    >>> torch.special.gammainc(a, x)
    tensor([0.3000, 0.7000], dtype=torch.float64)
    """
    a, p = torch.broadcast_tensors(torch.as_tensor(a, dtype=p.dtype, device=p.device), p)
    a64, p64 = a.double(), p.double()
    # solve for whichever of P and Q is <= 1/2: that one is exact (1 - p is exact for p in [1/2, 1])
    given = p64 <= 0.5
    target = torch.where(given, p64, 1 - p64)
    solve_lower = given ^ upper
    safe = torch.where((target > 0) & (target <= 0.5), target, torch.full_like(target, 0.25)).log()
    quarter = torch.full_like(safe, math.log(0.25))
    w_lo = _log_gammaincinv(a64, torch.where(solve_lower, safe, quarter), upper=False)
    w_up = _log_gammaincinv(a64, torch.where(solve_lower, quarter, safe), upper=True)
    x = torch.where(solve_lower, w_lo, w_up).exp()
    # P = 0 (Q = 1) at x = 0 and P = 1 (Q = 0) at x = inf
    lower_p = 1 - p64 if upper else p64
    x = torch.where(lower_p == 0, torch.zeros_like(x), x)
    x = torch.where(lower_p == 1, torch.full_like(x, math.inf), x)
    x = torch.where(torch.isnan(p64) | (p64 < 0) | (p64 > 1), torch.full_like(x, math.nan), x)
    return x.to(p.dtype)


class GeneralizedGaussian(Distribution):
    r"""Generalized Gaussian (exponential power) distribution ``GGD(loc, scale, beta)``.

    ``p(x) = beta / (2 scale Gamma(1/beta)) exp(-(|x - loc| / scale)^beta)``; ``beta = 2`` is
    ``Normal(loc, scale / sqrt 2)``, ``beta = 1`` is ``Laplace(loc, scale)``. Equal to
    ``scipy.stats.gennorm(beta, loc=loc, scale=scale)``.

    Parameters
    ----------
    loc, scale, beta : Tensor or float
        Location ``mu``, scale ``alpha > 0`` and shape ``beta > 0`` (broadcast together).
    validate_args : bool, optional
        Check the parameters (default: ``True``; ``scale <= 0`` or ``beta <= 0`` raise ``ValueError``).

    References
    ----------
    Kim et al., "Generalized Gaussian Temporal Difference Error for Uncertainty-aware Reinforcement
    Learning", arXiv 2408.02295, eq. (1) and Proposition 1 (variance ``alpha^2 Gamma(3/b)/Gamma(1/b)``).

    Examples
    --------
    >>> d = GeneralizedGaussian(0.0, 1.0, torch.tensor(2.0, dtype=torch.float64))
    >>> x = d.sample((4,), generator=torch.Generator().manual_seed(0))
    >>> x.shape, float(d.variance)
    (torch.Size([4]), 0.5)
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "beta": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc, scale, beta, validate_args: bool | None = None):
        # torch.distributions' contract: validate_args=None follows Distribution's global switch
        # (on by default), False skips the checks
        validate = Distribution._validate_args if validate_args is None else bool(validate_args)
        if validate:
            for name, v in (("scale", scale), ("beta", beta)):
                if torch.any(~(torch.as_tensor(v) > 0)):
                    raise ValueError(f"{name} must be positive (and not NaN), got {v!r}")
        self.loc, self.scale, self.beta = broadcast_all(loc, scale, beta)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GeneralizedGaussian, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.beta = self.beta.expand(batch_shape)
        super(GeneralizedGaussian, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # -- moments
    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        b = self.beta
        return self.scale.pow(2) * torch.exp(torch.lgamma(3 / b) - torch.lgamma(1 / b))

    @property
    def excess_kurtosis(self) -> torch.Tensor:
        """``Gamma(5/b) Gamma(1/b) / Gamma(3/b)^2 - 3`` (22.2 at b = 0.5, 3 at 1, 0 at 2, -0.81 at 4)."""
        return ggd_excess_kurtosis(self.beta)

    def entropy(self) -> torch.Tensor:
        b = self.beta
        return 1 / b - torch.log(b) + math.log(2) + torch.log(self.scale) + torch.lgamma(1 / b)

    # -- densities
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        b = self.beta
        z = (value - self.loc).abs() / self.scale
        return torch.log(b) - math.log(2) - torch.log(self.scale) - torch.lgamma(1 / b) - z.pow(b)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """``1/2 + sign(x - loc) P(1/beta, |z|^beta) / 2`` with ``z = (x - loc) / scale``.

        Computed in float64 with ``log u = beta log|z|`` (no underflow of ``|z|^beta`` near the median):
        ``P`` from its power series while ``P <= 1/2``, otherwise the tail ``Q = 1 - P`` from the
        continued fraction, so that both the median region and the tails keep their relative accuracy.
        """
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        d = (value - self.loc).double()
        b = self.beta.double()
        a = 1 / b
        w = b * (d.abs() / self.scale.double()).log()  # log |z|^beta, -inf at the median
        a, w = torch.broadcast_tensors(a, w)
        half_p = 0.5 * _log_gammainc(a, w, upper=False).exp()
        half_q = 0.5 * _log_gammainc(a, w, upper=True).exp()
        central = half_p <= 0.25
        out = torch.where(central, 0.5 + torch.where(d < 0, -half_p, half_p),
                          torch.where(d < 0, half_q, 1 - half_q))
        return out.to(self.loc.dtype)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """Quantile ``loc + sign(q - 1/2) scale u^(1/beta)``, ``P(1/beta, u) = |2q - 1|``.

        ``|2q - 1|`` is formed as ``2 |q - 1/2|`` (exact for ``q`` in [1/4, 3/4]) and the tail probability
        as ``2 min(q, 1 - q)`` (exact elsewhere); whichever is at most 1/2 is inverted in log space
        (:func:`_log_gammaincinv`), so quantiles near the median have no floor for any ``beta`` and the
        result keeps ``cdf(icdf(q)) = q`` to a few ulps. Computed in float64, returned in ``loc``'s dtype.
        """
        q = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        if self._validate_args and torch.any((q < 0) | (q > 1)):
            raise ValueError("icdf value must lie in [0, 1]")
        q64, b = torch.broadcast_tensors(q.double(), self.beta.double())
        a = 1 / b
        central = 2 * (q64 - 0.5).abs()
        tail = 2 * torch.minimum(q64, 1 - q64)
        use_central = central < 0.5
        quarter = torch.full_like(q64, math.log(0.25))
        w_c = _log_gammaincinv(a, torch.where(use_central & (central > 0), central.log(), quarter), upper=False)
        w_t = _log_gammaincinv(a, torch.where(~use_central & (tail > 0), tail.log(), quarter), upper=True)
        z = torch.exp(torch.where(use_central, w_c, w_t) / b)
        z = torch.where(central == 0, torch.zeros_like(z), torch.where(tail == 0, torch.full_like(z, math.inf), z))
        z = torch.where(torch.isnan(q64), torch.full_like(z, math.nan), z)
        return self.loc + torch.where(q64 < 0.5, -z, z).to(self.loc.dtype) * self.scale

    # -- sampling
    def sample(self, sample_shape: torch.Size | tuple = torch.Size(), generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Draw samples, from ``generator`` when given (else torch's default generator, as in torch.distributions).

        ``|X - loc| / scale = G^(1/beta)`` with ``G ~ Gamma(1/beta, 1)``, and an independent random sign.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            a = (1 / self.beta).expand(shape).contiguous()
            g = torch._standard_gamma(a, generator=generator)
            s = torch.rand(shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
            sign = torch.where(s < 0.5, -1.0, 1.0).to(self.loc.dtype)
            return self.loc + self.scale * sign * g.pow(1 / self.beta)
