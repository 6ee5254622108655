"""cbw2_uvp's two protocols: exact moments, and the paper's sampling protocol with its floor (genstat.lightsb.metrics)."""
import math

import pytest
import torch

from genstat.lightsb import CBW2UVPResult, EOTBenchmark, SinkhornPlan, cbw2_uvp, random_gaussian_eot
from genstat.lightsb.baselines import DiscreteConditional
from genstat.mc import block_generator

PAIRS = {
    "genstat": lambda: EOTBenchmark(4, 1.0, seed=1),
    "authors": lambda: EOTBenchmark(4, 0.1, seed=1, construction="authors"),
    "gaussian": lambda: random_gaussian_eot(3, 1.0, seed=2),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_true_plan_scores_its_floor_exactly_and_zero_when_exact(name):
    pair = PAIRS[name]()
    paper = cbw2_uvp(pair, pair, n_test=100, protocol="paper", n_per_x=200, seed=3)
    assert isinstance(paper, CBW2UVPResult) and paper.protocol == "paper" and paper.n_per_x == 200
    assert paper.floor > 0 and paper.floor_stderr > 0
    # the model and the truth draw from one stream: the true plan as the model is its own floor
    assert paper.estimate == paper.floor and paper.stderr == paper.floor_stderr
    # the same plan written as a LightSB (float64) draws the same samples up to rounding
    lsb = cbw2_uvp(pair.as_lightsb(), pair, n_test=100, protocol="paper", n_per_x=200, seed=3)
    assert lsb.floor == paper.floor
    assert math.isclose(lsb.estimate, lsb.floor, rel_tol=1e-9)
    exact = cbw2_uvp(pair.as_lightsb(), pair, n_test=100, seed=3)
    assert exact.protocol == "exact" and exact.n_per_x == 0 and exact.floor == 0.0 and exact.floor_stderr == 0.0
    assert exact.estimate < 1e-8


def test_paper_protocol_is_seeded():
    bm = PAIRS["authors"]()
    model = bm.as_lightsb()
    with torch.no_grad():
        model.r.add_(0.1)
    a, b = (cbw2_uvp(model, bm, n_test=50, protocol="paper", n_per_x=100, seed=5) for _ in range(2))
    assert a == b
    c = cbw2_uvp(model, bm, n_test=50, protocol="paper", n_per_x=100, seed=6)
    assert c.estimate != a.estimate and c.floor != a.floor
    # seed draws the sampling stream, not only the test points: fixed x_test, other seed, other floor
    x = bm.sample_source(50, block_generator(0, 0))
    f5, f6 = (cbw2_uvp(model, bm, x_test=x, protocol="paper", n_per_x=100, seed=s).floor for s in (5, 6))
    assert f5 != f6


def test_floor_mean_part_matches_the_sampling_variance_of_a_gaussian():
    # truth N(mu(x), Sigma): n |mean_hat - mu|^2 = sum_i lambda_i chi2_1, so the mean part of the
    # floor is tr(Sigma) / n in expectation, with variance 2 tr(Sigma^2) / n^2 per test point
    e = random_gaussian_eot(3, 1.0, seed=2)
    n_test, n = 400, 50
    res = cbw2_uvp(e, e, n_test=n_test, protocol="paper", n_per_x=n, seed=1)
    sigma = e.conditional_covariance
    got = res.mean_error * e.target_variance / 100
    expected = float(torch.trace(sigma)) / n
    se = math.sqrt(2 * float(torch.trace(sigma @ sigma)) / n**2 / n_test)
    assert abs(got - expected) < 5 * se


def test_paper_protocol_of_a_biased_model_is_its_exact_error_plus_about_the_floor():
    bm = EOTBenchmark(2, 1.0, seed=0)
    model = bm.as_lightsb()
    with torch.no_grad():
        model.r.add_(0.3)
    exact = cbw2_uvp(model, bm, n_test=200, seed=2)
    paper = cbw2_uvp(model, bm, n_test=200, protocol="paper", n_per_x=1000, seed=2)
    assert paper.estimate > paper.floor > 0
    assert abs((paper.estimate - paper.floor) - exact.estimate) < 0.1 * exact.estimate


def test_paper_protocol_for_a_sinkhorn_plan_and_discrete_sampling():
    bm = EOTBenchmark(2, 1.0, seed=0)
    g = block_generator(0, 0)
    plan = SinkhornPlan(bm.sample_source(200, g), bm.sample_target(200, g), 1.0)
    res = cbw2_uvp(plan, bm, n_test=40, protocol="paper", n_per_x=100)
    assert res.estimate > res.floor > 0
    # DiscreteConditional.sample: atom frequencies match the weights (binomial 5-sigma)
    w = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    atoms = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    draws = DiscreteConditional(w, atoms).sample(20000, generator=block_generator(1, 0))
    assert draws.shape == (1, 20000, 1)
    freq = torch.stack([(draws[0, :, 0] == a).double().mean() for a in (0.0, 1.0, 2.0)])
    assert bool(((freq - w[0]).abs() < 5 * torch.sqrt(w[0] * (1 - w[0]) / 20000)).all())
    with pytest.raises(TypeError, match="generator"):
        DiscreteConditional(w, atoms).sample(3, generator=None)


def test_protocol_bad_inputs():
    bm = EOTBenchmark(2, 1.0, seed=0)
    with pytest.raises(ValueError, match="protocol must be 'exact' or 'paper'"):
        cbw2_uvp(bm, bm, n_test=10, protocol="sampling")
    with pytest.raises(ValueError, match="n_per_x"):
        cbw2_uvp(bm, bm, n_test=10, protocol="paper", n_per_x=1)

    class MomentsOnly:
        epsilon = 1.0

        def conditional(self, x):
            gm = bm.conditional(x)
            return type("C", (), {"mean": gm.mean, "covariance": gm.covariance})()

    assert cbw2_uvp(MomentsOnly(), bm, n_test=10).estimate < 1e-10
    with pytest.raises(TypeError, match="has no sample"):
        cbw2_uvp(MomentsOnly(), bm, n_test=10, protocol="paper")
