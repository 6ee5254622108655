"""Experiment kinds of genstat.gauge: 2-D gauge toy (decomposition + sampling error) and the
intrinsic-dimension table on manifolds."""
from __future__ import annotations

import time
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .bounds import MAX_BATCH, MAX_DEPTH, MAX_LIST, MAX_LR, MAX_SAMPLES, MAX_SCALE, MAX_STEPS, MAX_WIDTH
from .registry import experiment
from .runner import Run, markdown_table

# scikit-dimension 0.5.0, n = 2000 (REFERENCE.md section 3): (MLE, TwoNN) for the true dimension
ID_ANCHORS = {
    "linear5_R20": (5.06, 5.24),
    "sphere2_R10": (1.98, 1.92),
    "swiss_roll_R3": (1.94, 1.93),
    "linear10_R50": (9.00, 9.49),
}


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
    fig, axes = plt.subplots(len(fields), 2, figsize=(9, 4.2 * len(fields)))
    grid = torch.stack(torch.meshgrid(torch.linspace(-2.5, 2.5, 15, dtype=D64), torch.linspace(-5, 5, 15, dtype=D64),
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
        # one arrow scale per row (longest arrow 0.6 data units) so that |grad phi| and |r| compare
        scale = float(torch.cat([gp, rr]).norm(dim=1).max()) / 0.6
        for ax, vec, title in ((axes[row, 0], gp, "grad phi (fitted)"), (axes[row, 1], rr, "r = s - grad phi")):
            ax.quiver(grid[:, 0], grid[:, 1], vec[:, 0], vec[:, 1], color="C0" if ax is axes[row, 0] else "C3",
                      angles="xy", scale_units="xy", scale=scale)
            ax.set_title(f"{name}\n{title}", fontsize=9)
            ax.set_aspect("equal")
    run.save_figure(fig, "decomposition")
    run.save_text(markdown_table(pd.DataFrame(run.results)), "table.md")


class IDManifoldsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    manifolds: list[Literal["linear5_R20", "sphere2_R10", "swiss_roll_R3", "linear10_R50"]] = Field(
        list(ID_ANCHORS), max_length=MAX_LIST)
    n_data: int = Field(2000, ge=100, le=MAX_BATCH)
    data_noise: dict[str, Annotated[float, Field(ge=0, le=MAX_SCALE)]] = Field(
        {"linear5_R20": 0.01}, max_length=MAX_LIST, description="noise sd added to a manifold's points")
    models: list[Literal["exact", "energy", "free"]] = Field(["exact", "energy", "free"], max_length=MAX_LIST)
    steps: int = Field(4000, ge=1, le=MAX_STEPS)
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


def _manifold(name: str, generator: torch.Generator):
    from genstat.datasets import LinearSubspace, Sphere, SwissRoll

    if name == "linear5_R20":
        return LinearSubspace(5, 20, generator=generator)
    if name == "sphere2_R10":
        return Sphere(2, 10, generator=generator)
    if name == "swiss_roll_R3":
        return SwissRoll(3, generator=generator)
    return LinearSubspace(10, 50, generator=generator)


@experiment("gauge.id_manifolds", IDManifoldsParams,
            help="intrinsic dimension: flow-Jacobian / score-SVD / FLIPD (exact, energy, free) vs MLE and TwoNN")
def run_id_manifolds(p: IDManifoldsParams, run: Run) -> None:
    from genstat.gauge import (EnergyScore, FreeScore, fit_score, id_flipd, id_flow_jacobian, id_mle, id_score_svd,
                               id_twonn, nonconservativity)
    from genstat.mc import block_generator

    rows = []
    for mi, name in enumerate(p.manifolds):
        gen = lambda stream: block_generator(run.seed, mi, stream=stream)  # noqa: E731
        m = _manifold(name, gen(0))
        # swiss roll: scikit-learn's scale (radius 5-14, height 21); noise levels are multiplied by 5
        scale = 5.0 if name == "swiss_roll_R3" else 1.0
        noise = p.data_noise.get(name, 0.0)
        data = m.sample(p.n_data, gen(1), noise=noise)
        anchors = dict(zip(("mle", "twonn"), ID_ANCHORS[name]))
        for meth, fn in (("mle", id_mle), ("twonn", id_twonn)):
            t0 = time.perf_counter()
            est = fn(data)
            rows.append(dict(manifold=name, d=m.dim, model="-", method=meth, estimate=est.estimate,
                             dimension=est.dimension, anchor_skdim=anchors[meth], wall_time=time.perf_counter() - t0))
            run.add_results(rows[-1])
        x0 = m.sample(p.n_points, gen(2))
        xs = x0[: p.flow_points] + scale * p.sigma_max * torch.randn(x0[: p.flow_points].shape, generator=gen(3),
                                                                     dtype=x0.dtype)
        for model_name in p.models:
            t0 = time.perf_counter()
            if model_name == "exact":
                score = m.score
                train_time, rho = 0.0, 0.0
            else:
                cls = EnergyScore if model_name == "energy" else FreeScore
                model = cls(m.ambient_dim, hidden=p.hidden, depth=p.depth, sigma_min=scale * p.sigma_min,
                            sigma_max=scale * p.sigma_max, sigma_data=scale, generator=gen(4))
                fit = fit_score(model, data.float(), steps=p.steps, batch_size=p.batch_size, lr=p.lr, generator=gen(5))
                train_time = fit.wall_time
                run.log(f"{name} {model_name}: trained {p.steps} steps in {train_time:.0f}s, "
                        f"final loss {float(fit.losses[-200:].mean()):.3f}")
                model = model.double()
                score = model
                rho = float(nonconservativity(lambda z: model(z, scale * p.svd_sigma), x0, exact=True).estimate)
            ests = {
                "flow_jacobian": id_flow_jacobian(score, xs, sigma_max=scale * p.sigma_max,
                                                  sigma_min=scale * p.sigma_min, n_steps=p.flow_steps),
                "score_svd": id_score_svd(score, x0, sigma=scale * p.svd_sigma, generator=gen(6)),
                "flipd": id_flipd(score, x0, scale * p.flipd_sigma),
            }
            for meth, est in ests.items():
                rows.append(dict(manifold=name, d=m.dim, model=model_name, method=meth, estimate=est.estimate,
                                 dimension=est.dimension, anchor_skdim=None, rho=rho, train_time=train_time,
                                 wall_time=time.perf_counter() - t0))
                run.add_results(rows[-1])
            run.log(f"{name} {model_name}: " + ", ".join(f"{k}={v.dimension} ({v.estimate:.2f})" for k, v in ests.items()))
    import pandas as pd

    df = pd.DataFrame(rows)
    df["cell"] = [f"{d} ({e:.2f})" for d, e in zip(df["dimension"], df["estimate"])]
    wide = df.pivot_table(index=["manifold", "d"], columns=["model", "method"], values="cell", aggfunc="first")
    wide.columns = [f"{a}:{b}" if a != "-" else b for a, b in wide.columns]
    wide = wide.reset_index()
    wide["skdim mle / twonn"] = [" / ".join(str(v) for v in ID_ANCHORS[n]) for n in wide["manifold"]]
    run.save_table(wide, "id_table")
    run.save_text("cells: integer dimension (continuous estimate)\n\n" + markdown_table(wide), "table.md")
