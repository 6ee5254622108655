"""LightSB training: scale-free units, early failure on non-finite values, divergence warning, host syncs
(genstat.lightsb._training)."""
import math
import sys
import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode

from genstat.lightsb import LightSB, cbw2_uvp, gaussian_eot, random_gaussian_eot
from genstat.lightsb._training import CHECK_EVERY
from genstat.mc import block_generator


def _scaled(e, sx, sy):
    # (sx X, sy Y, sx sy eps) is the EOT problem of (X, Y, eps) in other units: cost -x^T y scales by sx sy
    return gaussian_eot(sx * e.a, sx**2 * e.A, sy * e.b, sy**2 * e.B, sx * sy * e.epsilon)


def _fit(e, steps=300):
    m = LightSB(e.dim, 1, e.epsilon, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # and no divergence warning on a healthy fit
        m.fit(e.sample_source, e.sample_target, steps=steps, batch_size=1024, generator=block_generator(0, 0))
    return m, cbw2_uvp(m, e, n_test=300).estimate


# c^2 = 1e-3 and 1e3 for both sides (the scale-equivariant pair of issue 17), and the target alone scaled
# by 1e-3 and 1e3 in variance (with eps scaled by sy: the same problem again)
@pytest.mark.parametrize("sx, sy", [(1e-3**0.5, 1e-3**0.5), (1e3**0.5, 1e3**0.5), (1.0, 1e-3**0.5), (1.0, 1e3**0.5)])
def test_fit_is_scale_free(sx, sy):
    base = random_gaussian_eot(16, 1.0, seed=0)  # rotated covariances, spectrum in [0.25, 4]
    m1, ref = _fit(base)
    e = _scaled(base, sx, sy)
    m, out = _fit(e)
    # Exact equivariance: the scaled samples are the base ones times (sx, sy) (same generator; the
    # Cholesky factor of s^2 A is s chol(A) up to rounding), fit divides by scales that are (sx, sy)
    # times the base ones, so both fits run the same float64 arithmetic up to rounding of ~1e-16;
    # measured relative differences of the estimate are 3e-13 to 3e-12 (of S: 6e-16), so 1e-8 leaves
    # room without hiding a real change. Before the fix the four cases gave 0.025 %, 23.9 %, 0.047 % and
    # 137 % against 0.0175 % unscaled (relative differences 0.44 to 7.8e3).
    assert out == pytest.approx(ref, rel=1e-8)
    assert ref < 0.05
    # and the parameters map back as S -> (sy / sx) S, r -> sy r
    torch.testing.assert_close(m.S().detach(), (sy / sx) * m1.S().detach(), rtol=1e-8, atol=0.0)
    torch.testing.assert_close(m.r.detach(), sy * m1.r.detach(), rtol=1e-8, atol=1e-12 * sy)


def test_fit_losses_are_in_the_data_units():
    # fit trains in standardised units and reports the loss of the data's units: recompute the last step
    e = random_gaussian_eot(3, 0.5, seed=1)
    g = block_generator(0, 0)
    x, y = 10 * e.sample_source(500, g), 0.1 * e.sample_target(500, g)  # full batch: the loss is deterministic
    m = LightSB(3, 2, 0.5, dtype=torch.float64)
    res = m.fit(x, y, steps=CHECK_EVERY + 3, lr=1e-9, generator=g)  # tiny lr: the parameters barely move
    torch.testing.assert_close(res.losses[-1], m.loss(x, y).detach(), rtol=1e-6, atol=1e-6)


def _nan_after(sampler, first_bad_call):
    calls = []

    def draw(n, g, dev):
        calls.append(n)
        y = sampler(n, g, dev)
        return y if len(calls) < first_bad_call else torch.full_like(y, float("nan"))

    return draw, calls


def test_sampler_turning_nan_mid_run_is_caught_early():
    e = random_gaussian_eot(2, 1.0, seed=0)
    target, calls = _nan_after(lambda n, g, dev: e.sample_target(n, g), 7)
    m = LightSB(2, 1, 1.0, dtype=torch.float64)
    m.init_from(e.sample_target(100, block_generator(1, 0)))  # initialised: step s trains on the s-th draw
    start = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=rf"the target sampler returned a non-finite batch \(NaN or inf\) at step 7;"
                                         rf" LightSB.fit stopped at step {CHECK_EVERY} of 1000"):
        m.fit(e.sample_source, target, steps=1000, batch_size=64, generator=block_generator(0, 0))
    assert len(calls) == CHECK_EVERY  # stopped at the first check, not after 1000 steps
    # the parameters are those of the last check that passed (here the initial ones), not NaN
    for p, q in zip(m.parameters(), start):
        torch.testing.assert_close(p.detach(), q)


def test_non_finite_loss_on_finite_batches_names_the_step():
    e = random_gaussian_eot(2, 1.0, seed=0)
    m = LightSB(2, 1, 1.0, dtype=torch.float32)
    m.init_from(e.sample_target(100, block_generator(1, 0)).float())
    with pytest.raises(FloatingPointError, match=r"at step \d+ on finite batches: training diverged"):
        m.fit(e.sample_source, e.sample_target, steps=300, batch_size=64, lr=1e4, warmup=0.0,
              generator=block_generator(0, 0))
    assert all(bool(torch.isfinite(p).all()) for p in m.parameters())


def test_exploding_finite_loss_warns():
    # K = 1, d = 2 with lr 100 (1000x the default): the loss climbs to ~1e28 and beyond, staying finite
    # in float64; the rule flags a window median above both the step-1 loss and the best + d
    e = random_gaussian_eot(2, 1.0, seed=0)
    m = LightSB(2, 1, 1.0, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"LightSB training is unstable: the median loss over steps 1-50"):
        res = m.fit(e.sample_source, e.sample_target, steps=2 * CHECK_EVERY, batch_size=256, lr=100.0,
                    generator=block_generator(0, 0))
    assert bool(torch.isfinite(res.losses).all()) and float(res.losses.max()) > 1e20


_HOST = {torch.Tensor.cpu, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class _HostReads(TorchFunctionMode):
    """Counts reads of tensor values into Python (each a device sync on CUDA), except torch.optim's own
    (it reads its CPU step counters)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST and "torch/optim" not in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
            self.n += 1
        return func(*args, **(kwargs or {}))


def test_loss_is_read_once_per_check_not_per_step():
    # the former loop called loss.cpu() on every step: 200 more steps meant 200 more host reads
    e = random_gaussian_eot(2, 1.0, seed=0)
    g = block_generator(0, 0)
    x, y = e.sample_source(512, g), e.sample_target(512, g)
    counts = []
    for steps in (2 * CHECK_EVERY, 6 * CHECK_EVERY):
        m = LightSB(2, 3, 1.0, dtype=torch.float64)
        with _HostReads() as reads:
            m.fit(x, y, steps=steps, batch_size=64, generator=block_generator(0, 1))
        counts.append(reads.n)
    extra_checks = 4
    assert counts[1] - counts[0] <= 3 * extra_checks  # three reads per check (losses, batch flags, parameters)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_syncs_only_at_checks():
    e = random_gaussian_eot(4, 1.0, seed=0)
    g = block_generator(0, 0)
    x, y = e.sample_source(4096, g).cuda(), e.sample_target(4096, g).cuda()
    m = LightSB(4, 3, 1.0, device="cuda")
    m.init_from(y, generator=torch.Generator(device="cuda").manual_seed(0))
    steps = 4 * CHECK_EVERY
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m.fit(x, y, steps=steps, batch_size=1024, generator=torch.Generator(device="cuda").manual_seed(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 3 * (steps // CHECK_EVERY) + 8, len(syncs)  # a few per check and at the start, not per step


def test_lower_cholesky_entries_train_at_lower_lr_ratio():
    # the strictly lower Cholesky entries have their own Adam group at lower_lr_ratio * lr
    # (default 1/sqrt(d)); a vanishing ratio freezes them at their zero initialisation
    from genstat.lightsb._training import default_lower_lr_ratio

    e = random_gaussian_eot(4, 1.0, seed=0)
    moved = {}
    for ratio in (1e-12, 1.0):
        m = LightSB(4, 2, 1.0, dtype=torch.float64)
        m.fit(e.sample_source, e.sample_target, steps=20, batch_size=256, lr=1e-2, lower_lr_ratio=ratio,
              generator=block_generator(0, 0))
        moved[ratio] = float(m.lower.detach().tril(-1).abs().max())
    assert moved[1e-12] < 1e-9 < 1e-3 < moved[1.0]
    assert default_lower_lr_ratio(64) == 0.125
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="lower_lr_ratio"):
            LightSB(4, 1, 1.0).fit(e.sample_source, e.sample_target, steps=1, lower_lr_ratio=bad)
