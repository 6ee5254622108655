"""Gauge decomposition: Lyapunov oracle for linear fields under N(0, Sigma) (REFERENCE.md section 3)."""
import pytest
import torch
from torch.testing import assert_close

from genstat.gauge import decompose, gauge_residual, linear_gauge_decomposition

D64 = torch.float64


def _problem(dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g, dtype=D64)
    Sigma = A @ A.T + 0.5 * torch.eye(dim, dtype=D64)
    M = torch.randn(dim, dim, generator=g, dtype=D64)
    return M, Sigma, g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lyapunov_split_is_exact(seed):
    M, Sigma, _ = _problem(seed=seed)
    dec = linear_gauge_decomposition(M, Sigma)
    Q, R = dec
    assert_close(Q, Q.T, rtol=0, atol=1e-12)
    assert_close(Q + R, M, rtol=0, atol=1e-12)
    assert_close(Q @ Sigma + Sigma @ Q, M @ Sigma + Sigma @ M.T, rtol=0, atol=1e-10)
    assert_close(dec.W, -dec.W.T, rtol=0, atol=1e-12)
    assert_close(Sigma @ dec.W, R, rtol=0, atol=1e-10)
    # L2(p) orthogonality: E[(Qx).(Rx)] = tr(Q Sigma R^T) = 0, hence the norms add up
    assert abs(float(torch.trace(Q @ Sigma @ R.T))) < 1e-10
    total = torch.trace(M @ Sigma @ M.T)
    assert_close(total, torch.trace(Q @ Sigma @ Q.T) + torch.trace(R @ Sigma @ R.T), rtol=1e-12, atol=0)


@pytest.mark.parametrize("form", ["score", "log_prob"])
def test_sigma_w_has_zero_gauge_residual(form):
    _, Sigma, g = _problem(dim=5)
    B = torch.randn(5, 5, generator=g, dtype=D64)
    W = B - B.T
    P = torch.linalg.inv(Sigma)
    x = torch.randn(64, 5, generator=g, dtype=D64) * 3
    lp = (lambda z: -z @ P) if form == "score" else (lambda z: -0.5 * ((z @ P) * z).sum(1))
    res = gauge_residual(lambda z: z @ (Sigma @ W).T, lp, x)
    assert res.shape == (64,)
    assert float(res.abs().max()) < 1e-10


def test_unweighted_helmholtz_is_not_the_gauge_split():
    M, Sigma, g = _problem(dim=4, seed=3)
    Q, R = linear_gauge_decomposition(M, Sigma)
    sym = 0.5 * (M + M.T)
    assert float((Q - sym).norm()) > 0.1 * float(Q.norm())
    P = torch.linalg.inv(Sigma)
    x = torch.randn(32, 4, generator=g, dtype=D64)
    score = lambda z: -z @ P  # noqa: E731
    assert float(gauge_residual(lambda z: z @ R.T, score, x).abs().max()) < 1e-10
    # the antisymmetric remainder of the unweighted split violates the gauge condition
    assert float(gauge_residual(lambda z: z @ (M - sym).T, score, x).abs().mean()) > 1e-2
    # ...and when Sigma = I both splits coincide
    Q0, _ = linear_gauge_decomposition(M, torch.eye(4, dtype=D64))
    assert_close(Q0, sym, rtol=0, atol=1e-12)


def test_decompose_quadratic_recovers_lyapunov():
    M, Sigma, g = _problem(dim=3, seed=4)
    L = torch.linalg.cholesky(Sigma)
    x = torch.randn(20000, 3, generator=g, dtype=D64) @ L.T
    dec = decompose(lambda z: z @ M.T, x, potential="quadratic", holdout=0)  # the in-sample projection
    Q, _ = linear_gauge_decomposition(M, Sigma)
    A = 0.5 * (dec.potential.A + dec.potential.A.T).detach()
    assert float((A - Q).norm() / Q.norm()) < 0.05
    # exact with the sample covariance: solve the Lyapunov equation of the empirical second moment
    Qh, _ = linear_gauge_decomposition(M, x.T @ x / len(x))
    assert float((A - Qh).norm() / Q.norm()) < 0.02  # b absorbs the (tiny) sample mean
    assert abs(dec.field_norm2 - dec.conservative_norm2 - dec.residual_norm2) < 1e-8 * dec.field_norm2
    assert abs(dec.cross) < 1e-8 * dec.field_norm2


def test_decompose_measures_norms_on_held_out_points():
    # issue 16: the norms were measured on the points the potential was fitted to, where the residual
    # is biased low. Default: the last 20% of the samples are held out of the fit and the norms use them.
    M, Sigma, g = _problem(dim=6, seed=2)
    L = torch.linalg.cholesky(Sigma)
    x = torch.randn(60, 6, generator=g, dtype=D64) @ L.T
    field = lambda z: z @ M.T  # noqa: E731
    dec = decompose(field, x, potential="quadratic")
    assert (dec.n_eval, dec.held_out) == (12, True)
    ref = decompose(field, x[:48], potential="quadratic", holdout=0)  # the same fit, on the 48 training points
    assert_close(dec.potential.A, ref.potential.A)
    r = field(x[48:]) - dec.conservative(x[48:])
    assert_close(torch.tensor(dec.residual_norm2, dtype=D64), r.pow(2).sum(1).mean())
    assert_close(torch.tensor(dec.residual_norm2_stderr, dtype=D64), r.pow(2).sum(1).std() / 12**0.5)
    # with 48 points for 27 parameters the in-sample residual is far below the held-out one
    assert ref.residual_norm2 < dec.residual_norm2
    with pytest.raises(ValueError, match="holdout must be"):
        decompose(field, x, potential="quadratic", holdout=1.0)
    with pytest.raises(ValueError, match="fewer than 2 points"):
        decompose(field, x[:3], potential="quadratic")


def test_decompose_mlp_fits_conservative_part():
    g = torch.Generator().manual_seed(0)
    Sigma = torch.tensor([[1.0, 0.3], [0.3, 2.0]])
    M = torch.tensor([[-1.0, 0.8], [-0.4, -0.5]])
    L = torch.linalg.cholesky(Sigma)
    x = torch.randn(4000, 2, generator=g) @ L.T
    dec = decompose(lambda z: z @ M.T, x, steps=300, hidden=32, depth=2, lr=3e-3, batch_size=256, generator=g)
    Q, R = linear_gauge_decomposition(M.double(), Sigma.double())
    err = (dec.conservative(x).double() - x.double() @ Q.T).pow(2).sum(1).mean()
    assert float(err) < 0.02 * dec.field_norm2
    assert abs(dec.field_norm2 - dec.conservative_norm2 - dec.residual_norm2) < 0.02 * dec.field_norm2
    assert_close(dec.residual(x[:5]), (x[:5] @ M.T) - dec.conservative(x[:5]))
    assert dec.losses.shape == (300,) and float(dec.losses[-50:].mean()) < float(dec.losses[:10].mean())
    assert list(dec.to_frame().columns)[:3] == ["field_norm2", "conservative_norm2", "residual_norm2"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="M must be a square matrix"):
        linear_gauge_decomposition(torch.zeros(2, 3), torch.eye(2))
    with pytest.raises(ValueError, match="Sigma must be positive definite"):
        linear_gauge_decomposition(torch.eye(2), torch.diag(torch.tensor([1.0, -1.0])))
    with pytest.raises(ValueError, match="Sigma must be symmetric"):
        linear_gauge_decomposition(torch.eye(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="field must map"):
        gauge_residual(lambda z: z[:, :2], lambda z: -z, x)
    with pytest.raises(ValueError, match="log_prob_or_score must return"):
        gauge_residual(lambda z: z, lambda z: z[:, :2], x)
    x = torch.randn(20, 3)  # decompose holds out 20% of its samples for the norms
    with pytest.raises(ValueError, match="field must map"):
        decompose(lambda z: z.sum(1), x, potential="quadratic")
    with pytest.raises(ValueError, match="potential must be"):
        decompose(lambda z: z, x, potential="cubic")
    with pytest.raises(TypeError, match="generator"):
        decompose(lambda z: z, x, steps=2)
