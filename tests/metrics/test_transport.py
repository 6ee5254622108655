"""W2 by POT (with its noise floor), energy distance and MMD: reference values and CI coverage."""
import math

import numpy as np
import ot
import pytest
import torch
from scipy import stats

import genstat.metrics.transport as tr
from genstat.mc import replicate
from genstat.metrics import energy_distance, mmd, wasserstein2


def test_all_names_resolve():
    for name in tr.__all__:
        assert getattr(tr, name, None) is not None, name


def test_w2_one_dimensional_sorted_matching():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, generator=g, dtype=torch.float64)
    y = torch.randn(300, 1, generator=g, dtype=torch.float64) + 0.5
    exact = float(((torch.sort(x[:, 0]).values - torch.sort(y[:, 0]).values) ** 2).mean().sqrt())
    assert wasserstein2(x, y).estimate == pytest.approx(exact, rel=1e-9)


def test_w2_matches_pot_and_floor():
    g = torch.Generator().manual_seed(1)
    x, y, y2 = (torch.randn(200, 2, generator=g, dtype=torch.float64) for _ in range(3))
    r = wasserstein2(x + 1, y, y_ref=y2)
    m = ot.dist(x.numpy() + 1, y.numpy())
    assert r.estimate == pytest.approx(math.sqrt(ot.emd2(np.full(200, 1 / 200), np.full(200, 1 / 200), m)), rel=1e-9)
    assert 0 < r.floor < r.estimate and r.n_samples == 200
    assert list(r.to_frame().columns) == ["w2", "floor", "n_samples"]
    assert math.isnan(wasserstein2(x, y).floor)


def test_energy_distance_vs_scipy_and_mmd_formula():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(150, 1, generator=g, dtype=torch.float64), torch.randn(120, 1, generator=g, dtype=torch.float64)
    # scipy's (V-statistic) energy distance is sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) with diagonal zeros included
    v = stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()) ** 2
    dxx, dyy = torch.cdist(x, x), torch.cdist(y, y)
    u_from_v = (v + float(dxx.mean()) - float(dxx.sum()) / (150 * 149)
                + float(dyy.mean()) - float(dyy.sum()) / (120 * 119))
    assert energy_distance(x, y).estimate == pytest.approx(u_from_v, rel=1e-9)
    h = 0.7
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    ref = ((kxx.sum() - 150) / (150 * 149) + (kyy.sum() - 120) / (120 * 119) - 2 * k(x, y).mean())
    assert mmd(x, y, bandwidth=h).estimate == pytest.approx(float(ref), rel=1e-9)


def _energy_truth(delta: float) -> float:
    """1-D N(delta, 1) vs N(0, 1): 2 E|X - Y| - 2 E|X - X'|, with X - Y ~ N(delta, 2)."""
    s = math.sqrt(2.0)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * s * s)) + delta * (1 - 2 * stats.norm.cdf(-delta / s))
    return 2 * e_xy - 2 * (2 / math.sqrt(math.pi))


def test_energy_bootstrap_ci_coverage():
    """Basic-bootstrap 90% intervals cover the closed-form energy distance at about the nominal rate."""
    truth = _energy_truth(0.8)

    def fn(n, g, dev):
        out = []
        for i in range(n):
            x = torch.randn(120, 1, generator=g, dtype=torch.float64) + 0.8
            y = torch.randn(120, 1, generator=g, dtype=torch.float64)
            seed = int(torch.randint(0, 2**31, (1,), generator=g))
            r = energy_distance(x, y, n_bootstrap=200, level=0.9, seed=seed)
            out.append(float(r.ci_low <= truth <= r.ci_high))
        return torch.tensor(out)

    cover = replicate(fn, 80, block_size=20, seed=3)
    rate = float(cover.mean())
    assert 0.75 <= rate <= 0.99, rate  # nominal 0.9; binomial sd with 80 reps is 0.034


def test_mmd_bootstrap_fields_and_bad_inputs():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 2
    r = mmd(x, y, n_bootstrap=50, seed=1)
    assert r.ci_low < r.estimate < r.ci_high and r.stderr > 0 and r.n_bootstrap == 50
    r2 = mmd(x, y, n_bootstrap=50, seed=1)
    assert r2.ci_low == r.ci_low  # seeded
    assert list(r.to_frame().columns)[:2] == ["estimate", "stderr"]
    with pytest.raises(ValueError, match="same dimension"):
        wasserstein2(x, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n_bootstrap"):
        energy_distance(x, y, n_bootstrap=-1)
    with pytest.raises(ValueError, match="level"):
        mmd(x, y, level=1.5)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        wasserstein2(x * float("nan"), y)
    with pytest.raises(ValueError, match="y_ref"):
        wasserstein2(x, y, y_ref=y[:10])
