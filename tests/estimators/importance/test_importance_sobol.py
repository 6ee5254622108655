"""Sobol' indices: Ishigami and linear-Gaussian analytic values, target indices, bad input."""
import math

import pytest
import torch
from scipy import stats

from estimators.importance import ishigami, ishigami_indices, linear_gaussian, sobol_indices, target_sobol_indices

D = torch.distributions
F64 = torch.float64
PI = torch.tensor(math.pi, dtype=F64)
ISHIGAMI_INPUTS = [D.Uniform(-PI, PI)] * 3


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_ishigami_closed_form_matches_reference():
    s1, st = ishigami_indices()
    # REFERENCE.md §4: S1 = (0.3139, 0.4424, 0), ST = (0.5576, 0.4424, 0.2437)
    torch.testing.assert_close(s1, torch.tensor([0.3139, 0.4424, 0.0], dtype=F64), atol=1e-4, rtol=0)
    torch.testing.assert_close(st, torch.tensor([0.5576, 0.4424, 0.2437], dtype=F64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method, final", [("saltelli", "iid"), ("aiscv", "iid"), ("aiscv", "rqmc"), ("qmc", "iid")])
def test_ishigami(method, final):
    s1, st = ishigami_indices()
    r = sobol_indices(ishigami, ISHIGAMI_INPUTS, 10_240, method=method, final=final, generator=gen(0))
    assert r.n_calls <= 10_240
    for est, se, truth in ((r.first_order, r.first_order_stderr, s1), (r.total, r.total_stderr, st)):
        assert bool((se > 0).all()) and bool((se < 0.06).all()), se
        assert bool(((est - truth).abs() < 5 * se + 1e-3).all()), (est, se, truth)


@pytest.mark.parametrize("method", ["aiscv", "saltelli"])
def test_linear_gaussian(method):
    model, inputs, truth = linear_gaussian([1.0, -2.0, 0.5], [1.0, 0.0, 3.0], [1.0, 0.5, 2.0])
    r = sobol_indices(model, inputs, 12_000, method=method, generator=gen(1), names=["a", "b", "c"])
    for est, se in ((r.first_order, r.first_order_stderr), (r.total, r.total_stderr)):
        assert bool(((est - truth).abs() < 5 * se + 1e-6).all()), (est, se, truth)
    # V = sum beta_i^2 sigma_i^2 = 1 + 1 + 1
    assert abs(r.variance - 3.0) < 5 * r.variance_stderr
    df = r.to_frame()
    assert set(df["index"]) == {"first_order", "total"} and list(df["input"][:3]) == ["a", "b", "c"]


def test_linear_gaussian_batched_inputs():
    beta = torch.tensor([1.0, 2.0], dtype=F64)
    inputs = D.Independent(D.Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    r = sobol_indices(lambda x: x @ beta, inputs, 4000, method="saltelli", generator=gen(2))
    truth = torch.tensor([0.2, 0.8], dtype=F64)
    assert bool(((r.first_order - truth).abs() < 5 * r.first_order_stderr).all())


def test_ci_coverage_saltelli():
    # coverage of the delta-method CI over seeded replications (i.i.d. method: cheap)
    model, inputs, truth = linear_gaussian([1.0, 1.0, 1.0], [0.0] * 3, [1.0, 2.0, 0.5])
    hits = []
    for s in range(40):
        r = sobol_indices(model, inputs, 2_000, method="saltelli", generator=gen(100 + s))
        lo, hi = r.confidence_interval(0.9)[0]
        hits.append(((lo <= truth) & (truth <= hi)).double())
    cover = float(torch.stack(hits).mean())
    assert 0.8 <= cover <= 0.97, cover


def test_target_sobol_indices_linear_threshold():
    model, inputs, _ = linear_gaussian([1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    t = 2.0
    p = float(stats.norm.sf(t / math.sqrt(2)))
    ra = target_sobol_indices(model, inputs, t, 12_000, method="aiscv", generator=gen(3))
    rs = target_sobol_indices(model, inputs, t, 12_000, method="saltelli", generator=gen(4))
    for r in (ra, rs):
        assert abs(r.probability - p) < 5 * r.probability_stderr
        assert abs(r.variance - p * (1 - p)) < 5 * r.variance_stderr
        # exchangeable inputs: equal indices; first-order <= total
        assert abs(float(r.first_order[0] - r.first_order[1])) < 5 * float(r.first_order_stderr.norm())
        assert bool((r.first_order <= r.total + 5 * r.total_stderr).all())
    z = (ra.total - rs.total) / (ra.total_stderr**2 + rs.total_stderr**2).sqrt()
    assert float(z.abs().max()) < 4


def test_bad_input():
    with pytest.raises(ValueError, match=r"budget must be >= 10\*\(d\+2\) = 50"):
        sobol_indices(ishigami, ISHIGAMI_INPUTS, 40, generator=gen(0))
    with pytest.raises(ValueError, match="method"):
        sobol_indices(ishigami, ISHIGAMI_INPUTS, 5000, method="fast", generator=gen(0))
    with pytest.raises(ValueError, match="model must return shape"):
        sobol_indices(lambda x: x, ISHIGAMI_INPUTS, 5000, method="saltelli", generator=gen(0))
    with pytest.raises(TypeError, match="univariate"):
        sobol_indices(ishigami, [D.Dirichlet(torch.ones(3))], 5000, generator=gen(0))
    with pytest.raises(ValueError, match="threshold"):
        target_sobol_indices(ishigami, ISHIGAMI_INPUTS, float("nan"), 5000, generator=gen(0))


# ---------------------------------------------------------------- independent MultivariateNormal inputs
SIG = [1.0, 0.5, 2.0]


def _mvn(kind):
    s = torch.tensor(SIG, dtype=F64)
    if kind == "covariance":
        return D.MultivariateNormal(torch.zeros(3, dtype=F64), covariance_matrix=torch.diag(s**2))
    if kind == "scale_tril":
        return D.MultivariateNormal(torch.zeros(3, dtype=F64), scale_tril=torch.diag(s))
    if kind == "precision":
        return D.MultivariateNormal(torch.zeros(3, dtype=F64), precision_matrix=torch.diag(s**-2))
    # a list mixing a 2-d diagonal MultivariateNormal block and a univariate marginal
    return [D.MultivariateNormal(torch.zeros(2, dtype=F64), torch.diag(s[:2] ** 2)), D.Normal(0.0, SIG[2])]


@pytest.mark.parametrize("kind", ["covariance", "scale_tril", "precision", "list"])
@pytest.mark.parametrize("method", ["saltelli", "qmc"])
def test_diagonal_multivariate_normal_inputs(kind, method):
    # linear model: S_i = ST_i = beta_i^2 sigma_i^2 / sum_j beta_j^2 sigma_j^2 (independent coordinates)
    model, _, truth = linear_gaussian([1.0, 2.0, 0.5], [0.0] * 3, SIG)
    r = sobol_indices(model, _mvn(kind), 6000, method=method, generator=gen(5))
    assert r.first_order.shape == (3,)
    for est, se in ((r.first_order, r.first_order_stderr), (r.total, r.total_stderr)):
        assert bool(((est - truth).abs() < 5 * se + 1e-6).all()), (est, se, truth)


def test_correlated_multivariate_normal_is_refused():
    cov = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)
    mvn = D.MultivariateNormal(torch.zeros(2, dtype=F64), cov)
    for inputs in (mvn, [mvn]):
        with pytest.raises(ValueError, match="correlated coordinates.*independent inputs"):
            sobol_indices(lambda x: x.sum(1), inputs, 4000, method="saltelli", generator=gen(0))
    with pytest.raises(TypeError, match=r"inputs\[0\] must be a univariate"):
        sobol_indices(lambda x: x.sum(1), [D.Dirichlet(torch.ones(3))], 4000, generator=gen(0))


# ---------------------------------------------------------------- a constant model: V = 0
@pytest.mark.parametrize("method, final", [("aiscv", "iid"), ("aiscv", "rqmc"), ("saltelli", "iid"), ("qmc", "iid")])
def test_constant_model_warns_that_the_variance_is_zero(method, final):
    const = lambda x: torch.full((x.shape[0],), 2.0, dtype=F64)  # noqa: E731
    with pytest.warns(RuntimeWarning) as rec:
        r = sobol_indices(const, ISHIGAMI_INPUTS, 2000, method=method, final=final, generator=gen(0))
    msgs = [str(w.message) for w in rec]
    # one accurate warning, not the inner symptoms ("phi_j was 0 ...: the event may be rare", 0/0)
    assert len(msgs) == 1 and "constant (= 2)" in msgs[0] and "variance V is 0" in msgs[0], msgs
    assert r.variance == 0.0
    for t in (r.first_order, r.total, r.first_order_stderr, r.total_stderr):
        assert bool(torch.isnan(t).all())


def test_target_indicator_never_hit_warns_that_the_variance_is_zero():
    model, inputs, _ = linear_gaussian([1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    with pytest.warns(RuntimeWarning, match=r"indicator .*constant \(= 0\).*variance V is 0"):
        r = target_sobol_indices(model, inputs, 50.0, 2000, method="saltelli", generator=gen(0))
    assert r.probability == 0.0 and bool(torch.isnan(r.first_order).all())


def test_nonconstant_model_passes_inner_warnings_through():
    # an inner warning of a sound run is not swallowed by the V = 0 check
    import warnings as _w

    def model(x):
        _w.warn("inner model warning", UserWarning)
        return ishigami(x)

    with pytest.warns(UserWarning, match="inner model warning"):
        r = sobol_indices(model, ISHIGAMI_INPUTS, 2000, method="saltelli", generator=gen(0))
    assert bool(torch.isfinite(r.first_order).all())


# ---------------------------------------------------------------- R randomisations: Student's t
@pytest.mark.parametrize("method, final", [("qmc", "iid"), ("aiscv", "rqmc")])
def test_randomised_intervals_are_student_t(method, final):
    R = 4
    r = sobol_indices(ishigami, ISHIGAMI_INPUTS, 4000, method=method, final=final, n_randomizations=R,
                      generator=gen(6))
    assert r.df == R - 1
    q = float(stats.t.ppf(0.975, R - 1))  # 3.18, against the normal 1.96
    (slo, shi), (tlo, thi) = r.confidence_interval(0.95)
    torch.testing.assert_close(shi - r.first_order, q * r.first_order_stderr, rtol=1e-12, atol=0)
    torch.testing.assert_close(r.total - tlo, q * r.total_stderr, rtol=1e-12, atol=0)
    df = r.to_frame()
    assert set(df["df"]) == {R - 1}
    torch.testing.assert_close(torch.tensor(df["ci_high"].tolist()[:3], dtype=F64), shi, rtol=1e-12, atol=0)
    rs = sobol_indices(ishigami, ISHIGAMI_INPUTS, 4000, method="saltelli", generator=gen(6))
    assert rs.df is None
    (slo, shi), _ = rs.confidence_interval(0.95)
    torch.testing.assert_close(shi - rs.first_order, float(stats.norm.ppf(0.975)) * rs.first_order_stderr,
                               rtol=1e-12, atol=0)


def test_qmc_interval_coverage():
    # R = 3 scramblings (2 df): t_2 90% quantile 2.92; the normal 1.645 under-covers
    model, inputs, truth = linear_gaussian([1.0, 1.0, 1.0], [0.0] * 3, [1.0, 2.0, 0.5])
    hits_t, hits_z = [], []
    z = float(stats.norm.ppf(0.95))
    for s in range(40):
        r = sobol_indices(model, inputs, 600, method="qmc", n_randomizations=3, generator=gen(200 + s))
        lo, hi = r.confidence_interval(0.9)[1]
        hits_t.append(((lo <= truth) & (truth <= hi)).double())
        hits_z.append(((r.total - truth).abs() <= z * r.total_stderr).double())
    cover_t, cover_z = float(torch.stack(hits_t).mean()), float(torch.stack(hits_z).mean())
    assert 0.8 <= cover_t <= 0.99, (cover_t, cover_z)  # 120 intervals: binomial sd 0.027
    assert cover_z < cover_t
