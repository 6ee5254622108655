"""aISCV: the alpha-step solver, the Gaussian-moments case of the paper, inputs, bad input."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, minimize

from estimators.importance import aiscv, gaussian_moments, minimize_on_simplex
from estimators.importance.proposals import safe_log_prob
from genstat.mc import replicate

D = torch.distributions
F64 = torch.float64


def normal(m=0.0, s=1.0, dtype=F64):
    return D.Normal(torch.tensor(m, dtype=dtype), torch.tensor(s, dtype=dtype))


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- alpha-step on the simplex
def test_simplex_closed_form():
    # G = I: F = sum_m a_m / alpha_m, minimised by alpha ∝ sqrt(a) (Lagrange)
    a = torch.tensor([1.0, 4.0, 9.0, 0.25], dtype=F64)
    s = minimize_on_simplex(a, torch.eye(4, dtype=F64), tol=1e-12)
    torch.testing.assert_close(s.alpha, a.sqrt() / a.sqrt().sum(), rtol=1e-6, atol=1e-9)
    assert s.gap <= 1e-10
    assert s.value == pytest.approx(float(a.sqrt().sum()) ** 2, rel=1e-9)


@pytest.mark.parametrize("J", [3, 12])
def test_simplex_matches_slsqp(J):
    g = gen(J)
    G = torch.rand(500, J, generator=g, dtype=F64) ** 3
    a = torch.rand(500, generator=g, dtype=F64) ** 2
    s = minimize_on_simplex(a, G, tol=1e-10, max_iter=500)
    F = lambda al: float((a / (G @ torch.as_tensor(al))).sum())  # noqa: E731
    jac = lambda al: -(G.T @ (a / (G @ torch.as_tensor(al)) ** 2)).numpy()  # noqa: E731
    r = minimize(F, np.ones(J) / J, jac=jac, method="SLSQP", bounds=Bounds(1e-12, 1),
                 constraints=LinearConstraint(np.ones(J), 1, 1), options=dict(ftol=1e-14, maxiter=2000))
    # a convex problem: our certified optimum is at least as good as SLSQP's
    assert s.value <= r.fun * (1 + 1e-7), (s.value, r.fun)
    assert s.gap <= 1e-7, s
    assert float(s.alpha.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((s.alpha >= 0).all())


# ---------------------------------------------------------------- the paper's Gaussian moments case
N_MOM, REPS = 20_000, 16


@pytest.fixture(scope="module")
def moment_runs():
    p = gaussian_moments(10)

    def one(n, g, dev):
        rows = []
        for _ in range(n):
            r = aiscv(p.phis, p.inputs, N_MOM, weights=p.weights, generator=g)
            rows.append(torch.cat([r.estimate, r.stderr]))
        return torch.stack(rows)

    out = replicate(one, REPS, block_size=1, seed=11)
    return p, out[:, :10], out[:, 10:]


def test_gaussian_moments_relative_sd_below_2_percent(moment_runs):
    p, est, se = moment_runs
    # the sd of one run, estimated by the mean reported stderr (each from ~1e4 fresh points; far
    # less noisy than the spread of 16 replications, which we check against it)
    mean_rse = se.mean(0) / p.truth
    assert bool((mean_rse <= 0.02).all()), mean_rse
    rep_sd = est.std(0) / p.truth
    assert bool((rep_sd <= 0.025).all()), rep_sd
    ratio = est.std(0) / se.mean(0)       # calibration of the reported stderr (chi-2, 15 dof)
    assert bool(((ratio > 0.6) & (ratio < 1.5)).all()), ratio


def test_gaussian_moments_unbiased(moment_runs):
    p, est, _ = moment_runs
    z = (est.mean(0) - p.truth) / (est.std(0) / math.sqrt(REPS))
    assert bool((z.abs() < 3).all()), z


def test_gaussian_moments_beats_mc_by_1e3(moment_runs):
    p, est, _ = moment_runs
    # plain MC: Var(X^{2j}) / N = ((4j-1)!! - ((2j-1)!!)^2) / N, exactly
    dfact = lambda k: float(math.prod(range(1, k, 2)))  # noqa: E731  (k-1)!!
    mc = sum((dfact(4 * j) - dfact(2 * j) ** 2) / dfact(2 * j) ** 2 for j in range(1, 11)) / N_MOM
    ours = float((p.weights * est.var(0)).sum())
    assert mc / ours >= 1e3, (mc, ours)


def test_gaussian_moments_coverage_and_budget(moment_runs):
    p, est, se = moment_runs
    cover = ((est - 1.96 * se <= p.truth) & (p.truth <= est + 1.96 * se)).double().mean()
    assert 0.85 <= float(cover) <= 1.0


def test_result_bookkeeping_and_determinism():
    p = gaussian_moments(4)
    r1 = aiscv(p.phis, p.inputs, 5000, generator=gen(3), names=list(p.names))
    r2 = aiscv(p.phis, p.inputs, 5000, generator=gen(3))
    torch.testing.assert_close(r1.estimate, r2.estimate, rtol=1e-12, atol=0)  # BLAS may reorder sums
    assert r1.n_adaptive + r1.n_final == r1.n_samples == 5000
    assert r1.n_adaptive <= 2500
    assert r1.trace[0].iteration == 0 and len(r1.trace) >= 2
    assert 0 <= r1.chosen_iteration < len(r1.trace)
    for step in r1.trace[1:]:
        assert float(step.alpha.sum()) == pytest.approx(1.0, abs=1e-9)
        assert step.alpha_gap <= 1e-2
    df = r1.to_frame()
    assert list(df["expectation"]) == list(p.names) and len(df) == 4
    lo, hi = r1.confidence_interval(0.9)
    assert bool((lo < r1.estimate).all() and (r1.estimate < hi).all())
    assert r1.weighted_variance == pytest.approx(float((r1.weights * r1.stderr**2).sum()))


# ---------------------------------------------------------------- inputs, families, variants
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    r = aiscv(lambda x: torch.cat([x**2, x**4], 1), normal(dtype=dtype), 4000, generator=gen(0))
    truth = torch.tensor([1.0, 3.0], dtype=F64)
    assert r.estimate.dtype == F64
    assert bool(((r.estimate - truth).abs() < 5 * r.stderr).all())


@pytest.mark.parametrize("kind", ["list", "batched"])
def test_many_input_densities(kind):
    m = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=F64)
    inputs = [normal(float(v)) for v in m] if kind == "list" else D.Normal(m, torch.ones(4, dtype=F64))
    r = aiscv(lambda x: (x**2).expand(-1, 4), inputs, 8000, weights="absolute", generator=gen(1))
    assert bool(((r.estimate - (1 + m**2)).abs() < 5 * r.stderr).all())


def test_mixture2_family_on_a_two_sided_event():
    # P(|X| > 2.5) and P(X > 2): the optimal density of the first is bimodal
    phis = lambda x: torch.cat([(x.abs() > 2.5).double(), (x > 2).double()], 1)  # noqa: E731
    truth = torch.tensor([2 * 0.006209665325776132, 0.022750131948179195], dtype=F64)
    r = aiscv(phis, normal(), 8000, family="mixture2", generator=gen(5))
    assert bool(((r.estimate - truth).abs() < 5 * r.stderr).all())
    mc_se = (truth * (1 - truth) / 8000).sqrt()
    assert bool((r.stderr < mc_se / 3).all())


@pytest.mark.parametrize("opts", [dict(defensive=0.2), dict(final="rqmc")])
def test_variants_unbiased(opts):
    p = gaussian_moments(4)
    r = aiscv(p.phis, p.inputs, 8000, generator=gen(2), **opts)
    assert bool(((r.estimate - p.truth).abs() < 5 * r.stderr).all())
    assert bool((r.stderr / p.truth < 0.05).all())


def test_multivariate_input():
    f = D.MultivariateNormal(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=F64))
    phis = lambda x: torch.stack([x[:, 0] ** 2, x[:, 1] ** 2, (x[:, 0] > 2).double()], 1)  # noqa: E731
    r = aiscv(phis, f, 8000, generator=gen(4))
    truth = torch.tensor([1.0, 2.0, 0.02275013194817921], dtype=F64)
    assert bool(((r.estimate - truth).abs() < 5 * r.stderr).all())


# ---------------------------------------------------------------- bad input
def test_negative_phi_names_expectation_and_shift():
    with pytest.raises(ValueError, match=r"expectation 1 .*shift"):
        aiscv(lambda x: torch.cat([x**2, x], 1), normal(), 2000, generator=gen(0))


def test_nan_phi():
    with pytest.raises(ValueError, match="non-finite"):
        aiscv(lambda x: torch.cat([x**2, x * float("nan")], 1), normal(), 2000, generator=gen(0))


def test_budget_too_small():
    with pytest.raises(ValueError, match="too small for one adaptation step"):
        aiscv(lambda x: x**2, normal(), 20, generator=gen(0))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(weights=torch.ones(3)), ValueError, "weights"),
        (dict(weights="squared"), ValueError, "weights"),
        (dict(family="t"), ValueError, "family"),
        (dict(defensive=1.0), ValueError, "defensive"),
        (dict(final="sobol"), ValueError, "final"),
        (dict(generator=0), TypeError, "generator"),
        (dict(names=["a"]), ValueError, "names"),
    ],
)
def test_bad_options(kwargs, exc, match):
    kw = dict(generator=gen(0))
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        aiscv(lambda x: torch.cat([x**2, x**4], 1), normal(), 2000, **kw)


def test_bad_inputs_and_shapes():
    with pytest.raises(TypeError, match="inputs"):
        aiscv(lambda x: x**2, "normal", 2000, generator=gen(0))
    with pytest.raises(ValueError, match="phis must return shape"):
        aiscv(lambda x: x[:5] ** 2, normal(), 2000, generator=gen(0))
    with pytest.raises(ValueError, match=r"phis must return shape \(200, 2\)"):
        aiscv(lambda x: x.expand(-1, 3) ** 2, [normal(), normal(1.0)], 2000, generator=gen(0))
    with pytest.raises(TypeError, match="budget"):
        aiscv(lambda x: x**2, normal(), 2000.0, generator=gen(0))


def test_event_never_seen_warns():
    phis = lambda x: torch.cat([x**2, (x > 12).double()], 1)  # noqa: E731  P = 1e-33: never hit
    with pytest.warns(RuntimeWarning, match=r"expectation\(s\) \[1\]"):
        r = aiscv(phis, normal(), 2000, generator=gen(0))
    assert float(r.estimate[1]) == 0.0 and bool(torch.isfinite(r.estimate).all())


def test_log_density_outside_support_is_minus_inf():
    u = D.Uniform(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    lp = safe_log_prob(u, torch.tensor([-1.0, 0.5, 2.0], dtype=F64))
    assert lp[0] == -math.inf and lp[2] == -math.inf and lp[1] == 0.0
    ln = D.LogNormal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))
    lp = safe_log_prob(ln, torch.tensor([[-1.0], [1.0]], dtype=F64))
    assert bool(torch.isinf(lp[0]).all()) and bool(torch.isfinite(lp[1]).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_aiscv_on_cuda():
    f = D.Normal(torch.tensor(0.0, dtype=F64, device="cuda"), torch.tensor(1.0, dtype=F64, device="cuda"))
    g = torch.Generator(device="cuda").manual_seed(0)
    r = aiscv(lambda x: torch.cat([x**2, x**4], 1), f, 8000, generator=g)
    truth = torch.tensor([1.0, 3.0], dtype=F64)
    assert r.estimate.device.type == "cpu"
    assert bool(((r.estimate - truth).abs() < 5 * r.stderr).all())


def test_weight_overflow_is_an_error_not_inf():
    import sys

    ratio = sys.modules["estimators.importance.aiscv"]._ratio
    with pytest.raises(ValueError, match="defensive > 0"):
        ratio(torch.tensor([[0.0], [800.0]], dtype=F64), torch.zeros(2, 1, dtype=F64), "importance weight")
