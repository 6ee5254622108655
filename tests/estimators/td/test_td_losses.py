"""GGD NLL (the |d/a|^b form recovers beta, the released |d|*b form does not), value_loss kinds."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from estimators.td import (VALUE_LOSS_KINDS, GeneralizedGaussian, biev_variance, biv_weights,
                           ensemble_excess_kurtosis, gaussian_nll, ggd_fisher_information, ggd_nll,
                           risk_averse_weights, value_loss)
from genstat.mc import block_generator

F64 = torch.float64


def test_ggd_nll_is_minus_log_prob():
    d = torch.linspace(-4, 4, 41, dtype=F64)
    for beta, scale in ((0.5, 1.0), (1.3, 0.7), (4.0, 2.0)):
        ref = -GeneralizedGaussian(0.0, torch.tensor(scale, dtype=F64), torch.tensor(beta, dtype=F64)).log_prob(d)
        torch.testing.assert_close(ggd_nll(d, beta, scale), ref, rtol=1e-12, atol=1e-12)


def _released_code_nll(delta, beta):
    # the authors' released code: |delta| * beta in place of |delta|^beta (REFERENCE.md §6)
    return delta.abs() * beta - math.log(beta) + math.log(2.0) + math.lgamma(1 / beta)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_ggd_nll_gradient_is_finite_at_an_exact_zero_td_error(beta):
    # found by the SB3 integration: for beta < 1 the gradient at delta = 0 was NaN (inf * 0), which stopped
    # training on CartPole at step 12,288 and spreads through shared gradient clipping to every parameter
    d = torch.tensor([0.0, 0.3, -0.2], dtype=F64, requires_grad=True)
    b = torch.tensor(beta, dtype=F64, requires_grad=True)
    s = torch.tensor(1.5, dtype=F64, requires_grad=True)
    ggd_nll(d, b, s).sum().backward()
    assert bool(torch.isfinite(d.grad).all() and torch.isfinite(b.grad) and torch.isfinite(s.grad))
    assert float(d.grad[0]) == 0.0
    # away from 0 the gradient is the analytic one: beta |d|^(beta-1) sign(d) / s^beta
    ref = beta * (0.3 / 1.5) ** (beta - 1) / 1.5
    assert abs(float(d.grad[1]) - ref) < 1e-12


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 4.0])
def test_minimising_ggd_nll_recovers_beta_and_released_form_does_not(beta):
    n = 200_000
    d = GeneralizedGaussian(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64), torch.tensor(beta, dtype=F64))
    delta = d.sample((n,), generator=block_generator(0, int(10 * beta)))

    def fit(nll):
        return minimize_scalar(lambda b: float(nll(delta, b).mean()), bounds=(0.05, 20.0), method="bounded",
                               options={"xatol": 1e-7}).x

    b_hat = fit(lambda x, b: ggd_nll(x, torch.tensor(b, dtype=F64)))
    # alpha = 1 known: se(log beta) = 1 / sqrt(n I_bb)
    se = beta / math.sqrt(n * float(ggd_fisher_information(torch.tensor(beta, dtype=F64))[1, 1]))
    assert abs(b_hat - beta) < 3 * se
    assert round(b_hat, 1 if beta >= 2 else 2) == pytest.approx(beta)  # 0.50 / 1.00 / 2.0 / 4.0
    b_bad = fit(_released_code_nll)
    assert abs(b_bad - beta) > 10 * se  # e.g. ~0.42 / 0.77 / 0.92 / 0.96 in REFERENCE.md


def test_gaussian_nll_is_minus_normal_log_prob():
    d = torch.linspace(-3, 3, 13, dtype=F64)
    lv = torch.linspace(-1, 1, 13, dtype=F64)
    ref = -torch.distributions.Normal(0.0, torch.exp(0.5 * lv)).log_prob(d)
    torch.testing.assert_close(gaussian_nll(d, lv), ref)


def test_risk_averse_weights():
    b = torch.tensor([0.5, 1.0, 2.5], requires_grad=True)
    w = risk_averse_weights(b)
    assert not w.requires_grad
    torch.testing.assert_close(w, torch.tensor([0.375, 0.75, 1.875]))
    torch.testing.assert_close(risk_averse_weights(b, normalize=False), b.detach())
    with pytest.raises(ValueError, match="beta"):
        risk_averse_weights(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="beta"):
        ggd_nll(torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="scale"):
        ggd_nll(torch.zeros(2), 1.0, 0.0)


def _batch(K=5, B=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(K, B, generator=g, dtype=F64).requires_grad_(True)
    y = torch.randn(K, B, generator=g, dtype=F64)
    raw = torch.randn(K, B, generator=g, dtype=F64)
    return v, y, raw


def test_value_loss_kinds_match_their_formulas():
    v, y, raw = _batch()
    beta = torch.nn.functional.softplus(raw) + 0.1
    assert VALUE_LOSS_KINDS == ("mse", "gauss_biv", "ggd_biev", "ggd_biev_pooled")
    torch.testing.assert_close(value_loss("mse", v, y), ((y - v) ** 2).mean())
    delta = y - v
    w = biv_weights(v.detach().var(0), min_ebs=16)
    ref = gaussian_nll(delta, raw).mean() + 0.1 * (w * delta**2).sum()
    torch.testing.assert_close(value_loss("gauss_biv", v, y, log_var=raw), ref)
    # this repository's earlier variant: batch-normalised risk weights, BIEV term summed over the batch,
    # unbiased variance and biased kurtosis
    w = biv_weights(biev_variance(delta.detach()), min_ebs=16)
    ref = (risk_averse_weights(beta) * ggd_nll(delta, beta)).mean() + 0.1 * (w * delta.abs()).sum()
    torch.testing.assert_close(value_loss("ggd_biev_pooled", v, y, beta=beta), ref)
    ref = ggd_nll(delta, beta).mean() + 0.1 * (w * delta.abs()).sum()
    torch.testing.assert_close(value_loss("ggd_biev_pooled", v, y, beta=beta, risk_averse=False), ref)


def _published_ggd_biev(v, y, beta, biv_coef=0.1, min_ebs=None):
    """The value loss of the authors' released code (``ggd_nll_loss + uncertainty_temperature *
    biev_loss(..., "mae")``, K members along axis 0 here), transcribed with numpy/scipy:

    - NLL: ``sum_k beta_kb / sum_j beta_jb * nll_kb``, averaged over the batch (their code writes
      ``|delta| * beta`` in the NLL; the paper's ``|delta|^beta`` is kept, see the test above);
    - BIEV variance per sample: ``np.var(td, ddof=0) / (scipy.stats.kurtosis(td, bias=False) / K + (K+1)/(K-1))``,
      clipped at 1e-8;
    - BIEV term: ``mean_b w_b sum_k |V_kb - y_kb|`` with ``w = 1/(var + xi)`` normalised to sum 1 (xi as BIV).
    """
    from scipy.stats import kurtosis

    d = (y - v).detach().numpy()
    b = beta.detach().numpy()
    K = d.shape[0]
    nll = np.abs(d) ** b - np.log(b) + np.log(2.0) + np.vectorize(math.lgamma)(1 / b)
    nll_term = (b / b.sum(0, keepdims=True) * nll).sum(0).mean()
    var = np.var(d, axis=0, ddof=0) / (kurtosis(d, axis=0, bias=False) / K + (K + 1) / (K - 1))
    var = np.clip(var, 1e-8, None)
    w = biv_weights(torch.from_numpy(var), min_ebs=min_ebs).numpy()
    biev_term = (w * np.abs(d).sum(0)).mean()
    return nll_term + biv_coef * biev_term


@pytest.mark.parametrize("B", [8, 32, 128])
def test_ggd_biev_is_the_published_loss(B):
    v, y, raw = _batch(B=B, seed=B)
    beta = torch.nn.functional.softplus(raw) + 0.1
    ref = _published_ggd_biev(v, y, beta)
    torch.testing.assert_close(value_loss("ggd_biev", v, y, beta=beta), torch.tensor(ref, dtype=F64),
                               rtol=1e-12, atol=0)
    # gradients flow to the values and the shape head
    b = beta.clone().requires_grad_(True)
    value_loss("ggd_biev", v, y, beta=b).backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(b.grad).all()


def test_pooled_biev_term_weighs_batch_size_times_more():
    # on the same TD errors (equal BIEV weights: identical variances) the pooled variant's BIEV term is
    # B times the published one (the missing 1/B), while the NLL terms agree with uniform beta
    K, B = 5, 128
    g = torch.Generator().manual_seed(3)
    spread = torch.randn(K, 1, generator=g, dtype=F64)
    y = torch.zeros(K, B, dtype=F64)
    v = spread + torch.linspace(-1, 1, B, dtype=F64)  # every sample has the same ensemble spread
    beta = torch.full((K, B), 1.5, dtype=F64)
    nll = ggd_nll(y - v, beta).mean()
    pub = value_loss("ggd_biev", v, y, beta=beta, biv_coef=1.0) - nll
    pooled = value_loss("ggd_biev_pooled", v, y, beta=beta, biv_coef=1.0) - nll
    torch.testing.assert_close(pooled, B * pub, rtol=1e-12, atol=0)


def test_biev_variance_conventions_match_scipy():
    from scipy.stats import kurtosis

    g = torch.Generator().manual_seed(4)
    d = torch.randn(5, 64, generator=g, dtype=F64) * torch.rand(1, 64, generator=g, dtype=F64)
    K = 5
    dn = d.numpy()
    torch.testing.assert_close(ensemble_excess_kurtosis(d), torch.from_numpy(kurtosis(dn, axis=0, bias=True)))
    torch.testing.assert_close(ensemble_excess_kurtosis(d, unbiased=True),
                               torch.from_numpy(kurtosis(dn, axis=0, bias=False)))
    ref = np.var(dn, axis=0, ddof=0) / (kurtosis(dn, axis=0, bias=False) / K + (K + 1) / (K - 1))
    torch.testing.assert_close(biev_variance(d, ddof=0, unbiased_kurtosis=True), torch.from_numpy(ref))
    ref = np.var(dn, axis=0, ddof=1) / (kurtosis(dn, axis=0, bias=True) / K + (K + 1) / (K - 1))
    torch.testing.assert_close(biev_variance(d), torch.from_numpy(ref))


def test_risk_averse_weights_per_sample_over_members():
    b = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    torch.testing.assert_close(risk_averse_weights(b, per_sample=True), torch.tensor([[0.25, 0.5], [0.75, 0.5]]))


def test_value_loss_gradients_and_shared_targets():
    v, y, raw = _batch()
    beta = (torch.nn.functional.softplus(raw) + 0.1).requires_grad_(True)
    loss = value_loss("ggd_biev", v, y[0], beta=beta) + value_loss("ggd_biev_pooled", v, y[0], beta=beta)
    loss.backward()
    assert v.grad is not None and beta.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("kind, kw, match", [
    ("huber", {}, "kind"),
    ("ggd_biev", {}, "beta"),
    ("gauss_biv", {}, "log_var"),
])
def test_value_loss_bad_input(kind, kw, match):
    v, y, _ = _batch()
    with pytest.raises(ValueError, match=match):
        value_loss(kind, v, y, **kw)


def test_value_loss_nan_and_shapes():
    v, y, _ = _batch()
    y[0, 3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        value_loss("mse", v, y)
    with pytest.raises(ValueError, match="targets"):
        value_loss("mse", v, torch.zeros(3))
    with pytest.raises(ValueError, match="values"):
        value_loss("mse", torch.zeros(4), torch.zeros(4))
