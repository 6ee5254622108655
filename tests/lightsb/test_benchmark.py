"""EOT benchmark construction and cBW2-UVP (genstat.lightsb.benchmark, genstat.lightsb.metrics)."""
import math

import numpy as np
import pytest
import torch

from genstat.lightsb import (AUTHORS_POTENTIAL_SCALE, CBW2UVPResult, EOTBenchmark, LightSB, SinkhornPlan,
                              authors_potential_scale, cbw2_uvp, gaussian_eot, random_gaussian_eot)
from genstat.mc import block_generator

CONSTRUCTIONS = ["genstat", "authors"]


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_conditional_matches_brute_force_density_in_1d(construction):
    # pi*(y|x) ∝ N(y | x, eps) f(y) with f the potential mixture: integrate on a grid
    bm = EOTBenchmark(1, 0.3, n_potential_components=3, seed=4, construction=construction)
    ys = np.linspace(-15, 15, 60001)
    q = bm.potential_weights.numpy()
    m = bm.potential_means.numpy()[:, 0]
    v = bm.potential_covariances.numpy()[:, 0, 0]
    f = (q[:, None] * np.exp(-((ys[None] - m[:, None]) ** 2) / (2 * v[:, None])) / np.sqrt(v[:, None])).sum(0)
    for x in (-1.5, 0.2, 2.0):
        dens = np.exp(-((ys - x) ** 2) / (2 * 0.3)) * f
        dens /= dens.sum()
        mean = (dens * ys).sum()
        var = (dens * (ys - mean) ** 2).sum()
        gm = bm.conditional(torch.tensor([[x]], dtype=torch.float64))
        assert abs(float(gm.mean()) - mean) < 1e-6
        assert abs(float(gm.covariance()) - var) < 1e-6


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
@pytest.mark.parametrize("d", [2, 16])
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_as_lightsb_is_exact(d, eps, construction):
    bm = EOTBenchmark(d, eps, seed=1, construction=construction)
    res = cbw2_uvp(bm.as_lightsb(), bm, n_test=300)
    assert isinstance(res, CBW2UVPResult) and res.n_samples == 300
    assert res.estimate < 1e-8 and res.covariance_error < 1e-8


def test_seeded_and_reproducible():
    a, b = EOTBenchmark(4, 1.0, seed=3), EOTBenchmark(4, 1.0, seed=3)
    torch.testing.assert_close(a.potential_means, b.potential_means)
    torch.testing.assert_close(a.sample_source(10, block_generator(0, 0)), b.sample_source(10, block_generator(0, 0)))
    c = EOTBenchmark(4, 1.0, seed=4)
    assert not torch.allclose(a.potential_means, c.potential_means)
    # the parameters do not depend on eps (one pair per (seed, dim), several eps)
    torch.testing.assert_close(a.input_means, EOTBenchmark(4, 0.1, seed=3).input_means)


def test_authors_construction_parameters():
    # the draft notebook: P0 = 3 components, coordinates a permutation of {-2, 0, 2}, covariance 0.25 I;
    # potential = 5 components, coordinates a permutation of {-2..2}, covariance (0.5 p(eps, d))^2 I;
    # weights positive and normalised
    for d, eps in ((2, 0.1), (16, 1.0), (64, 0.1), (64, 10.0)):
        bm = EOTBenchmark(d, eps, seed=3, construction="authors")
        eye = torch.eye(d, dtype=torch.float64)
        assert bm.construction == "authors"
        for means, grid in ((bm.input_means, [-2.0, 0.0, 2.0]), (bm.potential_means, [-2.0, -1.0, 0.0, 1.0, 2.0])):
            assert means.shape == (len(grid), d)
            cols = torch.sort(means, dim=0).values
            torch.testing.assert_close(cols, torch.tensor(grid, dtype=torch.float64)[:, None].expand(-1, d),
                                       rtol=0, atol=0)
        torch.testing.assert_close(bm.input_covariances, 0.25 * eye.expand(3, d, d), rtol=0, atol=0)
        std = 0.5 * AUTHORS_POTENTIAL_SCALE[eps][d]
        torch.testing.assert_close(bm.potential_covariances, std**2 * eye.expand(5, d, d), rtol=0, atol=0)
        for w in (bm.input_weights, bm.potential_weights):
            assert bool((w > 0).all())
            torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
        # Lt_k = (I / eps + Lambda_k^-1)^-1 = eps s^2 / (eps + s^2) I for Lambda_k = s^2 I
        torch.testing.assert_close(bm.plan_covariances, (eps * std**2 / (eps + std**2)) * eye.expand(5, d, d))
    # P0 depends on (seed, d) only, the potential on (seed, d, eps): a separate potential per cell
    a, b = EOTBenchmark(16, 1.0, seed=3, construction="authors"), EOTBenchmark(16, 10.0, seed=3, construction="authors")
    torch.testing.assert_close(a.input_means, b.input_means)
    torch.testing.assert_close(a.input_weights, b.input_weights)
    assert not torch.equal(a.potential_means, b.potential_means)
    c = EOTBenchmark(16, 1.0, seed=3, construction="authors")
    torch.testing.assert_close(a.potential_means, c.potential_means, rtol=0, atol=0)
    assert not torch.equal(a.input_means, EOTBenchmark(16, 1.0, seed=4, construction="authors").input_means)
    # the default is today's construction, unchanged
    assert EOTBenchmark(4, 1.0).construction == "genstat"


def test_authors_potential_scale_table_and_off_grid_rule():
    assert authors_potential_scale(0.1, 32) == 4.0 and authors_potential_scale(10.0, 128) == 2.0
    assert authors_potential_scale(0.1, 1) == 0.5  # nearest tabulated d (2)
    assert authors_potential_scale(0.1, 48) == 8.0  # 48 is as near 32 as 64 in log: ties to the larger
    assert authors_potential_scale(0.05, 64) == 8.0 and authors_potential_scale(3.0, 64) == 2.0
    with pytest.raises(ValueError, match="dim"):
        authors_potential_scale(1.0, 0)
    with pytest.raises(ValueError, match="construction"):
        EOTBenchmark(2, 1.0, construction="paper")


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_samples_match_exact_moments(construction):
    bm = EOTBenchmark(3, 0.5, seed=2, construction=construction)
    n = 50_000
    g = block_generator(5, 0)
    x, y = bm.sample_pairs(n, g)
    # P0 moments from the mixture formula
    mu0 = bm.input_weights @ bm.input_means
    assert bool(((x.mean(0) - mu0).abs() < 5 * x.std(0) / math.sqrt(n)).all())
    # tr Cov(P1) (engine estimate with exact conditional moments) vs the sample variance of y
    var = float(y.var(0).sum())
    se = float(((y - y.mean(0)) ** 2).sum(1).std()) / math.sqrt(n)
    assert abs(bm.target_variance - var) < 5 * se
    # E[y | x] on the sampled pairs: residuals have mean zero
    resid = y - bm.conditional(x).mean()
    assert bool((resid.mean(0).abs() < 5 * resid.std(0) / math.sqrt(n)).all())


def test_perturbed_model_has_positive_metric_and_frame():
    bm = EOTBenchmark(2, 1.0, seed=0)
    model = bm.as_lightsb()
    with torch.no_grad():
        model.r.add_(0.05)
    res = cbw2_uvp(model, bm, n_test=200, seed=1)
    assert res.estimate > 0 and res.stderr > 0 and res.mean_error > 0
    lo, hi = res.confidence_interval(0.9)
    assert lo < res.estimate < hi
    assert list(res.to_frame().columns) == ["estimate", "stderr", "n_samples", "mean_error", "covariance_error",
                                            "protocol", "floor", "floor_stderr", "n_per_x"]
    fixed = cbw2_uvp(model, bm, x_test=bm.sample_source(50, block_generator(0, 0)))
    assert fixed.n_samples == 50


def test_cbw2_uvp_refuses_a_model_of_another_epsilon():
    # the plans of two EOT problems are not comparable (the mismatch used to return 23 %)
    bm = EOTBenchmark(2, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"model.epsilon=0.5 differs from benchmark.epsilon=1.0"):
        cbw2_uvp(EOTBenchmark(2, 0.5, seed=0).as_lightsb(), bm, n_test=50)
    e = random_gaussian_eot(2, 1.0, seed=0)
    with pytest.raises(ValueError, match="epsilon"):
        cbw2_uvp(random_gaussian_eot(2, 0.1, seed=0).as_lightsb(), e, n_test=50)
    g = block_generator(0, 0)
    with pytest.raises(ValueError, match="epsilon"):
        cbw2_uvp(SinkhornPlan(bm.sample_source(20, g), bm.sample_target(20, g), 0.3), bm, n_test=50)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_exact_conditionals_reject_non_finite_x(bad):
    for pair in (EOTBenchmark(2, 1.0), random_gaussian_eot(2, 1.0)):
        with pytest.raises(ValueError, match="x must be finite"):
            pair.conditional(torch.tensor([[bad, 0.0]], dtype=torch.float64))


def test_samplers_need_a_generator_and_do_not_repeat():
    # sample_source(n) used to return the same draws on every call; the global RNG is never used instead
    for pair in (EOTBenchmark(2, 1.0, seed=0), random_gaussian_eot(2, 1.0, seed=0)):
        for draw in (pair.sample_source, pair.sample_target):
            with pytest.raises(TypeError, match="generator"):
                draw(5)
            with pytest.raises(TypeError, match="generator must be a torch.Generator"):
                draw(5, None)
            g = block_generator(0, 0)
            first, second = draw(5, g), draw(5, g)
            assert not torch.allclose(first, second)
            torch.testing.assert_close(draw(5, block_generator(0, 0)), first)
    with pytest.raises(TypeError, match="generator"):
        EOTBenchmark(2, 1.0).sample_pairs(5, None)


def test_fit_diagonal_reference_style_on_benchmark_small():
    bm = EOTBenchmark(2, 1.0, seed=0)
    m = LightSB(2, 10, 1.0, covariance="diagonal", dtype=torch.float64)
    g = block_generator(0, 0)
    res = m.fit(bm.sample_source, bm.sample_target, steps=200, batch_size=512, lr=3e-2, generator=g)
    assert float(res.losses[-20:].mean()) < float(res.losses[:20].mean())
    assert cbw2_uvp(m, bm, n_test=200).estimate < 5.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="epsilon"):
        EOTBenchmark(2, 0.0)
    with pytest.raises(ValueError, match="dim"):
        EOTBenchmark(0, 1.0)
    with pytest.raises(ValueError, match="n_potential_components"):
        EOTBenchmark(2, 1.0, n_potential_components=0)
    bm = EOTBenchmark(2, 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        bm.conditional(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="n_test"):
        cbw2_uvp(bm.as_lightsb(), bm, n_test=1)


def test_sinkhorn_plan_rows_and_moments():
    import ot

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64) + 1
    plan = SinkhornPlan(x, y, 0.5, tol=1e-12, max_iter=5000)
    M = 0.5 * torch.cdist(x, y) ** 2
    P = torch.as_tensor(ot.sinkhorn(np.full(40, 1 / 40), np.full(30, 1 / 30), M.numpy(), 0.5, method="sinkhorn_log",
                                    stopThr=1e-12, numItermax=5000))
    cond = plan.conditional(x)
    torch.testing.assert_close(cond.weights, P / P.sum(1, keepdim=True), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(cond.mean(), (P @ y) / P.sum(1, keepdim=True), rtol=1e-6, atol=1e-9)
    assert cond.covariance().shape == (40, 2, 2)
    with pytest.raises(ValueError, match="same dimension"):
        SinkhornPlan(x, torch.zeros(5, 3), 1.0)


def test_random_gaussian_eot_is_seeded():
    a, b = random_gaussian_eot(3, 1.0, seed=2), random_gaussian_eot(3, 0.1, seed=2)
    torch.testing.assert_close(a.A, b.A)
    assert not torch.allclose(a.A, random_gaussian_eot(3, 1.0, seed=3).A)
    evals = torch.linalg.eigvalsh(a.B)
    assert float(evals.min()) >= 0.25 - 1e-9 and float(evals.max()) <= 4 + 1e-9
