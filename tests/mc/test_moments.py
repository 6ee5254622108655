import pytest
import torch

from genstat.mc import RunningMoments


def _data(n=1000, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + 3.0


def test_unweighted_matches_numpy_definitions():
    x = _data()
    m = RunningMoments.from_batch(x)
    torch.testing.assert_close(m.mean, x.mean(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(m.covariance(), torch.cov(x.T), rtol=1e-12, atol=1e-14)
    assert m.n == 1000


@pytest.mark.parametrize("splits", [[1000], [1, 999], [400, 600], [100] * 10, [7, 500, 493]])
def test_merge_is_exact_whatever_the_split(splits):
    x = _data()
    parts = torch.split(x, splits)
    acc = RunningMoments.from_batch(parts[0])
    for p in parts[1:]:
        acc = acc.merge(RunningMoments.from_batch(p))
    ref = RunningMoments.from_batch(x)
    torch.testing.assert_close(acc.mean, ref.mean, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(acc.m2, ref.m2, rtol=1e-12, atol=1e-12)
    stacked = RunningMoments.stack([RunningMoments.from_batch(p) for p in parts]).reduce()
    torch.testing.assert_close(stacked.m2, ref.m2, rtol=1e-12, atol=1e-12)


def test_blocked_from_batch_equals_separate_blocks():
    x = _data(1200)
    b = RunningMoments.from_batch(x, blocks=4)
    assert b.mean.shape == (4, 3)
    sep = [RunningMoments.from_batch(c) for c in x.chunk(4)]
    for i, s in enumerate(sep):
        torch.testing.assert_close(b.mean[i], s.mean, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(b.reduce().mean, x.mean(0), rtol=1e-13, atol=0)


def test_weighted_moments_and_log_scale_invariance():
    x = _data(500)
    g = torch.Generator().manual_seed(1)
    lw = torch.randn(500, generator=g, dtype=torch.float64)
    w = lw.exp()
    m = RunningMoments.from_batch(x, lw)
    mean = (w[:, None] * x).sum(0) / w.sum()
    torch.testing.assert_close(m.mean, mean, rtol=1e-13, atol=0)
    xc = x - mean
    torch.testing.assert_close(m.c2, torch.einsum("n,ni,nj->ij", w * w, xc, xc) / m.sw.new_tensor(1.0)
                               * torch.exp(-2 * m.log_scale), rtol=1e-12, atol=1e-12)
    ess = w.sum() ** 2 / (w * w).sum()
    torch.testing.assert_close(m.ess, ess, rtol=1e-12, atol=0)
    # shifting all log weights by a huge constant changes nothing (no overflow)
    m2 = RunningMoments.from_batch(x, lw + 5000.0)
    torch.testing.assert_close(m2.mean, m.mean, rtol=1e-13, atol=0)
    torch.testing.assert_close(m2.ess, m.ess, rtol=1e-12, atol=0)
    # and the weighted merge is exact with blocks of very different scales
    lw2 = lw.clone()
    lw2[250:] += 30.0
    whole = RunningMoments.from_batch(x, lw2)
    merged = RunningMoments.from_batch(x[:250], lw2[:250]).merge(RunningMoments.from_batch(x[250:], lw2[250:]))
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(merged.self_normalized_covariance(), whole.self_normalized_covariance(),
                               rtol=1e-10, atol=1e-16)


def test_flatten_roundtrip():
    m = RunningMoments.from_batch(_data(50))
    r = RunningMoments.unflatten(m.flatten(), 3)
    for f in RunningMoments.__slots__:
        torch.testing.assert_close(getattr(r, f), getattr(m, f))


def test_bad_inputs():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        RunningMoments.from_batch([1.0, 2.0])
    with pytest.raises(ValueError, match="x must have shape"):
        RunningMoments.from_batch(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="log_weights must have shape"):
        RunningMoments.from_batch(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="blocks must divide"):
        RunningMoments.from_batch(torch.zeros(5, 2), blocks=2)
    with pytest.raises(ValueError, match="cannot merge"):
        RunningMoments.from_batch(torch.zeros(5, 2)).merge(RunningMoments.from_batch(torch.zeros(5, 3)))
