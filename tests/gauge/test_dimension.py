"""Intrinsic dimension with exact scores (REFERENCE.md section 3) and the classical baselines."""
import math

import pytest
import torch
from torch.testing import assert_close

from genstat.datasets import LinearSubspace, Sphere
from genstat.gauge import id_flipd, id_flow_jacobian, id_mle, id_score_svd, id_twonn, spectral_gap

D64 = torch.float64


def _manifolds():
    g = torch.Generator().manual_seed(0)
    return {"linear5_R20": LinearSubspace(5, 20, generator=g), "sphere2_R10": Sphere(2, 10, generator=g)}


MANIFOLDS = _manifolds()


@pytest.mark.parametrize("name", list(MANIFOLDS))
@pytest.mark.parametrize("sigma", [0.1, 0.05, 0.01])
def test_score_svd_recovers_dimension(name, sigma):
    m = MANIFOLDS[name]
    x0 = m.sample(10, torch.Generator().manual_seed(1))
    est = id_score_svd(m.score, x0, sigma=sigma, n_neighbors=4 * m.ambient_dim,
                       generator=torch.Generator().manual_seed(2))
    assert est.dimension == m.dim
    assert bool((est.statistic == m.dim).all())
    assert est.spectrum.shape == (m.ambient_dim,)
    assert bool((est.spectrum[:-1] >= est.spectrum[1:]).all())


def test_score_svd_k_equals_2d_linear_and_centering():
    """REFERENCE: exact scores, D=20, d=5, K=2D: accuracy 1.0 at sigma <= 0.1; uncentred ratio gives d - 1."""
    m = MANIFOLDS["linear5_R20"]
    x0 = m.sample(30, torch.Generator().manual_seed(3))
    est = id_score_svd(m.score, x0, sigma=0.1, n_neighbors=40, generator=torch.Generator().manual_seed(4))
    assert bool((est.statistic == 5).all())
    raw = id_score_svd(m.score, x0, sigma=0.1, n_neighbors=40, generator=torch.Generator().manual_seed(4),
                       center=False, criterion="ratio")
    assert raw.dimension == 4


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_flow_jacobian_recovers_dimension(name):
    m = MANIFOLDS[name]
    g = torch.Generator().manual_seed(5)
    x = m.sample(3, g, noise=1.0)
    est = id_flow_jacobian(m.score, x, sigma_max=1.0, sigma_min=1e-3, n_steps=32)
    assert est.dimension == m.dim and bool((est.statistic == m.dim).all())


def test_flow_jacobian_singular_values_linear():
    """Theorem 2 with the exact linear score: tangent sqrt((1 + s_min^2) / 2) = 0.7071, normal s_min = 1e-3."""
    m = LinearSubspace(3, 8, generator=torch.Generator().manual_seed(0))
    x = m.sample(3, torch.Generator().manual_seed(1), noise=1.0)
    est = id_flow_jacobian(m.score, x, sigma_max=1.0, sigma_min=1e-3, n_steps=64)
    tangent = math.sqrt((1 + 1e-6) / 2)
    assert_close(est.spectrum[:3], torch.full((3,), tangent, dtype=D64), rtol=1e-6, atol=0)
    assert_close(est.spectrum[3:], torch.full((5,), 1e-3, dtype=D64), rtol=1e-4, atol=0)


@pytest.mark.parametrize("sigma", [0.1, 0.01])
def test_flipd_linear_closed_form(sigma):
    """LID = d - d s^2/(t^2+s^2) + s^2 |x|^2/(t^2+s^2)^2 on the subspace (t = 1): 5.0000 at 0.01, ~5.0006 at 0.1."""
    m = MANIFOLDS["linear5_R20"]
    x = m.sample(16, torch.Generator().manual_seed(6))
    est = id_flipd(m.score, x, sigma)
    q = 1.0 + sigma**2
    expected = 5 - 5 * sigma**2 / q + sigma**2 * x.pow(2).sum(1) / q**2
    assert_close(est.statistic, expected, rtol=1e-9, atol=1e-9)
    assert est.dimension == 5
    assert_close(est.spectrum[:5], torch.full((5,), 1 / q, dtype=D64), rtol=1e-9, atol=0)


@pytest.mark.parametrize("sigma", [0.1, 0.05])
def test_flipd_sphere(sigma):
    m = MANIFOLDS["sphere2_R10"]
    est = id_flipd(m.score, m.sample(16, torch.Generator().manual_seed(7)), sigma)
    assert est.dimension == 2
    assert float((est.statistic - 2).abs().max()) < 0.05


def test_classical_baselines_on_gaussian_subspaces():
    g = torch.Generator().manual_seed(8)
    m = LinearSubspace(5, 20, generator=g)
    x = m.sample(1500, g, noise=0.01)
    mle, two = id_mle(x), id_twonn(x)
    assert mle.dimension == 5 and two.dimension == 5
    assert abs(mle.estimate - 5) < 0.4 and abs(two.estimate - 5) < 0.5
    assert abs(id_mle(x, average="inverse").estimate - 5) < 0.4
    s = Sphere(2, 10, generator=g).sample(1500, g)
    assert id_mle(s).dimension == 2 and id_twonn(s).dimension == 2
    assert id_mle(s).to_frame().loc[0, "method"] == "mle"


def test_spectral_gap():
    v = torch.tensor([[10.0, 9.0, 8.5, 0.3, 0.2], [5.0, 1.0, 0.9, 0.001, 0.0005]])
    assert spectral_gap(v).tolist() == [3, 1]
    assert spectral_gap(v, criterion="ratio").tolist() == [3, 3]
    with pytest.raises(ValueError, match="criterion"):
        spectral_gap(v, criterion="elbow")


def test_bad_inputs():
    m = MANIFOLDS["sphere2_R10"]
    x0 = m.sample(2, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"n_neighbors must be >= 2 D = 20.*spectral gap is lost"):
        id_score_svd(m.score, x0, sigma=0.1, n_neighbors=10, generator=g)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        id_score_svd(m.score, x0, sigma=0.0, generator=g)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        id_flipd(m.score, x0, -0.1)
    with pytest.raises(ValueError, match="score must map"):
        id_flipd(lambda x, s: x[:, :3], x0, 0.1)
    with pytest.raises(ValueError, match="score must map"):
        id_score_svd(lambda x, s: x.sum(1), x0, sigma=0.1, generator=g)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        id_flow_jacobian(m.score, x0, sigma_max=0.1, sigma_min=0.2)
    with pytest.raises(ValueError, match=r"x must have shape"):
        id_flow_jacobian(m.score, torch.zeros(3))
    with pytest.raises(ValueError, match="n_neighbors"):
        id_mle(x0, n_neighbors=5)
    with pytest.raises(ValueError, match="discard_fraction"):
        id_twonn(x0, discard_fraction=1.0)
