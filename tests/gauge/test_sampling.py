"""Langevin with s = grad log p + r keeps p invariant iff r satisfies the gauge condition."""
import pytest
import scipy.linalg
import torch

from genstat.gauge import langevin_sampler, linear_gauge_decomposition
from genstat.mc import estimate

D64 = torch.float64
SIGMA = torch.tensor([[1.0, 0.5], [0.5, 4.0]], dtype=D64)
W = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D64)


@pytest.mark.parametrize("extra", ["none", "gauge", "plain"])
def test_langevin_stationary_covariance_matches_euler_maruyama_lyapunov(extra):
    P = torch.linalg.inv(SIGMA)
    M = -P + {"none": 0 * W, "gauge": SIGMA @ W, "plain": W}[extra]
    h = 0.05
    sampler = langevin_sampler(lambda x: x @ M.T, 2, n_steps=400, step_size=h)
    r = estimate(lambda x: torch.stack([x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], 1), sampler, 4096, seed=1)
    # exact stationary covariance of the Euler-Maruyama chain x' = (I + hM) x + sqrt(2h) xi
    A = (torch.eye(2, dtype=D64) + h * M).numpy()
    C = torch.as_tensor(scipy.linalg.solve_discrete_lyapunov(A, 2 * h * torch.eye(2, dtype=D64).numpy()))
    expected = torch.stack([C[0, 0], C[0, 1], C[1, 1]])
    assert bool(((r.estimate - expected).abs() < 5 * r.stderr).all()), (r.estimate, expected, r.stderr)
    # as h -> 0 the gauge field keeps Sigma, the plain rotation does not (Lyapunov: M C + C M^T + 2I = 0)
    C0 = torch.as_tensor(scipy.linalg.solve_continuous_lyapunov(M.numpy(), -2 * torch.eye(2, dtype=D64).numpy()))
    err = float((C0 - SIGMA).norm() / SIGMA.norm())
    assert (err < 1e-12) if extra != "plain" else (err > 0.3)


def test_exact_iff_conservative_part_is_the_score():
    """s samples p exactly iff its L2(p) conservative part is grad log p (uniqueness of the split)."""
    P = torch.linalg.inv(SIGMA)
    Q_gauge, _ = linear_gauge_decomposition(-P + SIGMA @ W, SIGMA)
    Q_plain, _ = linear_gauge_decomposition(-P + W, SIGMA)
    torch.testing.assert_close(Q_gauge, -P, rtol=0, atol=1e-12)
    assert float((Q_plain + P).norm()) > 0.1


def test_bad_inputs():
    with pytest.raises(ValueError, match="step_size"):
        langevin_sampler(lambda x: -x, 2, step_size=0.0)
    with pytest.raises(ValueError, match="dim"):
        langevin_sampler(lambda x: -x, 0)
    s = langevin_sampler(lambda x: x[:, :1], 2, n_steps=1)
    with pytest.raises(ValueError, match="field must map"):
        s(4, torch.Generator().manual_seed(0))
