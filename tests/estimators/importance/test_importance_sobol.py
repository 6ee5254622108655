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
        sobol_indices(ishigami, [D.MultivariateNormal(torch.zeros(2), torch.eye(2))], 5000, generator=gen(0))
    with pytest.raises(ValueError, match="threshold"):
        target_sobol_indices(ishigami, ISHIGAMI_INPUTS, float("nan"), 5000, generator=gen(0))
