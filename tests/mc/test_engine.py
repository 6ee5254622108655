import math

import pytest
import torch
from scipy import stats

from genstat.mc import MCResult, estimate, replicate


def normal2(n, g, d):
    return torch.randn(n, 2, generator=g, device=d, dtype=torch.float64)


def moments_fn(x):
    # E = [0, 1, 1, 3]: mean, second and fourth moments of N(0,1), and E[(x0+x1)^2]/2
    return torch.stack([x[:, 0], x[:, 0] ** 2, 0.5 * (x[:, 0] + x[:, 1]) ** 2, x[:, 1] ** 4], 1)


TRUTH = torch.tensor([0.0, 1.0, 1.0, 3.0], dtype=torch.float64)


def test_several_expectations_within_stderr():
    r = estimate(moments_fn, normal2, 200_000, seed=11)
    assert isinstance(r, MCResult)
    assert r.estimate.shape == (4,) and r.stderr.shape == (4,)
    assert r.n_samples == 200_000 and r.ess is None
    assert torch.all((r.estimate - TRUTH).abs() < 5 * r.stderr)
    # stderr matches the exact sd/sqrt(n): Var = [1, 2, 2, 96]
    exact_se = torch.sqrt(torch.tensor([1.0, 2.0, 2.0, 96.0], dtype=torch.float64) / 200_000)
    torch.testing.assert_close(r.stderr, exact_se, rtol=0.05, atol=0)
    torch.testing.assert_close(torch.diagonal(r.covariance).sqrt(), r.stderr)


def test_scalar_fn_gives_scalar_estimate():
    r = estimate(lambda x: x[:, 0] ** 2, normal2, 10_000, seed=2)
    assert r.estimate.ndim == 0
    lo, hi = r.confidence_interval(0.99)
    assert lo < r.estimate < hi
    df = r.to_frame()
    assert list(df.columns[:5]) == ["component", "estimate", "stderr", "ci_low", "ci_high"]
    assert len(df) == 1


@pytest.mark.parametrize("batch_size", [1, 4096, 3 * 4096, 10**6])
def test_batch_size_invariance(batch_size):
    ref = estimate(moments_fn, normal2, 50_001, seed=5, batch_size=8192)
    r = estimate(moments_fn, normal2, 50_001, seed=5, batch_size=batch_size)
    torch.testing.assert_close(r.estimate, ref.estimate, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(r.stderr, ref.stderr, rtol=1e-12, atol=0)
    assert r.n_samples == 50_001


def test_repeated_call_bitwise_and_seed_matters():
    a = estimate(moments_fn, normal2, 30_000, seed=3)
    b = estimate(moments_fn, normal2, 30_000, seed=3)
    c = estimate(moments_fn, normal2, 30_000, seed=4)
    assert torch.equal(a.estimate, b.estimate) and torch.equal(a.stderr, b.stderr)
    assert not torch.equal(a.estimate, c.estimate)


def test_global_rng_untouched():
    state = torch.get_rng_state()
    estimate(moments_fn, normal2, 5000, seed=1)
    estimate(lambda x: x, torch.distributions.Gamma(torch.tensor(2.0), torch.tensor(1.0)), 5000, seed=1)
    assert torch.equal(state, torch.get_rng_state())


def test_ci_coverage_near_nominal_batched():
    # 400 independent replications in one pass: component j is the mean of an Exp(1) coordinate.
    reps, n = 400, 200

    def exp_sampler(m, g, d):
        return -torch.log(torch.rand(m, reps, generator=g, device=d, dtype=torch.float64))

    r = estimate(lambda x: x, exp_sampler, n, seed=123, block_size=64)
    lo, hi = r.confidence_interval(0.9)
    covered = int(((lo <= 1.0) & (1.0 <= hi)).sum())
    # skewed data at n=200: coverage ~0.89; accept the two-sided 99.9% binomial band around 0.9
    band = stats.binom(reps, 0.9).ppf([0.0005, 0.9995])
    assert band[0] - 8 <= covered <= band[1], covered


def test_importance_sampling_known_expectation_and_ess():
    mu = 1.0

    def log_w(x):  # target N(mu, 1), proposal N(0, 1)
        return mu * x[:, 0] - 0.5 * mu**2

    n = 200_000
    r = estimate(lambda x: torch.stack([x[:, 0], x[:, 0] ** 2], 1), normal2, n, log_weight=log_w, seed=7)
    truth = torch.tensor([mu, 1 + mu**2], dtype=torch.float64)
    assert torch.all((r.estimate - truth).abs() < 5 * r.stderr)
    # ESS / n -> 1 / E_q[w^2] = exp(-mu^2)
    assert abs(float(r.ess) / n - math.exp(-mu**2)) < 0.01
    # self-normalised with an unnormalised target density (offset 1e3 in log space)
    s = estimate(lambda x: x[:, 0], normal2, n, log_weight=lambda x: log_w(x) + 1e3, self_normalized=True, seed=7)
    assert abs(float(s.estimate) - mu) < 5 * float(s.stderr)
    assert abs(float(s.ess) / n - math.exp(-mu**2)) < 0.01


def test_self_normalized_stderr_is_calibrated():
    # 300 SN estimates (batched as components); the spread of the estimates matches the reported stderr
    reps = 300

    def sampler(m, g, d):
        return torch.randn(m, reps, generator=g, device=d, dtype=torch.float64)

    ests, ses = [], []
    for seed in range(3):
        # weights differ per component, so estimate component by component via a shared weight on column 0
        r = estimate(lambda x: x[:, 1:], sampler, 4000, log_weight=lambda x: 0.5 * x[:, 0],
                     self_normalized=True, seed=seed)
        ests.append(r.estimate)
        ses.append(r.stderr)
    est = torch.cat(ests)
    se = torch.cat(ses)
    z = est / se  # truth 0 for the independent coordinates
    assert 0.85 < float(z.std()) < 1.15


def test_target_rse_stops_early_and_is_batch_invariant():
    r1 = estimate(lambda x: x[:, 0] ** 2, normal2, 10**7, target_rse=0.01, seed=9, batch_size=4096)
    r2 = estimate(lambda x: x[:, 0] ** 2, normal2, 10**7, target_rse=0.01, seed=9, batch_size=10**6)
    assert r1.converged and r1.n_samples < 10**6
    assert float(r1.rse) <= 0.01
    assert r1.n_samples == r2.n_samples
    torch.testing.assert_close(r1.estimate, r2.estimate, rtol=1e-12, atol=0)
    r3 = estimate(lambda x: x[:, 0], normal2, 20_000, target_rse=1e-6, seed=9)
    # the budget covers the pilot (which only sizes the run) and the main stage
    assert r3.converged is False and r3.n_samples + r3.n_pilot == 20_000 and r3.n_pilot == 4096


def test_distribution_samplers():
    mvn = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0], dtype=torch.float64),
        covariance_matrix=torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64),
    )
    r = estimate(lambda x: torch.stack([x[:, 0], x[:, 1], x[:, 0] * x[:, 1]], 1), mvn, 100_000, seed=1)
    truth = torch.tensor([1.0, -1.0, 0.5 - 1.0], dtype=torch.float64)
    assert torch.all((r.estimate - truth).abs() < 5 * r.stderr)
    ex = torch.distributions.Exponential(torch.tensor(2.0, dtype=torch.float64))
    r = estimate(lambda x: x, ex, 100_000, seed=1)
    assert abs(float(r.estimate) - 0.5) < 5 * float(r.stderr)


def test_replicate_is_reproducible_and_ordered():
    f = lambda n, g, d: torch.randn(n, 3, generator=g, device=d)
    a = replicate(f, 10, block_size=4, seed=1)
    b = replicate(f, 10, block_size=4, seed=1)
    assert a.shape == (10, 3) and torch.equal(a, b)
    c = replicate(f, 12, block_size=4, seed=1)
    torch.testing.assert_close(c[:8], a[:8])


# ----------------------------------------------------------------------------- bad input
def test_bad_n_samples_and_types():
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        estimate(moments_fn, normal2, 0)
    with pytest.raises(TypeError, match="n_samples must be an int"):
        estimate(moments_fn, normal2, 10.5)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        estimate(moments_fn, normal2, 10, batch_size=0)
    with pytest.raises(TypeError, match="sampler must be a callable"):
        estimate(moments_fn, 3, 10)
    with pytest.raises(ValueError, match="target_rse must be a positive"):
        estimate(moments_fn, normal2, 10, target_rse=-1.0)
    with pytest.raises(ValueError, match="self_normalized=True needs log_weight"):
        estimate(moments_fn, normal2, 10, self_normalized=True)
    with pytest.raises(ValueError, match="level must be in"):
        estimate(moments_fn, normal2, 10, level=1.5)


def test_sampler_wrong_batch_size():
    with pytest.raises(ValueError, match=r"sampler returned a batch of shape \(5, 2\) for n=10"):
        estimate(moments_fn, lambda n, g, d: torch.zeros(5, 2), 10)


def test_fn_wrong_shape():
    with pytest.raises(ValueError, match=r"fn must return shape \(10,\) or \(10, k\), got \(10, 2, 2\)"):
        estimate(lambda x: x[:, :, None].expand(10, 2, 2), normal2, 10)
    with pytest.raises(ValueError, match=r"fn must return shape"):
        estimate(lambda x: x[:3, 0], normal2, 10)


def test_fn_nan_reports_count_and_block():
    def fn(x):
        y = x[:, 0].clone()
        y[:3] = float("nan")
        return y

    # 3 NaN in every block; the first block hit is block 0
    with pytest.raises(ValueError, match=r"3 non-finite value\(s\) \(NaN or inf\) in block 0"):
        estimate(fn, normal2, 10_000, block_size=1000, batch_size=5000)

    def fn2(x):
        y = x[:, 0].clone()
        y[x[:, 0] > 3.5] = float("inf")
        return y

    with pytest.raises(ValueError, match=r"non-finite value\(s\) \(NaN or inf\) in block \d+"):
        estimate(fn2, normal2, 200_000, block_size=1000, seed=0)


def test_log_weight_bad_shape_and_nan():
    with pytest.raises(ValueError, match=r"log_weight must return shape \(100,\)"):
        estimate(lambda x: x[:, 0], normal2, 100, log_weight=lambda x: x)
    with pytest.raises(ValueError, match="NaN"):
        estimate(lambda x: x[:, 0], normal2, 100, log_weight=lambda x: torch.full_like(x[:, 0], float("nan")))


@pytest.mark.gpu
def test_cuda_matches_its_own_reruns_and_truth():
    a = estimate(moments_fn, normal2, 100_000, seed=1, device="cuda")
    b = estimate(moments_fn, normal2, 100_000, seed=1, device="cuda", batch_size=4096)
    torch.testing.assert_close(a.estimate, b.estimate, rtol=1e-12, atol=1e-15)
    assert torch.all((a.estimate - TRUTH).abs() < 5 * a.stderr)


def test_out_of_memory_halves_the_batch_and_keeps_the_result():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        if x.shape[0] > 8192:
            raise torch.cuda.OutOfMemoryError("simulated")
        return moments_fn(x)

    r = estimate(fn, normal2, 40_000, seed=2, batch_size=65536, block_size=1024)
    ref = estimate(moments_fn, normal2, 40_000, seed=2, block_size=1024)
    torch.testing.assert_close(r.estimate, ref.estimate, rtol=1e-12, atol=1e-15)
    assert calls[:4] == [40_000, 20_480, 10_240, 5_120]


def test_gamma_sampler_matches_scipy_and_unsupported_distributions_are_refused():
    # Gamma with a < 1 and a > 1 (Marsaglia-Tsang with the block generator): KS against scipy
    for a in (0.4, 3.0):
        g = torch.Generator().manual_seed(1)
        from genstat.mc import sample_distribution

        x = sample_distribution(torch.distributions.Gamma(torch.tensor(a, dtype=torch.float64),
                                                          torch.tensor(2.0, dtype=torch.float64)), 20_000, g)
        assert stats.kstest(x.numpy(), stats.gamma(a, scale=0.5).cdf).pvalue > 1e-3
    with pytest.raises(TypeError, match="pass a sampler callable"):
        estimate(lambda x: x, torch.distributions.Poisson(torch.tensor(2.0)), 100)
