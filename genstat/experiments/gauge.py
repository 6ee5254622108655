"""Experiment kinds of genstat.gauge: 2-D gauge toy (decomposition + sampling error) and the
intrinsic-dimension table on manifolds."""
from __future__ import annotations

import math
import time
import zlib
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genstat.datasets import FlatTorus, GaussianMixture, LinearSubspace, Sphere, SwissRoll

from .bounds import MAX_BATCH, MAX_DEPTH, MAX_LIST, MAX_LR, MAX_SAMPLES, MAX_SCALE, MAX_STEPS, MAX_WIDTH
from .registry import experiment
from .runner import Run, markdown_table

# name -> (constructor given a generator for the frame, length scale of the data): every noise level of the
# experiment is multiplied by the scale (the swiss roll has scikit-learn's radii 5-14 and height 21).
MANIFOLDS = {
    "linear5_R20": (lambda g: LinearSubspace(5, 20, generator=g), 1.0),
    "sphere2_R10": (lambda g: Sphere(2, 10, generator=g), 1.0),
    "swiss_roll_R3": (lambda g: SwissRoll(3, generator=g), 5.0),
    "linear10_R50": (lambda g: LinearSubspace(10, 50, generator=g), 1.0),
    "sphere3_R8": (lambda g: Sphere(3, 8, generator=g), 1.0),
    "aniso4_R12": (lambda g: LinearSubspace(4, 12, scale=[1.0, 0.5, 0.2, 0.1], generator=g), 1.0),
    "clifford_torus_R4": (lambda g: FlatTorus(2, 4, generator=g), 1.0),
}
ManifoldName = Literal["linear5_R20", "sphere2_R10", "swiss_roll_R3", "linear10_R50", "sphere3_R8", "aniso4_R12",
                       "clifford_torus_R4"]


def manifold_block(name: str) -> int:
    """The random-stream block of a manifold: a hash of its name, so that any subset of the manifolds
    (or one alone) reproduces its rows of the full run."""
    return zlib.crc32(name.encode())


class GaugeToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sigma_diag: list[Annotated[float, Field(gt=0, le=MAX_SCALE)]] = Field([1.0, 4.0], min_length=2, max_length=2,
                                                                         description="variances of the 2-D Gaussian")
    sigma_offdiag: float = Field(0.5, ge=-MAX_SCALE, le=MAX_SCALE, description="covariance (must keep Sigma > 0)")
    rotation: float = Field(1.0, ge=-MAX_SCALE, le=MAX_SCALE, description="strength of the non-conservative part")
    decompose_steps: int = Field(1500, ge=1, le=MAX_STEPS)
    decompose_samples: int = Field(8000, ge=100, le=MAX_BATCH)
    hidden: int = Field(64, ge=1, le=MAX_WIDTH)
    lr: float = Field(3e-3, gt=0, le=MAX_LR)
    chains: int = Field(8192, ge=16, le=MAX_BATCH)
    langevin_steps: int = Field(2000, ge=1, le=MAX_STEPS)
    step_size: float = Field(0.01, gt=0, le=MAX_SCALE)
    n_probes: int = Field(16, ge=2, le=MAX_WIDTH)

    @model_validator(mode="after")
    def _positive_definite(self):
        d0, d1 = self.sigma_diag
        if self.sigma_offdiag**2 >= d0 * d1:
            raise ValueError(f"Sigma must be positive definite: sigma_offdiag^2 < sigma_diag[0] * sigma_diag[1], "
                             f"got {self.sigma_offdiag}^2 >= {d0} * {d1}")
        return self


@experiment("gauge.toy", GaugeToyParams,
            help="2-D Gaussian: score + gauge term vs score + non-gauge rotation; decomposition and Langevin error")
def run_toy(p: GaugeToyParams, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from genstat.gauge import decompose, gauge_residual, langevin_sampler, linear_gauge_decomposition, nonconservativity
    from genstat.mc import estimate

    D64 = torch.float64
    Sigma = torch.tensor([[p.sigma_diag[0], p.sigma_offdiag], [p.sigma_offdiag, p.sigma_diag[1]]], dtype=D64)
    P = torch.linalg.inv(Sigma)
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D64)
    score_M = -P
    fields = {
        "exact score": score_M,
        "score + gauge term (Sigma W x)": score_M + p.rotation * Sigma @ J,
        "score + plain rotation (W x)": score_M + p.rotation * J,
    }
    L = torch.linalg.cholesky(Sigma)
    g = run.generator(0)
    samples = torch.randn(p.decompose_samples, 2, generator=g, dtype=D64) @ L.T
    x_probe = samples[:256]
    fig, axes = plt.subplots(len(fields), 2, figsize=(9, 6.4 * len(fields)))
    # equal spacing (0.5) on both axes, so arrow lengths compare in every direction
    grid = torch.stack(torch.meshgrid(torch.linspace(-2.5, 2.5, 11, dtype=D64), torch.linspace(-5, 5, 21, dtype=D64),
                                      indexing="xy"), -1).reshape(-1, 2)
    for row, (name, M) in enumerate(fields.items()):
        field = lambda z, M=M: z @ M.T  # noqa: E731
        Q, R = linear_gauge_decomposition(M, Sigma)
        t0 = time.perf_counter()
        dec = decompose(field, samples, steps=p.decompose_steps, hidden=p.hidden, depth=2, lr=p.lr, generator=g)
        exact_cons = samples @ Q.T
        fit_err = float((dec.conservative(samples) - exact_cons).pow(2).sum(1).mean() / exact_cons.pow(2).sum(1).mean())
        rho = nonconservativity(field, x_probe, n_probes=p.n_probes, generator=g)
        gauge = float(gauge_residual(lambda z, M=M: z @ (M + P).T, lambda z: -z @ P, x_probe).abs().mean())
        sampler = langevin_sampler(field, 2, n_steps=p.langevin_steps, step_size=p.step_size)
        mom = estimate(lambda x: torch.stack([x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], 1), sampler,
                       p.chains, seed=run.seed, block_size=min(p.chains, 4096))
        c = mom.estimate
        cov = torch.tensor([[c[0], c[1]], [c[1], c[2]]], dtype=D64)
        # Euler-Maruyama's own stationary covariance (discrete Lyapunov): the O(h) bias of the scheme
        A = torch.eye(2, dtype=D64) + p.step_size * M
        import scipy.linalg

        C_em = torch.as_tensor(scipy.linalg.solve_discrete_lyapunov(A.numpy(), 2 * p.step_size * torch.eye(2).numpy()))
        rel = lambda C: float((C - Sigma).norm() / Sigma.norm())  # noqa: E731
        row_out = {
            "field": name, "rho": float(rho.estimate), "rho_stderr": float(rho.stderr),
            "mean_abs_gauge_residual": gauge, "E_s2": dec.field_norm2, "E_gradphi2": dec.conservative_norm2,
            "E_r2": dec.residual_norm2, "exact_E_gradphi2": float(torch.trace(Q @ Sigma @ Q.T)),
            "exact_E_r2": float(torch.trace(R @ Sigma @ R.T)), "phi_fit_rel_err": fit_err,
            "cov_rel_err_langevin": rel(cov), "cov_rel_err_langevin_stderr": float(mom.stderr.max() / Sigma.norm()),
            "cov_rel_err_em_exact": rel(C_em), "wall_time": time.perf_counter() - t0,
        }
        run.add_results(row_out)
        run.log(f"{name}: rho={row_out['rho']:.3f} gauge residual={gauge:.2e} "
                f"cov rel err={row_out['cov_rel_err_langevin']:.3f} (EM exact {row_out['cov_rel_err_em_exact']:.3f})")
        with torch.no_grad():
            gp, rr = dec.conservative(grid), dec.residual(grid)
        # one arrow scale per row so that |grad phi| and |r| compare: the 80th-percentile arrow of the row is
        # 0.9 grid spacings long (scaling by the longest arrow, at the grid's corners, left most arrows
        # too small to read); the colour gives the length
        norms = torch.cat([gp, rr]).norm(dim=1)
        spacing = float(grid[1, 0] - grid[0, 0])
        scale = max(float(torch.quantile(norms, 0.8)), 1e-12) / (0.9 * spacing)
        for ax, vec, title in ((axes[row, 0], gp, "grad phi (fitted)"), (axes[row, 1], rr, "r = s - grad phi")):
            q = ax.quiver(grid[:, 0], grid[:, 1], vec[:, 0], vec[:, 1], vec.norm(dim=1), cmap="viridis",
                          clim=(0.0, float(norms.max())), angles="xy", scale_units="xy", scale=scale, width=0.012)
            fig.colorbar(q, ax=ax, shrink=0.8, label="|vector|")
            ax.set_title(f"{name}\n{title}", fontsize=9)
            ax.set_aspect("equal")
    run.save_figure(fig, "decomposition")
    run.save_text(markdown_table(pd.DataFrame(run.results)), "table.md")


class IDManifoldsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    manifolds: list[ManifoldName] = Field(["linear5_R20", "sphere2_R10", "swiss_roll_R3", "linear10_R50"],
                                          min_length=1, max_length=MAX_LIST)
    n_data: int = Field(2000, ge=100, le=MAX_BATCH)
    data_noise: dict[str, Annotated[float, Field(ge=0, le=MAX_SCALE)]] = Field(
        {"linear5_R20": 0.01}, max_length=MAX_LIST, description="noise sd added to a manifold's points")
    models: list[Literal["exact", "energy", "free"]] = Field(["exact", "energy", "free"], max_length=MAX_LIST)
    steps: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] = Field(
        [4000], min_length=1, max_length=MAX_LIST, description="training budgets: one fit per model and budget")
    hidden: int = Field(128, ge=1, le=MAX_WIDTH)
    depth: int = Field(3, ge=1, le=MAX_DEPTH)
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    sigma_min: float = Field(0.01, gt=0, le=MAX_SCALE)
    sigma_max: float = Field(1.0, gt=0, le=MAX_SCALE)
    svd_sigma: float = Field(0.1, gt=0, le=MAX_SCALE)
    flipd_sigma: float = Field(0.1, gt=0, le=MAX_SCALE)
    n_points: int = Field(20, ge=1, le=MAX_SAMPLES)
    flow_points: int = Field(8, ge=1, le=MAX_SAMPLES)
    flow_steps: int = Field(32, ge=1, le=MAX_STEPS)
    eval_points: int = Field(2000, ge=10, le=MAX_BATCH, description="held-out points of the DSM loss")
    spectrum_sigmas: int = Field(12, ge=2, le=MAX_SAMPLES, description="noise levels of the spectrum figure")
    skdim: bool = Field(True, description="compute scikit-dimension's MLE and TwoNN on the same points if installed")

    @model_validator(mode="after")
    def _ranges(self):
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"need sigma_min < sigma_max, got {self.sigma_min} >= {self.sigma_max}")
        unknown = sorted(set(self.data_noise) - set(MANIFOLDS))
        if unknown:
            raise ValueError(f"data_noise names unknown manifolds {unknown}; known: {sorted(MANIFOLDS)}")
        return self


def _skdim_estimates(data: torch.Tensor, n_neighbors: int) -> dict[str, float] | None:
    """scikit-dimension's MLE (same options as ``id_mle``'s defaults: k neighbours, unbiased, mean of the
    per-point estimates) and TwoNN (its defaults) on the same points; None if it is not installed."""
    try:
        import skdim
    except ImportError:
        return None
    x = data.double().cpu().numpy()
    mle = skdim.id.MLE(K=n_neighbors, unbiased=True).fit(x, n_neighbors=n_neighbors, comb="mean").dimension_
    return {"mle": float(mle), "twonn": float(skdim.id.TwoNN().fit(x).dimension_)}


def _dsm_loss(score, x0: torch.Tensor, lo: float, hi: float, generator: torch.Generator) -> float:
    # sigma^2-weighted DSM loss E||sigma s(x0 + sigma eps, sigma) + eps||^2 on held-out points (fit_score's loss)
    n = x0.shape[0]
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    sig = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    s = score(x0 + sig[:, None] * eps, sig).detach()
    return float((sig[:, None] * s + eps).pow(2).sum(1).mean())


def _spectrum(score, x0: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean sorted singular values of ``sigma^2 grad s(x0 + sigma eps, sigma)`` per noise level, (S, D):
    ``D - d`` of them tend to 1 (normal directions) and ``d`` to 0 as sigma -> 0."""
    from genstat.gauge._autodiff import jacobian

    out = []
    for sig in sigmas.tolist():
        x = x0 + sig * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        J = jacobian(lambda z, sig=sig: score(z, sig), x)
        out.append((sig**2 * torch.linalg.svdvals(J)).mean(0))
    return torch.stack(out)


def _fit_model(p: IDManifoldsParams, m, model_name: str, steps: int, data, scale: float, gen, run: Run):
    from genstat.gauge import EnergyScore, FreeScore, fit_score

    cls = EnergyScore if model_name == "energy" else FreeScore
    model = cls(m.ambient_dim, hidden=p.hidden, depth=p.depth, sigma_min=scale * p.sigma_min,
                sigma_max=scale * p.sigma_max, sigma_data=scale, generator=gen(4))
    fit = fit_score(model, data.float(), steps=steps, batch_size=p.batch_size, lr=p.lr, generator=gen(5))
    run.log(f"{m.name} {model_name} {steps} steps: trained in {fit.wall_time:.0f}s, "
            f"final loss {float(fit.losses[-200:].mean()):.3f}")
    return model.double(), fit


@experiment("gauge.id_manifolds", IDManifoldsParams,
            help="intrinsic dimension: flow-Jacobian / score-SVD / FLIPD (exact, energy, free) vs MLE, TwoNN and "
                 "scikit-dimension on the same points")
def run_id_manifolds(p: IDManifoldsParams, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from genstat.gauge import id_flipd, id_flow_jacobian, id_mle, id_score_svd, id_twonn, nonconservativity
    from genstat.mc import block_generator

    rows, spectra = [], {}
    for name in p.manifolds:
        block = manifold_block(name)
        gen = lambda stream: block_generator(run.seed, block, stream=stream)  # noqa: E731
        make, scale = MANIFOLDS[name]
        m = make(gen(0))
        noise = p.data_noise.get(name, 0.0)
        data = m.sample(p.n_data, gen(1), noise=noise)
        base = dict(manifold=name, d=m.dim, D=m.ambient_dim)
        anchor = _skdim_estimates(data, 20) if p.skdim else None
        for meth, fn in (("mle", id_mle), ("twonn", id_twonn)):
            t0 = time.perf_counter()
            est = fn(data)
            rows.append(dict(base, model="-", steps=0, method=meth, estimate=est.estimate, dimension=est.dimension,
                             stderr=getattr(est, "stderr", float("nan")),
                             skdim=anchor[meth] if anchor else float("nan"), wall_time=time.perf_counter() - t0))
            run.add_results(rows[-1])
        x0 = m.sample(p.n_points, gen(2))
        x_eval = m.sample(p.eval_points, gen(7), noise=noise)
        xs = x0[: p.flow_points] + scale * p.sigma_max * torch.randn(x0[: p.flow_points].shape, generator=gen(3),
                                                                     dtype=x0.dtype)
        sig_grid = scale * torch.logspace(math.log10(p.sigma_min), math.log10(p.sigma_max), p.spectrum_sigmas,
                                          dtype=torch.float64)
        for model_name in p.models:
            for steps in ([0] if model_name == "exact" else p.steps):
                t0 = time.perf_counter()
                if model_name == "exact":
                    score, fit, rho = m.score, None, 0.0
                else:
                    score, fit = _fit_model(p, m, model_name, steps, data, scale, gen, run)
                    rho = float(nonconservativity(lambda z: score(z, scale * p.svd_sigma), x0, exact=True).estimate)
                loss = _dsm_loss(score, x_eval, scale * p.sigma_min, scale * p.sigma_max, gen(8))
                ests = {
                    "flow_jacobian": id_flow_jacobian(score, xs, sigma_max=scale * p.sigma_max,
                                                      sigma_min=scale * p.sigma_min, n_steps=p.flow_steps),
                    "score_svd": id_score_svd(score, x0, sigma=scale * p.svd_sigma, generator=gen(6)),
                    "flipd": id_flipd(score, x0, scale * p.flipd_sigma),
                }
                for meth, est in ests.items():
                    rows.append(dict(base, model=model_name, steps=steps, method=meth, estimate=est.estimate,
                                     dimension=est.dimension, stderr=getattr(est, "stderr", float("nan")),
                                     rho=rho, heldout_dsm_loss=loss,
                                     train_loss=float(fit.losses[-200:].mean()) if fit else float("nan"),
                                     train_time=fit.wall_time if fit else 0.0, wall_time=time.perf_counter() - t0))
                    run.add_results(rows[-1])
                run.log(f"{name} {model_name} {steps}: held-out loss {loss:.4f}, "
                        + ", ".join(f"{k}={v.dimension} ({v.estimate:.2f})" for k, v in ests.items()))
                if model_name == "exact" or steps == max(p.steps):
                    spectra[(name, model_name)] = _spectrum(score, x0[:8], sig_grid, gen(9))
        if any(k[0] == name for k in spectra):
            _spectrum_figure(run, plt, name, m, sig_grid, {k[1]: v for k, v in spectra.items() if k[0] == name})

    df = pd.DataFrame(rows)
    df["cell"] = [f"{d} ({e:.2f})" for d, e in zip(df["dimension"], df["estimate"])]
    df["column"] = [f"{mo}@{st}:{me}" if mo not in ("-", "exact") else (f"exact:{me}" if mo == "exact" else me)
                    for mo, st, me in zip(df["model"], df["steps"], df["method"])]
    wide = df.pivot_table(index=["manifold", "d", "D"], columns="column", values="cell", aggfunc="first",
                          sort=False).reset_index()
    base_rows = df[df["model"] == "-"].set_index(["manifold", "method"])
    wide["skdim mle / twonn (same points)"] = [
        " / ".join(f"{base_rows.loc[(n, me), 'skdim']:.2f}" for me in ("mle", "twonn")) for n in wide["manifold"]]
    run.save_table(wide, "id_table")
    if p.models:
        losses = df[df["model"] != "-"].drop_duplicates(["manifold", "model", "steps"])
        run.save_table(losses[["manifold", "model", "steps", "heldout_dsm_loss", "train_loss", "rho", "train_time"]],
                       "losses")
    run.save_text("cells: integer dimension (continuous estimate); model@steps = training budget\n\n"
                  + markdown_table(wide), "table.md")


def _spectrum_figure(run: Run, plt, name: str, m, sigmas: torch.Tensor, spectra: dict) -> None:
    fig, axes = plt.subplots(1, len(spectra), figsize=(4.2 * len(spectra), 3.6), squeeze=False)
    for ax, (model_name, sv) in zip(axes[0], spectra.items()):
        for j in range(sv.shape[1]):
            normal = j < m.ambient_dim - m.dim
            ax.loglog(sigmas, sv[:, j].clamp_min(1e-12), color="C3" if normal else "C0", lw=1,
                      label=("normal" if normal else "tangent") if j in (0, m.ambient_dim - m.dim) else None)
        ax.set_xlabel("sigma")
        ax.set_title(f"{name} ({model_name})", fontsize=9)
        ax.set_ylim(1e-6, 3)
    axes[0, 0].set_ylabel("singular values of sigma^2 grad s")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, f"spectrum_{name}")


class GaugeFlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    schedules: list[Literal["ve", "vp"]] = Field(["ve", "vp"], min_length=1, max_length=2)
    n_points: int = Field(256, ge=2, le=MAX_BATCH, description="test points of the log-likelihood")
    ode_steps: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] = Field([25, 50, 100, 200], min_length=1,
                                                                        max_length=MAX_LIST)
    n_samples: int = Field(20000, ge=10, le=MAX_BATCH, description="reverse-SDE samples")
    sde_steps: int = Field(500, ge=1, le=MAX_STEPS)
    rotation: float = Field(1.0, ge=-MAX_SCALE, le=MAX_SCALE, description="strength of the added fields")


def _flow_target():
    # three anisotropic unequal components in 2-D: far from Gaussian, no symmetry making W x a gauge term
    D64 = torch.float64
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.1]], [[0.1, 0.0], [0.0, 0.5]], [[0.2, -0.05], [-0.05, 0.15]]], dtype=D64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=D64),
                           torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], dtype=D64), covs)


@experiment("gauge.flow", GaugeFlowParams,
            help="probability-flow log-likelihood and reverse-SDE sampling of a 2-D mixture (VE, VP) with the exact "
                 "score, score + gauge term W grad log p_t, score + rotation W x")
def run_flow(p: GaugeFlowParams, run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genstat.gauge import ProbabilityFlow

    W = p.rotation * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    p0 = _flow_target()
    times = {"ve": (0.01, 20.0), "vp": (1e-3, 1.0)}
    fig, axes = plt.subplots(len(p.schedules), 4, figsize=(15, 3.8 * len(p.schedules)), squeeze=False)
    for row, kind in enumerate(p.schedules):
        t0, t1 = times[kind]
        base = ProbabilityFlow(lambda x, t: x, kind)
        pt = lambda t: p0.noised(base.alpha(t), base.noise_sd(t))  # noqa: E731
        exact = lambda x, t: pt(t).score(x)  # noqa: E731
        fields = {
            "exact score": exact,
            "score + gauge term W grad log p_t": lambda x, t: exact(x, t) + exact(x, t) @ W.T,
            # scaled like the score so the ODE stays non-stiff at large VE noise
            "score + rotation W x / var_t": lambda x, t: exact(x, t) + x @ W.T / (base.alpha(t) ** 2 + base.noise_sd(t) ** 2),
        }
        x_test = pt(t0).sample(p.n_points, run.generator(1 + row))
        x_top = pt(t1).sample(p.n_samples, run.generator(11 + row))
        target = pt(t0)
        truth_ll = target.log_prob(x_test)
        exact_mean_log_prob = float(target.log_prob(target.sample(p.n_samples, run.generator(41))).mean())
        axes[row, 0].scatter(*target.sample(4000, run.generator(21 + row)).T, s=1, alpha=0.3, color="k")
        axes[row, 0].set_title(f"{kind}: exact p at t0 = {t0:g}", fontsize=9)
        for col, (name, score) in enumerate(fields.items(), start=1):
            flow = ProbabilityFlow(score, kind)
            for n_steps in p.ode_steps:
                t_start = time.perf_counter()
                res = flow.log_likelihood_path(x_test, t0, t1, n_steps=n_steps)
                err = pt(t1).log_prob(res.x) + res.delta_log_prob - truth_ll
                run.add_results(dict(schedule=kind, field=name, part="ode_log_likelihood", steps=n_steps,
                                     mean_error=float(err.mean()), mean_abs_error=float(err.abs().mean()),
                                     max_abs_error=float(err.abs().max()),
                                     stderr=float(err.std() / math.sqrt(len(err))),
                                     wall_time=time.perf_counter() - t_start))
            t_start = time.perf_counter()
            xs = flow.sample_sde(x_top, t1, t0, n_steps=p.sde_steps, generator=run.generator(31 + row))
            stats = torch.stack([xs[:, 0], xs[:, 1], xs[:, 0] ** 2, xs[:, 0] * xs[:, 1], xs[:, 1] ** 2], 1)
            m, C = target.mean, target.covariance + torch.outer(target.mean, target.mean)
            z = (stats.mean(0) - torch.stack([m[0], m[1], C[0, 0], C[0, 1], C[1, 1]])) / (
                stats.std(0) / math.sqrt(p.n_samples))
            run.add_results(dict(schedule=kind, field=name, part="sde_moments", steps=p.sde_steps,
                                 max_abs_z=float(z.abs().max()), mean_log_prob_of_samples=float(target.log_prob(xs).mean()),
                                 exact_mean_log_prob=exact_mean_log_prob,
                                 wall_time=time.perf_counter() - t_start))
            run.log(f"{kind} {name}: ODE max |log-lik error| {float(err.abs().max()):.2e} at {p.ode_steps[-1]} steps; "
                    f"SDE moments max |z| {float(z.abs().max()):.1f}")
            ax = axes[row, col]
            ax.scatter(*xs[:4000].T, s=1, alpha=0.3, color=f"C{col - 1}")
            ax.set_title(f"{kind}: {name}\nreverse SDE ({p.sde_steps} steps), max |z| of 5 moments "
                         f"{float(z.abs().max()):.1f}\nODE max |log-lik err| {float(err.abs().max()):.1e}", fontsize=8)
        for ax in axes[row]:
            ax.set_xlim(-4, 4)
            ax.set_ylim(-4, 3.5)
            ax.set_aspect("equal")
    fig.tight_layout()
    run.save_figure(fig, "flow_samples")
    import pandas as pd

    df = pd.DataFrame(run.results)
    ode = df[df["part"] == "ode_log_likelihood"].pivot_table(index=["schedule", "field"], columns="steps",
                                                              values="max_abs_error", sort=False)
    ode.columns = [f"ODE max abs log-lik error, {c} RK4 steps" for c in ode.columns]
    sde = df[df["part"] == "sde_moments"].set_index(["schedule", "field"])[["max_abs_z"]].rename(
        columns={"max_abs_z": f"SDE: max abs z of 5 moments ({p.sde_steps} steps)"})
    table = ode.join(sde).reset_index()
    run.save_table(table, "flow_table")
    run.save_text(markdown_table(table), "table.md")
