"""GGD NLL (the |d/a|^b form recovers beta, the released |d|*b form does not), value_loss kinds."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from estimators.td import (VALUE_LOSS_KINDS, GeneralizedGaussian, biev_variance, biv_weights, gaussian_nll,
                           ggd_fisher_information, ggd_nll, risk_averse_weights, value_loss)
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
    assert VALUE_LOSS_KINDS == ("mse", "gauss_biv", "ggd_biev")
    torch.testing.assert_close(value_loss("mse", v, y), ((y - v) ** 2).mean())
    delta = y - v
    w = biv_weights(v.detach().var(0), min_ebs=16)
    ref = gaussian_nll(delta, raw).mean() + 0.1 * (w * delta**2).sum()
    torch.testing.assert_close(value_loss("gauss_biv", v, y, log_var=raw), ref)
    w = biv_weights(biev_variance(delta.detach()), min_ebs=16)
    ref = (risk_averse_weights(beta) * ggd_nll(delta, beta)).mean() + 0.1 * (w * delta.abs()).sum()
    torch.testing.assert_close(value_loss("ggd_biev", v, y, beta=beta), ref)
    ref = ggd_nll(delta, beta).mean() + 0.1 * (w * delta.abs()).sum()
    torch.testing.assert_close(value_loss("ggd_biev", v, y, beta=beta, risk_averse=False), ref)


def test_value_loss_gradients_and_shared_targets():
    v, y, raw = _batch()
    beta = (torch.nn.functional.softplus(raw) + 0.1).requires_grad_(True)
    loss = value_loss("ggd_biev", v, y[0], beta=beta)  # shared targets (batch,)
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
