"""fit(mixed_precision=...): autocast forward passes, float32 state, GradScaler for float16, checkpoints."""
import pytest
import torch

from genstat.interpolants import Interpolant, exact_fields, fit
from genstat.interpolants.fit import MIXED_PRECISIONS

from test_fit import gaussians, make_model, relative_l2


def _forward_dtypes(model):
    seen = []
    model.mlp.net[0].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("precision", sorted(MIXED_PRECISIONS))
def test_mixed_precision_trains_in_low_precision_and_learns(precision):
    src, tgt = gaussians()
    I = Interpolant("linear", "none")
    F = exact_fields(I, src, tgt)
    model = make_model(0)
    seen = _forward_dtypes(model)
    rec = fit(I, model, src.sample, tgt.sample, steps=300, batch_size=256, lr=3e-3, lr_schedule="cosine",
              generator=torch.Generator().manual_seed(1), mixed_precision=precision)
    assert set(seen[:300]) == {MIXED_PRECISIONS[precision]}  # the forward passes ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert rec.losses.dtype == torch.float64 and torch.isfinite(rec.losses).all()
    # the same fit in float32 reaches < 5 % relative L2 error (test_fit); half precision within 2x of it
    ref = make_model(0)
    fit(I, ref, src.sample, tgt.sample, steps=300, batch_size=256, lr=3e-3, lr_schedule="cosine",
        generator=torch.Generator().manual_seed(1))
    err, err_ref = relative_l2(model, F, src, tgt), relative_l2(ref, F, src, tgt)
    assert err < max(2 * err_ref, 0.05), (err, err_ref)


def test_mixed_precision_off_is_bitwise_the_default():
    src, tgt = gaussians()
    I = Interpolant("linear", "brownian")
    a, b = make_model(3), make_model(3)
    ra = fit(I, a, src.sample, tgt.sample, steps=20, batch_size=64, t_range=(1e-3, 1 - 1e-3),
             generator=torch.Generator().manual_seed(2))
    rb = fit(I, b, src.sample, tgt.sample, steps=20, batch_size=64, t_range=(1e-3, 1 - 1e-3),
             generator=torch.Generator().manual_seed(2), mixed_precision=None)
    assert torch.equal(ra.losses, rb.losses)


def test_float16_checkpoint_resume_equals_uninterrupted(tmp_path):
    src, tgt = gaussians()
    I = Interpolant("linear", "none")
    common = dict(steps=12, batch_size=32, mixed_precision="float16", grad_clip=1.0)
    ref_model = make_model(5)
    ref = fit(I, ref_model, src.sample, tgt.sample, generator=torch.Generator().manual_seed(9), **common)
    path = tmp_path / "fit.ckpt"

    def stop_at_7(step, loss):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(I, make_model(5), src.sample, tgt.sample, generator=torch.Generator().manual_seed(9), checkpoint=path,
            checkpoint_every=5, callback=stop_at_7, **common)
    assert "scaler" in torch.load(path, weights_only=False)["parts"]
    model = make_model(5)
    rec = fit(I, model, src.sample, tgt.sample, generator=torch.Generator().manual_seed(0), checkpoint=path,
              checkpoint_every=5, **common)
    assert torch.equal(rec.losses, ref.losses)
    for x, y in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="other settings"):  # a float32 fit does not resume a float16 one
        fit(I, make_model(5), src.sample, tgt.sample, generator=torch.Generator().manual_seed(9), checkpoint=path,
            **dict(common, mixed_precision=None))


def test_mixed_precision_bad_inputs():
    src, tgt = gaussians()
    I = Interpolant("linear", "none")
    with pytest.raises(ValueError, match="mixed_precision.*'fp8'"):
        fit(I, make_model(0), src.sample, tgt.sample, steps=2, generator=torch.Generator(), mixed_precision="fp8")
    with pytest.raises(ValueError, match="float32 parameters"):
        fit(I, make_model(0).double(), src.sample, tgt.sample, steps=2, generator=torch.Generator(),
            mixed_precision="bfloat16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", sorted(MIXED_PRECISIONS))
def test_mixed_precision_on_cuda(precision):
    src, tgt = gaussians()
    I = Interpolant("linear", "none")
    model = make_model(0).cuda()
    rec = fit(I, model, lambda n, g, d: src.sample(n, g).to(d), lambda n, g, d: tgt.sample(n, g).to(d),
              steps=200, batch_size=256, lr=3e-3, generator=torch.Generator("cuda").manual_seed(1),
              mixed_precision=precision)
    assert torch.isfinite(rec.losses).all() and rec.losses[-20:].mean() < rec.losses[:20].mean()
