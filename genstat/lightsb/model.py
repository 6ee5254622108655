"""Light Schroedinger Bridge: a Gaussian-mixture adjusted potential with closed-form plan and drift.

Convention (REFERENCE.md section 2): entropic OT ``min E|x - y|^2 / 2 + eps KL(pi || P0 x P1)``,
equivalently the Schroedinger bridge with reference process ``dX = sqrt(eps) dW`` on ``[0, 1]``.
The adjusted potential is ``v(y) = sum_k alpha_k N(y | r_k, eps S_k)``; the plan is
``pi(y | x) = sum_k w_k(x) N(y | r_k + S_k x, eps S_k)``.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from . import _training
from ._training import FitResult
from .mixture import GaussianMixture

__all__ = ["LightSB", "FitResult"]

Source = Tensor | Callable | torch.distributions.Distribution


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"epsilon must be a float, got {type(epsilon).__name__}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}")
    return float(epsilon)


class LightSB(nn.Module):
    """Light Schroedinger Bridge (Korotin, Gushchin & Burnaev, ICLR 2024).

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    n_potentials : int
        Number ``K`` of Gaussian components of the adjusted potential.
    epsilon : float
        Entropic regularisation (the reference Brownian motion has variance ``eps t``).
    covariance : {"full", "diagonal"}
        ``S_k = L_k L_k^T`` with a Cholesky factor (log-diagonal), or ``S_k = diag(exp(s_k))``.
    init_scale : float
        Initial ``S_k = init_scale * I``.
    dtype, device : optional
        Of the parameters (float64 recommended for tight accuracy).

    Notes
    -----
    ``epsilon`` is part of the ``state_dict`` (the float64 buffer ``_epsilon``): the parameters
    define a plan only together with ``eps``, so :meth:`load_state_dict` refuses a state saved
    with another ``epsilon`` (``ValueError``) instead of silently changing the plan.

    References
    ----------
    A. Korotin, N. Gushchin, E. Burnaev, "Light Schroedinger Bridge", ICLR 2024, eqs. (9)-(14).

    Examples
    --------
    >>> import torch
    >>> m = LightSB(2, 3, 0.5)
    >>> m.init_from(torch.randn(100, 2, generator=torch.Generator().manual_seed(0)))
    >>> m.sample(torch.zeros(4, 2), generator=torch.Generator().manual_seed(1)).shape
    torch.Size([4, 1, 2])
    """

    def __init__(self, dim: int, n_potentials: int, epsilon: float, *,
                 covariance: Literal["full", "diagonal"] = "full", init_scale: float = 1.0,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        for name, v in (("dim", dim), ("n_potentials", n_potentials)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if covariance not in ("full", "diagonal"):
            raise ValueError(f"covariance must be 'full' or 'diagonal', got {covariance!r}")
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be positive, got {init_scale!r}")
        self.dim, self.n_potentials = dim, n_potentials
        self._eps = _check_epsilon(epsilon)  # the float every formula reads (no device sync)
        self.covariance = covariance
        self.init_scale = float(init_scale)
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.log_alpha = nn.Parameter(torch.zeros(n_potentials, **kw))
        self.r = nn.Parameter(torch.zeros(n_potentials, dim, **kw))
        self.log_s = nn.Parameter(torch.full((n_potentials, dim), math.log(init_scale), **kw))
        if covariance == "full":
            # strictly lower triangle of the Cholesky factor; the diagonal is exp(log_s / 2)
            self.lower = nn.Parameter(torch.zeros(n_potentials, dim, dim, **kw))
        self.register_buffer("_initialized", torch.tensor(False), persistent=True)
        self.register_buffer("_epsilon", torch.tensor(self._eps, dtype=torch.float64, device=device))

    @property
    def epsilon(self) -> float:
        """Entropic regularisation ``eps`` (fixed at construction, saved in the ``state_dict``)."""
        return self._eps

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        saved = state_dict.get(prefix + "_epsilon")
        if isinstance(saved, Tensor) and saved.numel() == 1:
            value = float(saved)
            # a model cast with .to(float32) saves eps rounded to float32: allow a few of its ulps
            tol = 4 * torch.finfo(saved.dtype).eps if saved.is_floating_point() else 0.0
            if not math.isclose(value, self._eps, rel_tol=tol, abs_tol=0.0):
                raise ValueError(f"state_dict was saved with epsilon={value!r} but this LightSB has "
                                 f"epsilon={self._eps!r}; build LightSB(..., epsilon={value!r}) to load it")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        with torch.no_grad():
            self._epsilon.fill_(self._eps)  # keep the exact float, not its float32 rounding

    # ------------------------------------------------------------------ parameters
    def scale_tril(self) -> Tensor:
        """Cholesky factors ``L_k`` of ``S_k``, shape (K, d, d)."""
        diag = torch.diag_embed(torch.exp(0.5 * self.log_s))
        if self.covariance == "diagonal":
            return diag
        return torch.tril(self.lower, diagonal=-1) + diag

    def S(self) -> Tensor:
        """The matrices ``S_k``, shape (K, d, d)."""
        if self.covariance == "diagonal":
            return torch.diag_embed(self.log_s.exp())
        tril = self.scale_tril()
        return tril @ tril.mT

    def _logdet_S(self) -> Tensor:
        return self.log_s.sum(-1)

    @torch.no_grad()
    def set_parameters(self, *, log_alpha: Tensor | None = None, r: Tensor | None = None,
                       S: Tensor | None = None) -> LightSB:
        """Set ``log alpha`` (K,), ``r`` (K, d) and/or ``S`` (K, d, d) (SPD; diagonal models keep its diagonal)."""
        k, d = self.n_potentials, self.dim
        if log_alpha is not None:
            if log_alpha.shape != (k,):
                raise ValueError(f"log_alpha must have shape ({k},), got {tuple(log_alpha.shape)}")
            self.log_alpha.copy_(log_alpha)
        if r is not None:
            if r.shape != (k, d):
                raise ValueError(f"r must have shape ({k}, {d}), got {tuple(r.shape)}")
            self.r.copy_(r)
        if S is not None:
            if S.shape != (k, d, d):
                raise ValueError(f"S must have shape ({k}, {d}, {d}), got {tuple(S.shape)}")
            if self.covariance == "diagonal":
                diag = torch.diagonal(S, dim1=-2, dim2=-1)
                if not bool((diag > 0).all()):
                    raise ValueError("S must have a positive diagonal")
                self.log_s.copy_(diag.log())
            else:
                tril, info = torch.linalg.cholesky_ex(0.5 * (S + S.mT).to(self.log_s.dtype))
                if bool((info != 0).any()):
                    raise ValueError("S must be symmetric positive definite")
                dg = torch.diagonal(tril, dim1=-2, dim2=-1)
                self.log_s.copy_(2 * dg.log())
                self.lower.copy_(torch.tril(tril, diagonal=-1))
        self._initialized.fill_(True)
        return self

    @torch.no_grad()
    def init_from(self, target_samples: Tensor, *, generator: torch.Generator | None = None,
                  method: Literal["potential", "reference"] = "potential", spread: float = 2.0) -> None:
        """Initialise the components from target samples.

        Centres ``c_k`` are ``K`` target samples (random rows with ``generator``, else the first K;
        the sample mean when ``K = 1``).

        ``method="reference"`` (the paper's code): ``r_k = c_k``, ``S_k = init_scale * I``.
        ``method="potential"`` (default): the SB potential ``phi(y) = exp(|y|^2/(2 eps)) v(y)`` starts
        as ``sum_k N(y | c_k, tau^2 I) / K`` with ``tau^2 = spread * mean_j Var(y_j)``, i.e.
        ``S_k = tau^2 / (tau^2 + eps) I``, ``r_k = eps c_k / (tau^2 + eps)``,
        ``log alpha_k = -|c_k|^2 / (2 (tau^2 + eps))``: the right scale of ``S`` and ``r`` for every
        ``eps`` (``S -> I, r -> 0`` as ``eps -> 0``; ``S -> tau^2 / eps, r -> c`` as ``eps -> inf``).
        """
        y = self._as_batch(target_samples, "target_samples")
        self._init_from(y, self._eps, generator=generator, method=method, spread=spread)

    @torch.no_grad()
    def _init_from(self, y: Tensor, eps: float, *, generator: torch.Generator | None, method: str,
                   spread: float) -> None:
        """:meth:`init_from` for the problem with regularisation ``eps`` (``fit`` calls it in standardised units)."""
        if y.shape[0] < max(self.n_potentials, 2):
            raise ValueError(f"target_samples needs at least max(n_potentials, 2)={max(self.n_potentials, 2)} "
                             f"rows, got {y.shape[0]}")
        if method not in ("potential", "reference"):
            raise ValueError(f"method must be 'potential' or 'reference', got {method!r}")
        if not (isinstance(spread, (int, float)) and spread > 0):
            raise ValueError(f"spread must be positive, got {spread!r}")
        if self.n_potentials == 1:
            centres = y.mean(0, keepdim=True)
        else:
            if generator is None:
                idx = torch.arange(self.n_potentials)
            else:
                idx = torch.randperm(y.shape[0], generator=generator, device=generator.device)[: self.n_potentials]
            centres = y[idx.to(y.device)]
        if method == "reference":
            self.r.copy_(centres)
            self.log_alpha.zero_()
            self.log_s.fill_(math.log(self.init_scale))
        else:
            tau2 = spread * float(y.var(0).mean()) if self.n_potentials > 1 else float(y.var(0).mean())
            tau2 = max(tau2, 1e-6 * eps)  # degenerate (constant) targets stay finite
            shrink = eps / (tau2 + eps)
            self.r.copy_(shrink * centres)
            self.log_alpha.copy_(-(centres**2).sum(1) / (2 * (tau2 + eps)))
            self.log_s.fill_(math.log(tau2 / (tau2 + eps)))
        if self.covariance == "full":
            self.lower.zero_()
        self._initialized.fill_(True)

    def _as_batch(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite (found NaN or inf)")
        return x.to(dtype=self.r.dtype, device=self.r.device)

    # ------------------------------------------------------------------ plan
    def _log_weights(self, x: Tensor, tril: Tensor, eps: float) -> Tensor:
        """``log alpha_k + (x^T S_k x + 2 r_k^T x) / (2 eps)``, shape (n, K)."""
        if self.covariance == "diagonal":
            quad = (x * x) @ self.log_s.exp().T
        else:
            quad = (torch.matmul(x.unsqueeze(0), tril) ** 2).sum(-1).T  # |L_k^T x|^2, (n, K)
        return self.log_alpha + (quad + 2 * x @ self.r.T) / (2 * eps)

    def log_c(self, x: Tensor) -> Tensor:
        """``log c(x) = log int exp(x^T y / eps) v(y) dy``, shape (n,)."""
        return self._log_c(x, self._eps)

    def _log_c(self, x: Tensor, eps: float) -> Tensor:
        return torch.logsumexp(self._log_weights(x, self.scale_tril(), eps), dim=1)

    def log_v(self, y: Tensor) -> Tensor:
        """Log adjusted potential ``log sum_k alpha_k N(y | r_k, eps S_k)``, shape (n,)."""
        return self._log_v(y, self._eps)

    def _log_v(self, y: Tensor, eps: float) -> Tensor:
        if self.covariance == "diagonal":
            diff = y.unsqueeze(0) - self.r.unsqueeze(1)  # (K, n, d)
            maha = (diff**2 / self.log_s.exp().unsqueeze(1)).sum(-1)
        else:
            # L_k^{-1} once per call (K d^3), then plain matmuls (faster than n triangular solves)
            tril = self.scale_tril()
            eye = torch.eye(self.dim, dtype=tril.dtype, device=tril.device)
            inv_t = torch.linalg.solve_triangular(tril, eye, upper=False).mT  # L_k^{-T}
            sol = torch.matmul(y.unsqueeze(0), inv_t) - torch.matmul(self.r.unsqueeze(1), inv_t)
            maha = (sol**2).sum(-1)
        comp = -0.5 * maha / eps - 0.5 * self._logdet_S().unsqueeze(1)
        const = -0.5 * self.dim * math.log(2 * math.pi * eps)
        return torch.logsumexp(self.log_alpha.unsqueeze(1) + comp, dim=0) + const

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """LightSB objective ``E log c(x) - E log v(y)`` (``KL(pi*||pi_theta)`` + const), eq. (13)."""
        return self._loss(x, y, self._eps)

    def _loss(self, x: Tensor, y: Tensor, eps: float) -> Tensor:
        return self._log_c(x, eps).mean() - self._log_v(y, eps).mean()

    def conditional(self, x: Tensor) -> GaussianMixture:
        """The plan ``pi(. | x)`` as a :class:`GaussianMixture` (n mixtures of K components).

        Parameters
        ----------
        x : Tensor, shape (n, d)

        Returns
        -------
        GaussianMixture
            ``weights (n, K)``, ``means r_k + S_k x (n, K, d)``, ``covariances eps S_k``.
        """
        x = self._as_batch(x, "x")
        tril = self.scale_tril()
        S = tril @ tril.mT
        means = self.r.unsqueeze(0) + torch.einsum("kij,nj->nki", S, x)
        return GaussianMixture(self._log_weights(x, tril, self._eps), means, self._eps * S)

    def sample(self, x: Tensor, n_per_x: int = 1, *, generator: torch.Generator) -> Tensor:
        """Draw ``y ~ pi(. | x)`` with ``generator``; shape (n, n_per_x, d)."""
        return self.conditional(x).sample(n_per_x, generator=generator)

    # ------------------------------------------------------------------ bridge
    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Closed-form SB drift ``g(x, t) = eps grad_x log h(x, t)``, no autograd.

        ``h(x, t) = int N(y | x, eps (1 - t) I) exp(|y|^2 / (2 eps)) v(y) dy``. With
        ``S_k = U_k diag(sigma_k) U_k^T`` and ``D_k(t) = (1 - t) I + t S_k`` the paper's
        ``(sum_k softmax(l)_k A_k^{-1} c_k - x) / (1 - t)`` simplifies to

        ``g = sum_k w_k(x, t) D_k^{-1} (r_k + (S_k - I) x)``,
        ``log w_k = log alpha_k - log det D_k / 2 + [x^T (S_k - I) x + 2 r_k^T x - t r_k^T r_k]_{D_k^{-1}} / (2 eps)``

        (quadratic forms in ``D_k^{-1}``), equal to the paper's ``l_k`` up to terms common to all k
        and finite on the closed interval ``t in [0, 1]``.

        Parameters
        ----------
        x : Tensor, shape (n, d)
        t : float or Tensor of shape () or (n,), in [0, 1]

        Returns
        -------
        Tensor, shape (n, d)

        Examples
        --------
        >>> import torch
        >>> m = LightSB(2, 1, 1.0)
        >>> m.init_from(torch.ones(3, 2), method="reference")  # r = (1, 1), S = I
        >>> m.drift(torch.zeros(1, 2), 0.0).tolist()  # E[Y | x] - x = r + S x - x
        [[1.0, 1.0]]
        """
        x = self._as_batch(x, "x")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError("t must lie in [0, 1]")
        tt = t.reshape(-1, 1, 1)  # (n or 1, 1, 1)
        if self.covariance == "diagonal":
            sigma = self.log_s.exp().unsqueeze(0)  # (1, K, d)
            xr = x.unsqueeze(1)  # (n, 1, d): the eigenbasis is the standard one
            rr = self.r.unsqueeze(0)
        else:
            evals, evecs = torch.linalg.eigh(self.S())  # (K, d), (K, d, d)
            sigma = evals.unsqueeze(0)
            xr = torch.einsum("kji,nj->nki", evecs, x)  # U_k^T x, (n, K, d)
            rr = torch.einsum("kji,kj->ki", evecs, self.r).unsqueeze(0)  # U_k^T r_k
        dk = (1 - tt) + tt * sigma  # eigenvalues of D_k(t), >= min(1, sigma) > 0
        num = rr + (sigma - 1) * xr
        quad = ((sigma - 1) * xr * xr + 2 * xr * rr - tt * rr * rr) / dk
        log_w = self.log_alpha - 0.5 * torch.log(dk).sum(-1) + quad.sum(-1) / (2 * self.epsilon)
        w = torch.softmax(log_w, dim=1)  # (n, K)
        step = num / dk
        if self.covariance == "full":
            step = torch.einsum("kij,nkj->nki", evecs, step)
        return torch.einsum("nk,nkd->nd", w, step)

    def sample_trajectory(self, x0: Tensor, steps: int, *, method: Literal["bridge", "em"] = "bridge",
                          generator: torch.Generator | None = None) -> Tensor:
        """Sample SB paths on the grid ``t_i = i / steps``.

        ``"bridge"``: exact, ``y ~ pi(. | x0)`` then the Brownian bridge from ``x0`` to ``y``
        (variance ``eps t (1 - t)``) sampled sequentially. ``"em"``: Euler-Maruyama on
        ``dX = g(X, t) dt + sqrt(eps) dW``.

        Parameters
        ----------
        x0 : Tensor, shape (n, d)
        steps : int
        method : {"bridge", "em"}
        generator : torch.Generator
            Required (the global RNG is never used).

        Returns
        -------
        Tensor, shape (steps + 1, n, d)
            ``out[i]`` is ``X_{i / steps}``.
        """
        x = self._as_batch(x0, "x0")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if method not in ("bridge", "em"):
            raise ValueError(f"method must be 'bridge' or 'em', got {method!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        h = 1.0 / steps
        out = [x]
        with torch.no_grad():
            y = self.sample(x, generator=generator)[:, 0] if method == "bridge" else None
            for i in range(steps):
                t = i * h
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                if method == "bridge":
                    rest = 1.0 - t
                    var = self.epsilon * h * max(rest - h, 0.0) / rest
                    x = x + (h / rest) * (y - x) + math.sqrt(var) * z
                else:
                    x = x + h * self.drift(x, t) + math.sqrt(self.epsilon * h) * z
                out.append(x)
        return torch.stack(out)

    # ------------------------------------------------------------------ training
    def fit(self, source: Source, target: Source, *, steps: int = 2000, batch_size: int | None = None,
            lr: float | None = None, min_lr_ratio: float = 1e-2, warmup: float = 0.05,
            lower_lr_ratio: float | None = None, generator: torch.Generator | None = None,
            progress: bool = False) -> FitResult:
        """Minimise the LightSB loss with Adam and a cosine learning-rate schedule, in standardised units.

        Training is scale-free: with ``s_x = sqrt(mean_j Var(x_j))`` and ``s_y`` likewise (from the
        whole tensor, or a sampler's first batch) the model is trained on ``(X / s_x, Y / s_y)`` with
        ``eps / (s_x s_y)``, and its parameters are written back in the data's units at the end (also
        when training raises). This is exact: entropic OT with cost ``|x - y|^2 / 2`` is equivariant
        under ``X -> a X, Y -> b Y, eps -> a b eps``, the plan mapping as ``S -> (b / a) S``,
        ``r -> b r``, ``alpha`` unchanged. So ``lr`` acts on dimensionless parameters and the pair
        ``(c X, c Y, c^2 eps)`` trains to the same relative error for every ``c``. An uninitialised
        model is initialised by :meth:`init_from` (``method="potential"``) in the standardised units.

        Parameters
        ----------
        source, target : Tensor (N, d), callable ``(n, generator, device) -> Tensor`` or Distribution
            Samples of ``P0`` and ``P1`` (unpaired). Tensors are subsampled (full batch when
            ``batch_size`` is None or >= N); samplers are called afresh every step.
        steps : int
        batch_size : int, optional
            Default: full batch for tensors, 4096 for samplers.
        lr : float, optional
            Peak Adam learning rate (``torch.optim.Adam``, on the standardised parameters), reached
            after a linear warm-up over the first ``warmup`` fraction of the steps, then a cosine
            decay to ``lr * min_lr_ratio``. Default ``3e-2 * min(1, 4 eps_s / sqrt(d))`` for ``K > 1``
            with the standardised ``eps_s = eps / (s_x s_y)``: the mixture log-weights
            ``x^T S_k x / (2 eps)`` move by ``O(lr sqrt(d) / eps_s)`` per Adam step, so small ``eps``
            and large ``d`` need proportionally smaller steps; ``1e-1`` for ``K = 1``, where the
            weights play no role.
        min_lr_ratio : float
        lower_lr_ratio : float, optional
            ``covariance="full"``: the strictly lower Cholesky entries of ``S_k`` train at
            ``lower_lr_ratio * lr`` (default ``1 / sqrt(d)``; 1 gives one rate for every
            parameter, as before). Adam moves a parameter whose gradient is mostly noise by about
            ``lr`` per step at any batch size, and noise in the ``d^2 / 2`` off-diagonal entries
            moves the log-weights ``x^T S_k x / (2 eps)`` ``sqrt(d)`` times more than noise in the
            ``d`` diagonal ones. Measured on the authors'-style benchmark pair at d=64, eps=1, K=10,
            1500 steps: cBW2-UVP 0.77 % with ratio 1, 0.12 % with 0.35, 0.09 % with 1/8 (docs/lightsb.md).
        warmup : float
            Fraction of steps of linear warm-up, in [0, 1).
        generator : torch.Generator, optional
            Randomness for batches and the initial centres (default: seed 0).
        progress : bool
            Show a tqdm bar.

        Returns
        -------
        FitResult
            The loss per step in the data's units, and ``s_x, s_y``.

        Raises
        ------
        ValueError
            A sampler returned a non-finite batch; the message names the sampler and the step.
        FloatingPointError
            The loss (or a parameter) became non-finite on finite batches: training diverged.

        Warns
        -----
        RuntimeWarning
            The loss is diverging while finite: a check window's mean loss rose above the best earlier
            window mean by more than both the descent from the first window and ``d`` nats.

        Notes
        -----
        The loss history stays on the device and is copied to the host every 50 steps (one sync,
        none per step on CUDA) for the checks above: a failure is reported at most 50 steps late,
        and the parameters are then restored to those of the last check that passed.
        """
        return _training.fit(self, source, target, steps=steps, batch_size=batch_size, lr=lr,
                             min_lr_ratio=min_lr_ratio, warmup=warmup, generator=generator, progress=progress,
                             lower_lr_ratio=lower_lr_ratio)
