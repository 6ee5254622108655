"""Baselines and the paper's cantilever-beam case (100 input distributions)."""
import math

import numpy as np
import pytest
import torch

from estimators.importance import (
    CantileverInputs,
    aiscv,
    cantilever_beam,
    cantilever_deflection,
    is_separate,
    mc_multi,
    mixture_reweighting,
)

D = torch.distributions
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def normal(m=0.0, s=1.0):
    return D.Normal(torch.tensor(m, dtype=F64), torch.tensor(s, dtype=F64))


MEANS = [-1.0, 0.0, 0.5, 2.0]


@pytest.mark.parametrize("method", [mc_multi, mixture_reweighting, is_separate])
def test_baselines_unbiased_on_shifted_gaussians(method):
    inputs = [normal(m) for m in MEANS]
    truth = 1 + torch.tensor(MEANS, dtype=F64) ** 2
    r = method(lambda x: (x**2).expand(-1, 4), inputs, 8000, generator=gen(0))
    assert r.estimate.shape == (4,) and r.n_samples <= 8000
    assert bool(((r.estimate - truth).abs() < 5 * r.stderr).all())
    assert r.method == method.__name__


def test_mc_multi_shared_input_matches_closed_form_stderr():
    r = mc_multi(lambda x: torch.cat([x, x**2], 1), normal(), 40_000, generator=gen(1))
    # Var(X) = 1, Var(X^2) = 2
    torch.testing.assert_close(r.stderr, torch.tensor([1.0, 2.0], dtype=F64).sqrt() / 200, rtol=0.05, atol=0)


def test_mixture_reweighting_equals_mc_for_shared_input():
    r = mixture_reweighting(lambda x: x**2, normal(), 4000, generator=gen(2))
    assert abs(float(r.estimate[0]) - 1.0) < 5 * float(r.stderr[0])


def test_bad_budget():
    with pytest.raises(ValueError, match="fewer than 2 points per input"):
        mc_multi(lambda x: x.expand(-1, 4), [normal(m) for m in MEANS], 6, generator=gen(0))
    with pytest.raises(TypeError, match="budget"):
        mixture_reweighting(lambda x: x, normal(), 10.5, generator=gen(0))
    with pytest.raises(TypeError, match="generator"):
        mc_multi(lambda x: x, normal(), 100, generator=None)


# ---------------------------------------------------------------- the cantilever inputs
def test_cantilever_inputs_log_prob_and_sampling():
    p = cantilever_beam(8, seed=3)
    inp = p.inputs
    assert isinstance(inp, CantileverInputs) and inp.batch_shape == (8,) and inp.event_shape == (6,)
    for j in range(8):  # every correlation matrix is positive definite
        assert bool(torch.linalg.eigvalsh(inp.gauss.covariance_matrix[j]).min() > 0)
    x = inp.sample_with(20_000, gen(0))  # (n, J, 6)
    # log-normal marginals have the requested means and coefficients of variation
    m = x[:, :, :3].mean(0)
    torch.testing.assert_close(m, inp.delta[:, :3], rtol=3e-3, atol=0)
    cv = x[:, :, :3].std(0) / m
    torch.testing.assert_close(cv, torch.tensor([0.08, 0.08, 0.06], dtype=F64).expand(8, 3), rtol=0.03, atol=0)
    # log_prob = independent log-normals (torch) + the (w, t, L) Gaussian
    j = 5
    ref = D.LogNormal(inp.log_loc[j], inp.log_scale[j]).log_prob(x[:10, j, :3]).sum(-1)
    ref = ref + inp.gauss.log_prob(x[:10, j, 3:][:, None, :])[:, j]
    torch.testing.assert_close(inp.log_prob(x[:10, j][:, None, :])[:, j], ref)
    bad = x[:2, j].clone()
    bad[:, 2] = -1.0  # a negative Young modulus has density 0
    assert bool(torch.isinf(inp.log_prob(bad[:, None, :])[:, j]).all())


def test_cantilever_deflection_formula():
    x = torch.tensor([[556.8, 453.6, 200.0, 0.062, 0.0987, 4.29]], dtype=F64)
    fx, fy, e, w, t, L = x[0].tolist()
    ref = 4 * L**3 / (e * 1e9 * w * t) * math.sqrt((fx / w**2) ** 2 + (fy / t**2) ** 2)
    assert float(cantilever_deflection(x)[0]) == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------- the paper's ratios
@pytest.fixture(scope="module")
def cantilever_runs():
    p = cantilever_beam(100, seed=0)
    N = 20_000
    out = {
        "aiscv": aiscv(p.phis, p.inputs, N, weights="absolute", generator=gen(0)),
        "mc": mc_multi(p.phis, p.inputs, N, generator=gen(1)),
        "mix": mixture_reweighting(p.phis, p.inputs, N, generator=gen(2)),
    }
    return p, out


def test_cantilever_beats_separate_mc_by_25(cantilever_runs):
    _, r = cantilever_runs
    ratio = float((r["mc"].stderr ** 2).sum() / (r["aiscv"].stderr ** 2).sum())
    assert ratio >= 25, ratio


def test_cantilever_beats_mixture_reweighting_by_10(cantilever_runs):
    _, r = cantilever_runs
    ratio = float((r["mix"].stderr ** 2).sum() / (r["aiscv"].stderr ** 2).sum())
    assert ratio >= 10, ratio


def test_cantilever_estimates_agree(cantilever_runs):
    _, r = cantilever_runs
    z = (r["aiscv"].estimate - r["mc"].estimate) / (r["aiscv"].stderr ** 2 + r["mc"].stderr ** 2).sqrt()
    assert float(z.abs().max()) < 4.0          # 100 comparisons: max |z| of 100 normals
    assert abs(float(z.mean())) < 3 / math.sqrt(100) * 1.5
    assert r["aiscv"].n_samples == 20_000 and r["aiscv"].n_adaptive <= 10_000


def test_is_separate_item_api():
    p = cantilever_beam(3, seed=1)
    r = is_separate(p.phis, p.inputs, 3000, generator=gen(4))
    ref = mc_multi(p.phis, p.inputs, 30_000, generator=gen(5))
    z = (r.estimate - ref.estimate) / (r.stderr**2 + ref.stderr**2).sqrt()
    assert float(z.abs().max()) < 4.5
    np.testing.assert_array_less(r.stderr.numpy(), 0.01)


def test_mixture_reweighting_bounded_supports():
    # f_1 = U(0, 1), f_2 = U(0.5, 2): phi_2 = sqrt(x - 0.5) is NaN at points drawn from f_1 where
    # f_2 = 0 (weight 0). E[X(1 - X)] = 1/6; E[sqrt(X - 0.5)] = (2/3) sqrt(1.5)
    f = [D.Uniform(torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64)) for a, b in ((0.0, 1.0), (0.5, 2.0))]
    r = mixture_reweighting(lambda x: torch.cat([x * (1 - x), (x - 0.5).sqrt()], 1), f, 20_000, generator=gen(6))
    truth = torch.tensor([1 / 6, 2 / 3 * math.sqrt(1.5)], dtype=F64)
    assert bool(((r.estimate - truth).abs() < 5 * r.stderr).all()), (r.estimate, r.stderr)


def test_is_separate_carries_rqmc_df():
    r = is_separate(lambda x: torch.cat([x**2, x**4], 1), normal(), 8000, final="rqmc", defensive=0.0,
                    n_randomizations=4, generator=gen(7))
    assert r.df == 3
    assert bool(((r.estimate - torch.tensor([1.0, 3.0], dtype=F64)).abs() < 5 * r.stderr).all())
