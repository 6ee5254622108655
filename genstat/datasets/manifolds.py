"""Manifolds embedded in R^D with their exact noised scores (issue: gauge).

Each manifold ``M`` carries a data distribution ``p_0`` supported on ``M`` and gives, for every noise
level ``sigma > 0``, the exact score of ``p_sigma = p_0 * N(0, sigma^2 I)`` through Tweedie's formula

    score(x, sigma) = (denoiser(x, sigma) - x) / sigma^2,   denoiser(x, sigma) = E[x_0 | x_0 + sigma eps = x].

* :class:`LinearSubspace` -- ``x_0 = U w``, ``w ~ N(0, diag(tau_i^2))`` (one scale or one per direction):
  ``p_sigma = N(0, U diag(tau_i^2) U^T + sigma^2 I)``, ``score = -U diag(1 / (tau_i^2 + sigma^2)) U^T x - P_N x / sigma^2``
  (REFERENCE.md section 3).
* :class:`Sphere` -- uniform on the radius-``R`` sphere ``S^k`` in a random (k+1)-plane of R^D. With ``y`` the
  component of x in that plane and ``kappa = R |y| / sigma^2`` (von Mises-Fisher integral over ``S^k``),
  ``denoiser = R A_nu(kappa) y / |y|`` where ``A_nu = I_{nu+1} / I_nu`` and ``nu = (k - 1) / 2``.
* :class:`FlatTorus` -- the product of ``k`` circles of radii ``r_i`` in a random 2k-plane (``k = 2``, equal radii
  ``1/sqrt 2``: the Clifford torus in R^4), uniform in the angles. Isotropic noise factorises over the circles'
  planes, so the denoiser is the circle's (``A_0 = I_1 / I_0``) in each plane and 0 off the 2k-plane.
* :class:`SwissRoll` -- scikit-learn's roll ``(t cos t, h, t sin t)``, ``t ~ U[1.5 pi, 4.5 pi]``,
  ``h ~ U[0, 21]``, in a random 3-plane of R^D. The ``h`` posterior is a truncated normal (closed form);
  the ``t`` posterior is computed on a grid fine enough (spacing ``sigma / 2`` in arc length) that the
  quadrature error is far below float64 round-off for the Gaussian kernel.

Every sampler draws only from an explicit ``torch.Generator``; ``Manifold.sample`` has the engine's
signature ``sample(n, generator, device)``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["FlatTorus", "Manifold", "LinearSubspace", "Sphere", "SwissRoll", "make_manifold", "random_frame"]


def random_frame(ambient_dim: int, dim: int, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An orthonormal ``(ambient_dim, dim)`` frame: Haar-random (QR of a Gaussian) or, without
    ``generator``, the first ``dim`` coordinate axes.

    Examples
    --------
    >>> U = random_frame(5, 2, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(U.T @ U, torch.eye(2, dtype=U.dtype))
    True
    """
    if not isinstance(dim, int) or not isinstance(ambient_dim, int) or not 1 <= dim <= ambient_dim:
        raise ValueError(f"need 1 <= dim <= ambient_dim (ints), got dim={dim!r}, ambient_dim={ambient_dim!r}")
    if generator is None:
        return torch.eye(ambient_dim, dim, dtype=dtype)
    g = torch.randn(ambient_dim, dim, generator=generator, dtype=torch.float64, device=generator.device)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))  # Haar measure: fix the sign ambiguity of QR
    return q.to(dtype=dtype, device="cpu")


def _check_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != x.shape[0]):
        raise ValueError(f"sigma must be a float or have shape ({x.shape[0]},), got {tuple(s.shape)}")
    if not bool((s > 0).all()):
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return s.reshape(-1, 1) if s.ndim == 1 else s


class Manifold:
    """Base class: a distribution on a ``dim``-manifold in R^``ambient_dim`` with exact noised scores.

    Subclasses implement :meth:`sample_clean` (points on the manifold) and :meth:`denoiser`.
    """

    dim: int
    ambient_dim: int
    basis: torch.Tensor  # (ambient_dim, m): orthonormal frame of the plane holding the manifold
    name: str = "manifold"

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.ambient_dim:
            raise ValueError(f"x must have shape (n, {self.ambient_dim}), got {tuple(x.shape)}")

    def _frame(self, x: torch.Tensor) -> torch.Tensor:
        return self.basis.to(dtype=x.dtype, device=x.device)

    def sample_clean(self, n: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator, device: str | torch.device | None = None, *,
               noise: float = 0.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Draw ``n`` points of ``p_noise`` (``noise=0``: on the manifold), shape (n, ambient_dim).

        Examples
        --------
        >>> m = LinearSubspace(2, 5, generator=torch.Generator().manual_seed(0))
        >>> m.sample(4, torch.Generator().manual_seed(1)).shape
        torch.Size([4, 5])
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        x = self.sample_clean(n, generator, dtype)
        if noise > 0:
            x = x + noise * torch.randn(x.shape, generator=generator, dtype=dtype, device=generator.device)
        return x.to(device=device if device is not None else generator.device)

    def denoiser(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Posterior mean ``E[x_0 | x]`` under ``x = x_0 + sigma eps``, shape (n, ambient_dim)."""
        raise NotImplementedError

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact score ``grad log p_sigma(x)`` (Tweedie), shape (n, ambient_dim).

        ``sigma`` is a float or a tensor of shape (n,); the output keeps ``x``'s dtype and device.
        Sampling with ``noise=eta`` and scoring at ``sigma`` corresponds to the total level
        ``sqrt(sigma^2 + eta^2)``.
        """
        self._check_x(x)
        s = _check_sigma(sigma, x)
        return (self.denoiser(x, sigma) - x) / s**2

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, ambient_dim={self.ambient_dim})"


class LinearSubspace(Manifold):
    """``x_0 = U w`` with ``w ~ N(0, diag(scale_i^2))`` and ``U`` an orthonormal (ambient_dim, dim) frame.

    Parameters
    ----------
    dim, ambient_dim : int
        Intrinsic and ambient dimension.
    scale : float or sequence of ``dim`` floats
        Standard deviation ``tau`` along the subspace, one for all directions or one per direction
        (an anisotropic subspace: its smallest scale sets the noise level below which the tangent
        directions still stand out).
    generator : torch.Generator, optional
        Draws a Haar-random frame; without it the subspace is spanned by the first ``dim`` axes.

    Examples
    --------
    >>> m = LinearSubspace(5, 20, generator=torch.Generator().manual_seed(0))
    >>> x = m.sample(3, torch.Generator().manual_seed(1), noise=0.1)
    >>> m.score(x, 0.1).shape
    torch.Size([3, 20])
    >>> LinearSubspace(2, 4, scale=[1.0, 0.1]).scales.tolist()
    [1.0, 0.1]
    """

    name = "linear"

    def __init__(self, dim: int, ambient_dim: int, *, scale: float | list[float] = 1.0,
                 generator: torch.Generator | None = None):
        scales = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
        if scales.numel() not in (1, dim) or not bool(torch.isfinite(scales).all()) or not bool((scales > 0).all()):
            raise ValueError(f"scale must be a positive float or {dim} positive floats, got {scale!r}")
        self.basis = random_frame(ambient_dim, dim, generator=generator)
        self.dim, self.ambient_dim = dim, ambient_dim
        self.scales = scales.expand(dim).clone()

    @property
    def projection(self) -> torch.Tensor:
        """Orthogonal projection ``P_T = U U^T`` onto the subspace (float64)."""
        return self.basis @ self.basis.T

    def sample_clean(self, n, generator, dtype):
        w = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=generator.device)
        w = w * self.scales.to(dtype=dtype, device=generator.device)
        return w @ self.basis.to(dtype=dtype, device=generator.device).T

    def denoiser(self, x, sigma):
        self._check_x(x)
        s = _check_sigma(sigma, x)
        U = self._frame(x)
        tau2 = self.scales.to(dtype=x.dtype, device=x.device) ** 2
        return ((x @ U) * (tau2 / (tau2 + s**2))) @ U.T

    def covariance(self, sigma: float) -> torch.Tensor:
        """Covariance ``U diag(tau_i^2) U^T + sigma^2 I`` of ``p_sigma`` (float64)."""
        return (self.basis * self.scales**2) @ self.basis.T + sigma**2 * torch.eye(self.ambient_dim, dtype=torch.float64)


def _amos_start(nu: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Amos (1974): x / (nu + 1/2 + sqrt((nu + 3/2)^2 + x^2)) <= A_nu(x) <= x / (nu + 1/2 + sqrt((nu + 1/2)^2 + x^2)).
    # Returns their midpoint and its worst-case relative error.
    lo = x / (nu + 0.5 + torch.sqrt((nu + 1.5) ** 2 + x * x))
    hi = x / (nu + 0.5 + torch.sqrt((nu + 0.5) ** 2 + x * x))
    return 0.5 * (lo + hi), (hi - lo) / (hi + lo).clamp_min(torch.finfo(x.dtype).tiny)


def _recurrence_depth(nu: float, x: torch.Tensor, tol: float) -> int:
    # The backward recurrence A_n = x / (2(n+1) + x A_{n+1}) is stable: a relative error in A_{n+1} reaches
    # A_n multiplied by A_n A_{n+1} < 1. Start at order nu + m from Amos's midpoint, with the smallest m whose
    # start error times that product (bounded with the Amos values) is below tol for every x.
    x = x.detach()
    log_gain = torch.zeros_like(x)
    for m in range(1_000_000):
        a, rel = _amos_start(nu + m, x)
        if bool((torch.log(rel.clamp_min(1e-300)) + log_gain < math.log(tol)).all()):
            return m
        log_gain = log_gain + 2.0 * torch.log(a.clamp_min(1e-300))
    raise RuntimeError("bessel_ratio: recurrence depth did not converge")  # unreachable: the gain is < 1


def _hankel_series(nu: float, x: torch.Tensor, terms: int = 30) -> torch.Tensor:
    # sqrt(2 pi x) e^{-x} I_nu(x) ~ sum_k (-1)^k a_k(nu) / x^k (DLMF 10.40.1); used where x >= (nu + 3)^2,
    # so the terms fall at least like 2^-k / k! and 30 of them are far below float64 round-off.
    mu = 4.0 * nu * nu
    term, total = torch.ones_like(x), torch.ones_like(x)
    for k in range(1, terms + 1):
        term = -term * (mu - (2 * k - 1) ** 2) / (8.0 * k * x)
        total = total + term
    return total


def bessel_ratio(k: int, kappa: torch.Tensor) -> torch.Tensor:
    """``A(kappa) = I_{nu+1}(kappa) / I_nu(kappa)`` with ``nu = (k - 1) / 2`` (pure torch, differentiable).

    Below ``kappa = max(40, (nu + 2)^2)``: the stable backward recurrence started from Amos's bounds at an
    order chosen so the start error is contracted below 1e-17; above it: the ratio of Hankel's large-argument
    series. Relative error ~1e-15 against 40-digit mpmath for k up to 1000 and kappa in [1e-8, 1e8]
    (``tests/datasets/test_manifolds.py``). Computed in float64, returned in ``kappa``'s dtype.

    Examples
    --------
    >>> float(bessel_ratio(2, torch.tensor([1.0], dtype=torch.float64))[0])  # coth(1) - 1
    0.3130352854993313
    """
    x = kappa.to(torch.float64)
    nu = (k - 1) / 2
    switch = max(40.0, (nu + 2.0) ** 2)
    near = x.clamp(max=switch)
    m = _recurrence_depth(nu, near, 1e-17)
    a, _ = _amos_start(nu + m, near)
    for j in range(m - 1, -1, -1):
        a = near / (2.0 * (nu + j + 1) + near * a)
    far = x.clamp(min=switch)
    return torch.where(x < switch, a, _hankel_series(nu + 1, far) / _hankel_series(nu, far)).to(kappa.dtype)


class Sphere(Manifold):
    """Uniform distribution on the sphere ``S^dim`` of radius ``radius`` in a (dim+1)-plane of R^ambient_dim.

    Parameters
    ----------
    dim : int
        Intrinsic dimension k (the sphere lives in a (k+1)-plane).
    ambient_dim : int
        D >= k + 1.
    radius : float
    generator : torch.Generator, optional
        Draws a Haar-random rotation of the (k+1)-plane; otherwise the first k+1 axes.

    Examples
    --------
    >>> m = Sphere(2, 10, generator=torch.Generator().manual_seed(0))
    >>> x = m.sample(5, torch.Generator().manual_seed(1))
    >>> torch.allclose(x.norm(dim=1), torch.ones(5, dtype=x.dtype))
    True
    """

    name = "sphere"

    def __init__(self, dim: int, ambient_dim: int, *, radius: float = 1.0, generator: torch.Generator | None = None):
        if not isinstance(dim, int) or dim < 1 or not isinstance(ambient_dim, int) or ambient_dim < dim + 1:
            raise ValueError(f"need ints dim >= 1 and ambient_dim >= dim + 1, got dim={dim!r}, ambient_dim={ambient_dim!r}")
        if radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        self.basis = random_frame(ambient_dim, dim + 1, generator=generator)
        self.dim, self.ambient_dim, self.radius = dim, ambient_dim, float(radius)

    def sample_clean(self, n, generator, dtype):
        g = torch.randn(n, self.dim + 1, generator=generator, dtype=dtype, device=generator.device)
        g = self.radius * g / g.norm(dim=1, keepdim=True)
        return g @ self.basis.to(dtype=dtype, device=generator.device).T

    def denoiser(self, x, sigma):
        self._check_x(x)
        s = _check_sigma(sigma, x)
        U = self._frame(x)
        y = x @ U
        r = y.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny ** 0.5)
        kappa = self.radius * r / s**2
        return (self.radius * bessel_ratio(self.dim, kappa) * y / r) @ U.T


class FlatTorus(Manifold):
    """The flat torus ``T^dim``: a product of ``dim`` circles of radii ``radii`` in a (2 dim)-plane of
    R^ambient_dim, uniform in the angles (intrinsic dimension ``dim``, zero curvature).

    Parameters
    ----------
    dim : int
        Number of circles k >= 1.
    ambient_dim : int
        D >= 2k.
    radii : float or sequence of k floats
        Default ``1/sqrt(k)``: the points have norm 1 (k = 2, D = 4: the Clifford torus).
    generator : torch.Generator, optional
        Draws a Haar-random rotation of the 2k-plane; otherwise the first 2k axes.

    Examples
    --------
    >>> m = FlatTorus(2, 4)
    >>> x = m.sample(3, torch.Generator().manual_seed(0))
    >>> torch.allclose(x.norm(dim=1), torch.ones(3, dtype=x.dtype))
    True
    """

    name = "torus"

    def __init__(self, dim: int = 2, ambient_dim: int = 4, *, radii: float | list[float] | None = None,
                 generator: torch.Generator | None = None):
        if not isinstance(dim, int) or dim < 1 or not isinstance(ambient_dim, int) or ambient_dim < 2 * dim:
            raise ValueError(f"need ints dim >= 1 and ambient_dim >= 2 * dim, got dim={dim!r}, ambient_dim={ambient_dim!r}")
        r = torch.as_tensor(1.0 / math.sqrt(dim) if radii is None else radii, dtype=torch.float64).reshape(-1)
        if r.numel() not in (1, dim) or not bool(torch.isfinite(r).all()) or not bool((r > 0).all()):
            raise ValueError(f"radii must be a positive float or {dim} positive floats, got {radii!r}")
        self.radii = r.expand(dim).clone()
        self.basis = random_frame(ambient_dim, 2 * dim, generator=generator)
        self.dim, self.ambient_dim = dim, ambient_dim

    def sample_clean(self, n, generator, dtype):
        theta = 2 * math.pi * torch.rand(n, self.dim, generator=generator, dtype=dtype, device=generator.device)
        r = self.radii.to(dtype=dtype, device=generator.device)
        y = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 2).reshape(n, 2 * self.dim)
        return y @ self.basis.to(dtype=dtype, device=generator.device).T

    def denoiser(self, x, sigma):
        self._check_x(x)
        s = _check_sigma(sigma, x)
        U = self._frame(x)
        y = (x @ U).reshape(x.shape[0], self.dim, 2)
        rho = y.norm(dim=2).clamp_min(torch.finfo(x.dtype).tiny ** 0.5)  # (n, k)
        r = self.radii.to(dtype=x.dtype, device=x.device)
        kappa = r * rho / s**2
        post = (r * bessel_ratio(1, kappa) / rho)[:, :, None] * y
        return post.reshape(x.shape[0], 2 * self.dim) @ U.T


class SwissRoll(Manifold):
    """scikit-learn's swiss roll ``(t cos t, h, t sin t)``, ``t ~ U[1.5 pi, 4.5 pi]``, ``h ~ U[0, height]``,
    in a 3-plane of R^ambient_dim (intrinsic dimension 2).

    Parameters
    ----------
    ambient_dim : int
        D >= 3.
    height : float
        Length of the roll (21 in scikit-learn).
    generator : torch.Generator, optional
        Draws a Haar-random rotation of the 3-plane; otherwise the first three axes.
    grid_per_sigma : float
        Quadrature points per ``sigma`` of arc length used by the exact score.

    Examples
    --------
    >>> m = SwissRoll(3)
    >>> x = m.sample(4, torch.Generator().manual_seed(0), noise=0.1)
    >>> m.score(x, 0.1).shape
    torch.Size([4, 3])
    """

    name = "swiss_roll"
    t_low, t_high = 1.5 * math.pi, 4.5 * math.pi

    def __init__(self, ambient_dim: int = 3, *, height: float = 21.0, generator: torch.Generator | None = None,
                 grid_per_sigma: float = 2.0):
        if not isinstance(ambient_dim, int) or ambient_dim < 3:
            raise ValueError(f"ambient_dim must be an int >= 3, got {ambient_dim!r}")
        if height <= 0:
            raise ValueError(f"height must be > 0, got {height}")
        self.basis = random_frame(ambient_dim, 3, generator=generator)
        self.dim, self.ambient_dim, self.height = 2, ambient_dim, float(height)
        self.grid_per_sigma = float(grid_per_sigma)

    def sample_clean(self, n, generator, dtype):
        u = torch.rand(n, 2, generator=generator, dtype=dtype, device=generator.device)
        t = self.t_low + (self.t_high - self.t_low) * u[:, 0]
        y = torch.stack([t * torch.cos(t), self.height * u[:, 1], t * torch.sin(t)], 1)
        return y @ self.basis.to(dtype=dtype, device=generator.device).T

    def denoiser(self, x, sigma):
        self._check_x(x)
        s = _check_sigma(sigma, x)
        U = self._frame(x)
        y = x @ U
        # t: posterior over a midpoint grid in t, spacing <= sigma / grid_per_sigma in arc length
        speed = math.sqrt(1.0 + self.t_high**2)
        n_grid = int(math.ceil((self.t_high - self.t_low) * speed * self.grid_per_sigma / float(s.min())))
        dt = (self.t_high - self.t_low) / n_grid
        t = self.t_low + dt * (torch.arange(n_grid, dtype=x.dtype, device=x.device) + 0.5)
        c = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)  # (G, 2)
        yc = y[:, [0, 2]]
        d2 = (yc * yc).sum(1, keepdim=True) - 2.0 * yc @ c.T + (c * c).sum(1)
        w = torch.softmax(-d2 / (2.0 * s**2), dim=1)
        mean_c = w @ c
        # h: N(y_h, sigma^2) truncated to [0, height]; use the tail with the smaller mass for stability
        sig = s.reshape(-1) if s.ndim else s
        a, b = -y[:, 1] / sig, (self.height - y[:, 1]) / sig
        flip = (a + b) > 0
        a2, b2 = torch.where(flip, -b, a), torch.where(flip, -a, b)
        la, lb = torch.special.log_ndtr(a2), torch.special.log_ndtr(b2)
        log_z = lb + torch.log1p(-torch.exp(la - lb))
        log_phi = lambda z: -0.5 * z * z - 0.5 * math.log(2 * math.pi)  # noqa: E731
        ratio = torch.exp(log_phi(a) - log_z) - torch.exp(log_phi(b) - log_z)
        mean_h = y[:, 1] + sig * ratio
        post = torch.stack([mean_c[:, 0], mean_h, mean_c[:, 1]], 1)
        return post @ U.T


def make_manifold(name: str, dim: int, ambient_dim: int, *, generator: torch.Generator | None = None) -> Manifold:
    """Build a manifold by name: ``linear``, ``sphere``, ``torus`` or ``swiss_roll`` (``dim`` must be 2).

    Examples
    --------
    >>> make_manifold("sphere", 2, 10).dim
    2
    """
    if name == "linear":
        return LinearSubspace(dim, ambient_dim, generator=generator)
    if name == "sphere":
        return Sphere(dim, ambient_dim, generator=generator)
    if name == "torus":
        return FlatTorus(dim, ambient_dim, generator=generator)
    if name == "swiss_roll":
        if dim != 2:
            raise ValueError(f"swiss_roll has dim 2, got dim={dim}")
        return SwissRoll(ambient_dim, generator=generator)
    raise ValueError(f"name must be one of 'linear', 'sphere', 'torus', 'swiss_roll', got {name!r}")
