"""Non-conservativity rho = ||J - J^T||_F / (2 ||J||_F): JVP+VJP probes vs exact Jacobians."""
import math

import pytest
import torch

from genstat.gauge import EnergyScore, FreeScore, nonconservativity
from genstat.mc import replicate

D64 = torch.float64


def _field_with_rho(rho: float, dim: int = 6, seed: int = 0):
    """Linear field M = S + a A with S symmetric, A antisymmetric: rho = a|A| / sqrt(|S|^2 + a^2 |A|^2)."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(dim, dim, generator=g, dtype=D64)
    S, A = 0.5 * (B + B.T), 0.5 * (B - B.T)
    a = rho * S.norm() / math.sqrt(1.0 - rho**2) / A.norm()
    return S + a * A


@pytest.mark.parametrize("rho", [0.0, 0.01, 0.35])
def test_linear_rho_within_three_stderr(rho):
    M = _field_with_rho(rho)
    x = torch.randn(32, 6, dtype=D64, generator=torch.Generator().manual_seed(1))
    exact = nonconservativity(lambda z: z @ M.T, x, exact=True)
    assert abs(float(exact.estimate) - rho) < 1e-12
    est = nonconservativity(lambda z: z @ M.T, x, n_probes=16, generator=torch.Generator().manual_seed(2))
    assert est.n_samples == 32 * 16
    if rho == 0.0:
        assert float(est.estimate) < 1e-7
    else:
        assert float(est.stderr) > 0
        assert abs(float(est.estimate) - rho) < 3 * float(est.stderr)
        assert float(est.stderr) < 0.1 * rho


@pytest.mark.parametrize("rho", [0.01, 0.35])
def test_nonlinear_rho_within_three_stderr(rho):
    # gradient of a quartic potential plus a rotation a A tanh(x): exact rho from full Jacobians
    g = torch.Generator().manual_seed(5)
    A = torch.randn(5, 5, generator=g, dtype=D64)
    A = A - A.T
    a = {0.01: 0.01, 0.35: 0.5}[rho]
    field = lambda z: -z - 0.1 * z**3 + a * torch.tanh(z) @ A.T  # noqa: E731
    x = torch.randn(40, 5, dtype=D64, generator=g)
    exact = nonconservativity(field, x, exact=True)
    est = nonconservativity(field, x, n_probes=16, generator=g)
    assert abs(float(est.estimate) - float(exact.estimate)) < 3 * float(est.stderr)
    lo, hi = est.confidence_interval(0.99)
    assert float(lo) < float(est.estimate) < float(hi)
    assert est.to_frame().shape == (1, 7)


def test_stderr_calibration_over_replications():
    """The delta-method stderr gives ~95% coverage of the exact rho over 200 seeded replications."""
    M = _field_with_rho(0.2, dim=4, seed=7)
    x = torch.randn(8, 4, dtype=D64, generator=torch.Generator().manual_seed(8))

    def one(n, gen, device):
        out = []
        for _ in range(n):
            r = nonconservativity(lambda z: z @ M.T, x, n_probes=8, generator=gen)
            out.append((float(r.estimate) - 0.2) / float(r.stderr))
        return torch.tensor(out)

    z = replicate(one, 200, block_size=20, seed=0)
    coverage = float((z.abs() < 1.96).double().mean())
    assert 0.90 < coverage < 0.99  # binomial sd ~ 0.015 at n = 200


def test_models_energy_is_conservative_free_is_not():
    x = torch.randn(6, 4, dtype=D64, generator=torch.Generator().manual_seed(0))
    e = EnergyScore(4, hidden=16, depth=2, generator=torch.Generator().manual_seed(1)).double()
    f = FreeScore(4, hidden=16, depth=2, generator=torch.Generator().manual_seed(2)).double()
    assert float(nonconservativity(lambda z: e(z, 0.1), x, exact=True).estimate) < 1e-12
    assert float(nonconservativity(lambda z: f(z, 0.1), x, exact=True).estimate) > 1e-4
    # autograd fallback for fields that torch.func cannot trace gives the same answer
    M = _field_with_rho(0.35, dim=4)

    def autograd_field(z):
        with torch.enable_grad():
            z = z if z.requires_grad else z.detach().requires_grad_(True)
            y = z @ M.T
            return y * 1.0 + 0 * torch.autograd.grad(y.sum(), z, create_graph=True)[0]

    r = nonconservativity(autograd_field, x, exact=True)
    r2 = nonconservativity(autograd_field, x, n_probes=4, generator=torch.Generator().manual_seed(0))
    assert abs(float(r.estimate) - 0.35) < 1e-10 and abs(float(r2.estimate) - 0.35) < 5 * float(r2.stderr)


def test_bad_inputs():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="n_probes"):
        nonconservativity(lambda z: z, x, n_probes=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        nonconservativity(lambda z: z, x)
    with pytest.raises(ValueError, match="field must map"):
        nonconservativity(lambda z: z[:, :2], x, exact=True)
    with pytest.raises(ValueError, match=r"x must have shape"):
        nonconservativity(lambda z: z, torch.randn(3), exact=True)
