"""Score models and denoising score matching; learned-model intrinsic dimension."""
import pytest
import torch
from torch.testing import assert_close

import genstat.gauge as gauge
from genstat.datasets import LinearSubspace, Sphere
from genstat.gauge import (EnergyScore, FreeScore, fit_score, id_flipd, id_flow_jacobian, id_score_svd,
                           nonconservativity)

D64 = torch.float64


def test_all_names_resolve():
    for name in gauge.__all__:
        assert getattr(gauge, name) is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_energy_score_is_minus_grad_energy(dtype):
    m = EnergyScore(3, hidden=16, depth=2, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    sig = torch.tensor([0.05, 0.1, 0.2, 0.5, 1.0], dtype=dtype)
    xr = x.clone().requires_grad_(True)
    e = m.energy(xr, sig).sum()
    (g,) = torch.autograd.grad(e, xr)
    s = m(x, sig)
    assert s.dtype == dtype and s.shape == (5, 3)
    assert_close(s, -g, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-5 if dtype == torch.float32 else 1e-10)
    (gd,) = torch.autograd.grad(m.potential(xr, sig).sum(), xr)
    assert_close(m.denoiser(x, sig), gd)


def test_model_bad_inputs():
    m = FreeScore(3, hidden=8, depth=1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(n, 3\)"):
        m(torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        m(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match=r"sigma must be a float or have shape \(2,\)"):
        m(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="smooth"):
        EnergyScore(3, activation="relu")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        FreeScore(3, sigma_min=1.0, sigma_max=0.1)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 3\)"):
        fit_score(m, torch.zeros(10, 2), steps=1, generator=g)
    with pytest.raises(ValueError, match="steps"):
        fit_score(m, torch.zeros(10, 3), steps=0, generator=g)
    with pytest.raises(ValueError, match="sigmas"):
        fit_score(m, torch.zeros(10, 3), sigmas=(0.0, 1.0), steps=1, generator=g)
    with pytest.raises(TypeError, match="model must be"):
        fit_score(torch.nn.Linear(3, 3), torch.zeros(10, 3), steps=1, generator=g)


def test_fit_score_sampler_and_discrete_levels():
    m = LinearSubspace(1, 3, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    model = FreeScore(3, hidden=16, depth=1, generator=g)
    res = fit_score(model, lambda n, gen, dev: m.sample(n, gen, dtype=torch.float32),
                    sigmas=torch.tensor([0.1, 0.3, 1.0]), steps=20, batch_size=32, generator=g)
    assert res.losses.shape == (20,) and res.to_frame().shape == (20, 2)
    assert bool(torch.isfinite(res.losses).all())


@pytest.mark.parametrize("cls", [EnergyScore, FreeScore])
def test_learned_score_small_linear(cls):
    """d = 2 in R^5: the trained denoiser approaches the exact one and score-SVD finds d = 2."""
    m = LinearSubspace(2, 5, generator=torch.Generator().manual_seed(0))
    data = m.sample(2000, torch.Generator().manual_seed(1), dtype=torch.float32)
    model = cls(5, hidden=48, depth=2, sigma_min=0.02, sigma_max=1.0, generator=torch.Generator().manual_seed(0))
    res = fit_score(model, data, steps=500, batch_size=128, lr=3e-3, generator=torch.Generator().manual_seed(2))
    assert float(res.losses[-50:].mean()) < 0.5 * float(res.losses[:20].mean())
    x0 = m.sample(10, torch.Generator().manual_seed(3), dtype=torch.float32)
    xn = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        err = (model.denoiser(xn, 0.1) - m.denoiser(xn, 0.1)).pow(2).sum(1).mean()
    assert float(err) < 0.02
    est = id_score_svd(model, x0, sigma=0.1, generator=torch.Generator().manual_seed(5))
    assert est.dimension == 2
    rho = nonconservativity(lambda z: model(z, 0.1), x0.double().float(), exact=True)
    if cls is EnergyScore:
        assert float(rho.estimate) < 1e-5


def _train(cls, manifold, steps, seed=0):
    data = manifold.sample(5000, torch.Generator().manual_seed(1), dtype=torch.float32)
    model = cls(manifold.ambient_dim, hidden=128, depth=3, sigma_min=0.01, sigma_max=1.0,
                generator=torch.Generator().manual_seed(seed))
    fit_score(model, data, steps=steps, batch_size=256, lr=1e-3, generator=torch.Generator().manual_seed(3))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["linear5_R20", "sphere2_R10"])
def test_learned_conservative_model_recovers_dimension(name, capsys):
    g = torch.Generator().manual_seed(0)
    m = LinearSubspace(5, 20, generator=g) if name == "linear5_R20" else Sphere(2, 10, generator=g)
    x0 = m.sample(20, torch.Generator().manual_seed(4), dtype=torch.float32)
    xs = x0[:8] + torch.randn(8, m.ambient_dim, generator=torch.Generator().manual_seed(5))
    report = {}
    for cls in (EnergyScore, FreeScore):
        model = _train(cls, m, steps=6000)
        dims = {
            "score_svd": id_score_svd(model, x0, sigma=0.1, generator=torch.Generator().manual_seed(2)).dimension,
            "flipd": id_flipd(model, x0, 0.05).dimension,
            "flow": id_flow_jacobian(model, xs, sigma_max=1.0, sigma_min=0.01, n_steps=32).dimension,
        }
        report[cls.__name__] = dims
    with capsys.disabled():
        print(f"\n{name}: {report}")
    assert all(v == m.dim for v in report["EnergyScore"].values()), report
