"""An importance sample that never saw the event must not report 0 +- 0 (issue 14)."""
import math
import warnings

import pytest
import torch
from scipy import stats

from estimators.importance import aiscv, zero_hit_upper_bound

D = torch.distributions
F64 = torch.float64
P = 4e-5
T = math.sqrt(2) * stats.norm.isf(P)  # P(X1 + X2 >= T) = P for independent standard normals


def mvn2():
    return D.MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))


def event(x):
    return (x.sum(1) >= T).to(F64)[:, None]


@pytest.mark.parametrize("n", [1, 7, 1000, 123456.5])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_zero_hit_bound_is_clopper_pearson(n, level):
    # one-sided Clopper-Pearson upper bound for 0 successes in n trials: the level-quantile of Beta(1, n)
    torch.testing.assert_close(zero_hit_upper_bound(torch.tensor(n, dtype=F64), level),
                               torch.tensor(stats.beta.ppf(level, 1, n), dtype=F64), rtol=1e-12, atol=0)


def test_zero_hit_bound_rule_of_three():
    assert abs(float(zero_hit_upper_bound(torch.tensor(1e6), 0.95)) * 1e6 - 3.0) < 0.01


def test_aiscv_rare_event_is_not_zero_plus_minus_zero():
    # today's code returned estimate 0 with stderr 0 and the interval [0, 0] on this seed
    with pytest.warns(RuntimeWarning, match=r"expectation\(s\) \[0\].*never observed"):
        r = aiscv(event, mvn2(), 10_000, generator=torch.Generator().manual_seed(0))
    assert float(r.estimate[0]) == 0.0
    assert math.isnan(float(r.stderr[0]))
    lo, hi = r.confidence_interval()
    assert float(lo[0]) == 0.0 and float(hi[0]) > P
    # the bound is the exact binomial one in the effective sample size of the final weights
    torch.testing.assert_close(hi, zero_hit_upper_bound(r.unseen_ess, 0.95))
    assert 0 < float(r.unseen_ess[0]) <= r.n_final
    df = r.to_frame()
    assert df.ci_high[0] == float(hi[0]) and math.isnan(df.stderr[0])


def test_aiscv_rare_event_coverage():
    # 30 seeded runs at p = 4e-5, 1e4 calls: before, 0 +- 0 on most seeds (coverage 0.17-0.37)
    covered = 0
    for seed in range(30):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = aiscv(event, mvn2(), 10_000, generator=torch.Generator().manual_seed(seed))
        lo, hi = r.confidence_interval()
        covered += int(float(lo[0]) <= P <= float(hi[0]))
        assert not (float(r.stderr[0]) == 0.0 and float(r.estimate[0]) == 0.0)
    assert covered >= 27


def test_only_unseen_columns_are_flagged():
    phis = lambda x: torch.cat([x**2, (x > 12).to(F64)], 1)  # noqa: E731  P = 1e-33: never hit
    f = D.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    with pytest.warns(RuntimeWarning, match=r"expectation\(s\) \[1\]"):
        r = aiscv(phis, f, 2000, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(float(r.stderr[0])) and float(r.stderr[0]) > 0
    assert math.isnan(float(r.stderr[1])) and math.isnan(float(r.unseen_ess[0]))
    lo, hi = r.confidence_interval(0.99)
    assert float(lo[1]) == 0.0
    torch.testing.assert_close(hi[1], zero_hit_upper_bound(r.unseen_ess[1], 0.99))
    assert float(lo[0]) < 1.0 < float(hi[0])


def test_seen_events_keep_their_stderr():
    f = D.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    r = aiscv(lambda x: (x > 1).to(F64), f, 4000, generator=torch.Generator().manual_seed(1))
    assert r.unseen_ess is None and float(r.stderr[0]) > 0


def test_signed_integrands_that_are_exactly_zero_keep_zero_stderr():
    # allow_negative (e.g. a Sobol' numerator of an input the model ignores) can be identically 0
    f = D.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = aiscv(lambda x: torch.cat([x, 0 * x], 1), f, 2000, generator=torch.Generator().manual_seed(0),
                  allow_negative=True)
    assert r.unseen_ess is None and float(r.stderr[1]) == 0.0


def test_is_separate_passes_the_bound_on():
    f = D.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    phis = lambda x: torch.cat([x**2, (x > 12).to(F64)], 1)  # noqa: E731
    from estimators.importance import is_separate

    with pytest.warns(RuntimeWarning, match=r"never observed"):
        r = is_separate(phis, f, 4000, generator=torch.Generator().manual_seed(0))
    assert math.isnan(float(r.stderr[1])) and math.isnan(float(r.unseen_ess[0]))
    lo, hi = r.confidence_interval()
    assert float(lo[1]) == 0.0 and 0 < float(hi[1]) < 1
