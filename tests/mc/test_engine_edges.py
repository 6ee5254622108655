"""The engine at the edges a paper hits: empty importance blocks, huge log-weights, degenerate
weights, skewed integrands under sequential stopping, bounded memory, bad input."""
import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from genstat.mc import ImportanceWeightWarning, estimate, replicate


def normal1(n, g, d):
    return torch.randn(n, 1, generator=g, device=d, dtype=torch.float64)


# ------------------------------------------------------------------ importance sampling edges
def test_self_normalized_with_empty_blocks_conditional_mean():
    # E[X | X > 3] for X ~ N(0,1): weights 1 on {x > 3}, 0 elsewhere. Most 4096-blocks hold a few
    # points above 3 (P = 1.35e-3); with block_size 256 most blocks have none. Exact: phi(3)/(1-Phi(3)).
    truth = stats.norm.pdf(3) / stats.norm.sf(3)

    def lw(x):
        return torch.where(x[:, 0] > 3, 0.0, float("-inf")).to(torch.float64)

    for bsz in (4096, 256):
        r = estimate(lambda x: x[:, 0], normal1, 2**20, seed=3, log_weight=lw, self_normalized=True,
                     block_size=bsz)
        assert abs(float(r.estimate) - truth) < 5 * float(r.stderr), (bsz, r.estimate, truth)
        # ESS = number of points above 3 (equal weights)
        assert 0.8 * 2**20 * stats.norm.sf(3) < float(r.ess) < 1.2 * 2**20 * stats.norm.sf(3)


def test_self_normalized_all_weights_zero_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="every importance weight is zero"):
        r = estimate(lambda x: x[:, 0], normal1, 5000, seed=0, self_normalized=True,
                     log_weight=lambda x: torch.full((x.shape[0],), float("-inf"), dtype=torch.float64))
    assert math.isnan(float(r.estimate)) and math.isnan(float(r.stderr))


def test_unbiased_is_with_log_weights_near_700():
    # p(x) = e^700 N(x; 1, 1) (unnormalised), q = N(0, 1): E_q[w X] = e^700 * E_p[X] = e^700.
    # w = exp(700 + x - 1/2) reaches ~e^705 and w^2 overflows float64 without a log scale.
    with pytest.warns(RuntimeWarning, match="covariance"):
        r = estimate(lambda x: x[:, 0], normal1, 200_000, seed=1, log_weight=lambda x: 700 + x[:, 0] - 0.5)
    rel = r.estimate / math.exp(700)
    rel_se = r.stderr / math.exp(700)
    assert torch.isfinite(r.estimate) and torch.isfinite(r.stderr)
    assert abs(float(rel) - 1.0) < 5 * float(rel_se)
    # the relative stderr is the exact one: Var_q(w x)/E^2 = E_q[exp(2x-1) x^2] = e * (1 + 4) - 1
    torch.testing.assert_close(rel_se, torch.tensor(math.sqrt((5 * math.e - 1) / 200_000), dtype=torch.float64),
                               rtol=0.1, atol=0)
    # same numbers as the offset-free run, scaled (log scale exact up to rounding)
    r0 = estimate(lambda x: x[:, 0], normal1, 200_000, seed=1, log_weight=lambda x: x[:, 0] - 0.5)
    torch.testing.assert_close(rel, r0.estimate, rtol=1e-10, atol=0)


def test_unbiased_is_overflowing_estimate_names_log_weight():
    with pytest.raises(ValueError, match="log_weight"):
        estimate(lambda x: x[:, 0] ** 2 + 1, normal1, 10_000, seed=1, log_weight=lambda x: 712 + x[:, 0])


def test_degenerate_weights_warn_and_report_pareto_khat():
    # target N(3,1) from proposal N(0,1), n = 2e4: ESS ~ 56, CI coverage ~0.6 (measured)
    with pytest.warns(ImportanceWeightWarning, match="k-hat"):
        r = estimate(lambda x: x[:, 0], normal1, 20_000, seed=0, log_weight=lambda x: 3 * x[:, 0] - 4.5)
    assert float(r.ess) < 0.01 * 20_000
    assert r.pareto_k > r.khat_threshold
    assert "pareto_k" in r.to_frame().columns


def test_good_proposal_has_small_khat_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportanceWeightWarning)
        r = estimate(lambda x: x[:, 0], normal1, 20_000, seed=0, log_weight=lambda x: 0.5 * x[:, 0] - 0.125)
        s = estimate(lambda x: x[:, 0], normal1, 20_000, seed=0, log_weight=lambda x: 0.5 * x[:, 0] - 0.125,
                     self_normalized=True)
    # exact k for lognormal weights is 0 (all moments finite); the estimate is small
    assert r.pareto_k < 0.5 and s.pareto_k == r.pareto_k
    assert r.pareto_k == estimate(lambda x: x[:, 0], normal1, 20_000, seed=0, batch_size=3 * 4096,
                                  log_weight=lambda x: 0.5 * x[:, 0] - 0.125).pareto_k


def test_khat_warning_fires_where_coverage_fails():
    # the warning is there because the CI is wrong: coverage of the degenerate case over 60 seeds
    # is far below 95% (measured 0.59 at 200 seeds), and of the good case near 95%.
    def coverage(mu, n, seeds):
        hit = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportanceWeightWarning)
            for s in range(seeds):
                r = estimate(lambda x: x[:, 0], normal1, n, seed=s, log_weight=lambda x: mu * x[:, 0] - mu * mu / 2)
                lo, hi = r.confidence_interval()
                hit += bool(lo <= mu <= hi)
        return hit / seeds

    assert coverage(3.0, 20_000, 60) < 0.85
    assert coverage(0.5, 20_000, 60) > 0.85


# ------------------------------------------------------------------ sequential stopping
def test_sequential_stopping_is_unbiased_for_a_skewed_integrand():
    # E[exp(2X)] = e^2 for X ~ N(0,1), relative sd 7.3 per sample; target rse 0.05, blocks of 64.
    # Stopping on the data the estimate is made of was biased low (-1.77% +- 0.23%, coverage 0.887).
    truth = math.exp(2)

    def lognormal(n, g, d):
        return torch.exp(2 * torch.randn(n, generator=g, device=d, dtype=torch.float64))

    rel = []
    for s in range(300):
        r = estimate(lambda x: x, lognormal, 10**6, seed=s, target_rse=0.05, block_size=64)
        rel.append(float(r.estimate) / truth - 1)
    rel = np.array(rel)
    se = rel.std(ddof=1) / math.sqrt(len(rel))
    assert abs(rel.mean()) < 4 * se, (rel.mean(), se)
    assert rel.mean() > -0.009  # the old rule's bias (-1.77%) is ruled out


def test_sequential_pilot_counts_in_the_budget_and_main_equals_fixed_run():
    r = estimate(lambda x: x[:, 0], normal1, 10**6, seed=7, target_rse=0.05, block_size=256)
    assert r.n_pilot > 0 and r.n_pilot + r.n_samples <= 10**6
    fixed = estimate(lambda x: x[:, 0], normal1, r.n_samples, seed=7, block_size=256)
    assert torch.equal(r.estimate, fixed.estimate)


# ------------------------------------------------------------------ memory
@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS from /proc via resource on Linux")
def test_memory_does_not_grow_with_n():
    # k = 30 outputs, 16,384 blocks: keeping every block's statistics costs >= 120 MiB; the
    # reduction tree holds a few hundred rows whatever n.
    code = textwrap.dedent("""
        import resource, torch
        from genstat.mc import estimate
        torch.set_num_threads(1)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = estimate(lambda x: x.expand(-1, 30), lambda n, g, d: torch.randn(n, 1, generator=g, device=d),
                     2**20, seed=0, block_size=64, batch_size=2**14)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    grew_mib = float(out.stdout.strip().splitlines()[-1])
    assert grew_mib < 60, grew_mib


def test_reduction_tree_is_chunking_invariant_and_bounded():
    from genstat.mc.blockstats import ReductionTree, reduce_value_rows, value_rows

    g = torch.Generator().manual_seed(0)
    y = torch.randn(5000 * 8, 3, generator=g, dtype=torch.float64)
    rows = value_rows(y, [8] * 5000)
    ref = None
    for chunk in (1, 7, 256, 1000, 5000):
        tree = ReductionTree(lambda r: reduce_value_rows(r, 3), fanout=16)
        peak = 0
        for i in range(0, 5000, chunk):
            tree.push(rows[i : i + chunk])
            peak = max(peak, tree.stored_rows)
        tot = tree.total()
        if ref is None:
            ref = tot
        assert torch.equal(tot, ref), chunk
        assert tree.stored_rows <= 16 * 4
    torch.testing.assert_close(ref[0, 2:5], y.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ref[0, 5:].reshape(3, 3) / (y.shape[0] - 1), torch.cov(y.T), rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------ bad input
def test_complex_fn_output_is_refused():
    with pytest.raises(TypeError, match="complex"):
        estimate(lambda x: torch.complex(x[:, 0], x[:, 0]), normal1, 100)


def test_wrong_names_length_is_refused_after_the_first_batch():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x.expand(-1, 2)

    with pytest.raises(ValueError, match="names must have length 2"):
        estimate(fn, normal1, 64 * 50, block_size=64, batch_size=64, names=["a", "b", "c"])
    assert len(calls) == 1
    with pytest.raises(TypeError, match="names"):
        estimate(fn, normal1, 100, names="ab")


def test_numpy_integers_are_accepted():
    r = estimate(lambda x: x[:, 0], normal1, np.int64(5000), seed=np.int32(3), batch_size=np.int64(4096))
    assert r.n_samples == 5000
    assert torch.equal(replicate(lambda n, g, d: torch.randn(n, generator=g), np.int64(4)),
                       replicate(lambda n, g, d: torch.randn(n, generator=g), 4))
    with pytest.raises(TypeError, match="n_samples"):
        estimate(lambda x: x[:, 0], normal1, 5000.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        estimate(lambda x: x[:, 0], normal1, 100, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        replicate(lambda n, g, d: torch.randn(n, generator=g), 3, device="cuda:0")


def test_constant_component_warns_that_zero_stderr_is_unsupported():
    # a rare event never observed: P(X > 6) = 1e-9 with 10^4 samples -> estimate 0, stderr 0
    with pytest.warns(RuntimeWarning, match="not supported by the sample"):
        r = estimate(lambda x: (x[:, 0] > 6).double(), normal1, 10_000, seed=0)
    assert float(r.stderr) == 0.0
