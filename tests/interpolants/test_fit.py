"""fit: a learned velocity on Gaussian endpoints approaches the exact one in L2(rho_t)."""
import pytest
import torch

from genstat.datasets import GaussianMixture
from genstat.interpolants import Interpolant, exact_fields, fit, sample_times
from genstat.nn import TimeMLP


def gaussians(dtype=torch.float32):
    src = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -1.0]]), torch.tensor([[[1.0, 0.3], [0.3, 0.5]]]))
    tgt = GaussianMixture(torch.ones(1), torch.tensor([[-2.0, 1.0]]), torch.tensor([0.3]))
    return src.to(dtype), tgt.to(dtype)


def make_model(seed: int) -> torch.nn.Module:
    return TimeMLP(2, hidden=32, depth=2, time_embedding=8, generator=torch.Generator().manual_seed(seed))


def relative_l2(model, F, src, tgt, seed=0):
    """E_t E_{x ~ rho_t} |model - b|^2 / E|b|^2 on t in [0.05, 0.95], x_t drawn from the interpolant."""
    g = torch.Generator().manual_seed(seed)
    n = 4000
    x0, x1, z = src.sample(n, g), tgt.sample(n, g), torch.randn(n, 2, generator=g)
    t = 0.05 + 0.9 * torch.rand(n, generator=g)
    xt = F.interpolant.interpolate(x0, x1, t, z)
    with torch.no_grad():
        b = F.velocity(t, xt)
        err = ((model(t, xt) - b) ** 2).sum(1).mean()
    return float(err / (b**2).sum(1).mean())


@pytest.mark.parametrize("field,antithetic", [("b", True), ("b", False)])
def test_learned_velocity_approaches_exact(field, antithetic):
    src, tgt = gaussians()
    I = Interpolant("linear", "brownian")
    F = exact_fields(I, src, tgt)
    model = make_model(0)
    before = relative_l2(model, F, src, tgt)
    rec = fit(I, model, src.sample, tgt.sample, field=field, steps=300, batch_size=256, lr=3e-3,
              lr_schedule="cosine", antithetic=antithetic, t_range=(0.01, 0.99),
              generator=torch.Generator().manual_seed(1))
    after = relative_l2(model, F, src, tgt)
    assert rec.losses.shape == (300,) and rec.wall_time > 0
    assert before > 0.5
    assert after < 0.05, after
    assert list(rec.to_frame().columns) == ["step", "loss"]


def test_couplings_pool_ema_and_paired():
    src, tgt = gaussians()
    g = torch.Generator().manual_seed(2)
    I = Interpolant("linear", "none")
    for kw in (dict(coupling="ot", coupling_every=4, ema=0.9), dict(coupling="sinkhorn"),
               dict(time_sampling="stratified"), dict(time_sampling="logit_normal")):
        rec = fit(I, make_model(1), src.sample, tgt.sample, steps=5, batch_size=32, generator=g, **kw)
        assert bool(torch.isfinite(rec.losses).all())
    x0, x1 = src.sample(100, g), tgt.sample(100, g)
    rec = fit(I, make_model(1), x0, x1, coupling="paired", steps=3, batch_size=16, generator=g)
    assert rec.steps == 3
    rec = fit(Interpolant("mirror"), make_model(1), None, tgt.sample, field="eta", steps=3, batch_size=16,
              antithetic=True, generator=g)
    rec = fit(Interpolant("one_sided_linear"), make_model(1), None, x1, field="eta", steps=3, batch_size=16,
              generator=g)
    t = sample_times(1000, "stratified", g)
    assert float(t.min()) >= 0 and float(t.max()) <= 1


def test_fit_is_reproducible():
    src, tgt = gaussians()
    I = Interpolant("trig")
    r1 = fit(I, make_model(3), src.sample, tgt.sample, steps=5, batch_size=32,
             generator=torch.Generator().manual_seed(5))
    r2 = fit(I, make_model(3), src.sample, tgt.sample, steps=5, batch_size=32,
             generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(r1.losses, r2.losses, rtol=0, atol=0)


def test_bad_inputs():
    src, tgt = gaussians()
    I = Interpolant("linear", "none")
    g = torch.Generator().manual_seed(0)
    m = make_model(0)

    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, t, x):
            return self.w * x[:, :1]

    class Nan(Bad):
        def forward(self, t, x):
            return self.w * x * float("nan")

    with pytest.raises(ValueError, match="model must return a tensor of shape"):
        fit(I, Bad(), src.sample, tgt.sample, steps=2, batch_size=8, generator=g)
    with pytest.raises(FloatingPointError, match="at step 1"):
        fit(I, Nan(), src.sample, tgt.sample, steps=2, batch_size=8, generator=g)
    with pytest.raises(ValueError, match="source and target batches differ"):
        fit(I, m, lambda n, g, d: torch.zeros(n, 3), tgt.sample, steps=2, batch_size=8, generator=g)
    with pytest.raises(ValueError, match="coupling"):
        fit(I, m, src.sample, tgt.sample, coupling="emd", generator=g)
    with pytest.raises(ValueError, match="antithetic"):
        fit(I, m, src.sample, tgt.sample, antithetic=True, generator=g)
    with pytest.raises(ValueError, match="steps"):
        fit(I, m, src.sample, tgt.sample, steps=0, generator=g)
    with pytest.raises(TypeError, match="generator"):
        fit(I, m, src.sample, tgt.sample)
    with pytest.raises(ValueError, match="t_range"):
        fit(I, m, src.sample, tgt.sample, t_range=(0.5, 0.2), generator=g, steps=1)


def test_sample_times_never_draw_the_ends(monkeypatch):
    # the first version drew t = 0 with probability 2^-24 per time (torch.rand's grid), ~3% of
    # default fits: gamma'(0) ~ 5e14 for the Brownian gamma and a loss of -8e11. Force the extreme
    # draws of every method and check the times stay strictly inside (lo, hi), in both dtypes.
    real_randint, real_randn = torch.randint, torch.randn

    def extreme_randint(low, high=None, *a, **kw):
        out = real_randint(low, high, *a, **kw) if high is not None else real_randint(low, *a, **kw)
        hi = high if high is not None else low
        out[0::2] = 0
        out[1::2] = hi - 1
        return out

    def extreme_randn(*a, **kw):
        out = real_randn(*a, **kw)
        out[0::2] = -60.0
        out[1::2] = 60.0
        return out

    monkeypatch.setattr(torch, "randint", extreme_randint)
    monkeypatch.setattr(torch, "randn", extreme_randn)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for method in ("uniform", "stratified", "logit_normal"):
            for lo, hi in ((0.0, 1.0), (0.25, 0.5)):
                t = sample_times(64, method, g, t_range=(lo, hi), dtype=dtype)
                assert t.dtype == dtype
                assert bool((t > lo).all()) and bool((t < hi).all()), (dtype, method, lo, hi, t.min(), t.max())
    monkeypatch.undo()
    # the Brownian velocity target stays finite at the smallest time that can be drawn
    I = Interpolant("linear", "brownian")
    tmin = sample_times(1, "uniform", g, dtype=torch.float32)  # any draw: > 2^-25
    assert bool(torch.isfinite(I.dgamma(tmin)).all())


def test_sample_times_are_uniform():
    from scipy import stats

    g = torch.Generator().manual_seed(3)
    t = sample_times(20000, "uniform", g, t_range=(0.2, 0.7), dtype=torch.float64)
    assert stats.kstest(t.numpy(), stats.uniform(0.2, 0.5).cdf).pvalue > 1e-3
    s = sample_times(1000, "stratified", g)
    counts = torch.histc(s.double(), bins=10, min=0, max=1)
    assert bool((counts == 100).all())  # one draw per stratum of width 1/1000


def test_ema_warm_up_forgets_the_initial_weights():
    # measured on the first version: ema=0.999 kept 0.999^steps of the random initial weights (13.5%
    # after 2000 steps, 82% after 200): the averaged model was closer to its initialisation than to
    # the trained weights. With the warm-up min(ema, (1 + k)/(10 + k)) it is the other way round.
    src, tgt = gaussians()
    I = Interpolant("linear")
    init = make_model(4)
    theta0 = torch.cat([p.detach().flatten() for p in init.parameters()])
    kw = dict(steps=200, batch_size=64, lr=3e-3)
    plain = make_model(4)
    fit(I, plain, src.sample, tgt.sample, generator=torch.Generator().manual_seed(6), **kw)
    avg = make_model(4)
    fit(I, avg, src.sample, tgt.sample, generator=torch.Generator().manual_seed(6), ema=0.999, **kw)
    theta_t = torch.cat([p.detach().flatten() for p in plain.parameters()])
    theta_e = torch.cat([p.detach().flatten() for p in avg.parameters()])
    assert float((theta_e - theta_t).norm()) < 0.5 * float((theta_e - theta0).norm())


def test_optimizer_grad_clip_and_warm_up():
    import functools

    src, tgt = gaussians()
    I = Interpolant("linear")
    lrs, norms = [], []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            lrs.append(self.param_groups[0]["lr"])
            g = torch.cat([p.grad.flatten() for grp in self.param_groups for p in grp["params"]])
            norms.append(float(g.norm()))
            return super().step(closure)

    model = make_model(8)
    fit(I, model, src.sample, tgt.sample, steps=12, batch_size=32, lr=0.1, generator=torch.Generator().manual_seed(2),
        optimizer=functools.partial(Recording, momentum=0.0), grad_clip=1e-3, warmup_steps=4)
    # linear warm-up over 4 steps, then the constant rate; every step's gradient clipped to norm 1e-3
    assert lrs[:5] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert max(norms) <= 1e-3 * (1 + 1e-6)
    with pytest.raises(ValueError, match="grad_clip"):
        fit(I, make_model(8), src.sample, tgt.sample, steps=1, generator=torch.Generator().manual_seed(2), grad_clip=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        fit(I, make_model(8), src.sample, tgt.sample, steps=1, generator=torch.Generator().manual_seed(2), warmup_steps=-1)
    with pytest.raises(TypeError, match="optimizer"):
        fit(I, make_model(8), src.sample, tgt.sample, steps=1, generator=torch.Generator().manual_seed(2),
            optimizer=lambda p, lr: object())


def test_cosine_with_warm_up_reaches_zero():
    src, tgt = gaussians()
    lrs = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(closure)

    fit(Interpolant("linear"), make_model(9), src.sample, tgt.sample, steps=10, batch_size=16, lr=1e-2,
        lr_schedule="cosine", warmup_steps=2, optimizer=Recording, generator=torch.Generator().manual_seed(3))
    import math as _m
    want = [1e-2 * 0.5 * (1 + _m.cos(_m.pi * k / 10)) * min(1.0, (k + 1) / 2) for k in range(10)]
    assert lrs == pytest.approx(want)


@pytest.mark.parametrize("kw", [dict(), dict(ema=0.99, coupling="ot", coupling_every=3, lr_schedule="cosine",
                                             warmup_steps=2)])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, kw):
    src, tgt = gaussians()
    I = Interpolant("linear", "brownian")
    common = dict(steps=12, batch_size=32, t_range=(1e-3, 1 - 1e-3), **kw)
    ref_model = make_model(5)
    ref = fit(I, ref_model, src.sample, tgt.sample, generator=torch.Generator().manual_seed(9), **common)

    path = tmp_path / "fit.ckpt"

    def stop_at_7(step, loss):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(I, make_model(5), src.sample, tgt.sample, generator=torch.Generator().manual_seed(9), checkpoint=path,
            checkpoint_every=5, callback=stop_at_7, **common)
    assert torch.load(path, weights_only=False)["step"] == 5
    # a fresh process would rebuild the model and generator from scratch: so do we (other seed even)
    model = make_model(5)
    rec = fit(I, model, src.sample, tgt.sample, generator=torch.Generator().manual_seed(123), checkpoint=path,
              checkpoint_every=5, **common)
    assert torch.equal(rec.losses, ref.losses)
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        fit(I, make_model(5), src.sample, tgt.sample, generator=torch.Generator().manual_seed(9), checkpoint=path,
            **dict(common, batch_size=16))
