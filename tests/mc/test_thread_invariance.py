"""The engine's own arithmetic rounds the same way whatever the batch size and the thread count.

CI measured the need: under torchrun (OMP_NUM_THREADS=1 per worker) the stderr of a one-block
estimate and of the quickstart's IS rows differed in the last bit from the one-process run, because
BLAS (bmm) rounded a block's second moments differently by batch count and thread count. The
integrands here are polynomials of Gaussians, so everything that is not the engine's is exact
elementwise arithmetic; any difference would be the engine's.
"""
import contextlib

import pytest
import torch

from genstat.mc import estimate
from genstat.mc._sums import chunked_sum, exp_blocks, gram


@contextlib.contextmanager
def threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sampler(n, g, d):
    return torch.randn(n, 3, generator=g, device=d, dtype=torch.float64)


def fn_k(k):
    def fn(x):
        cols = [x[:, 0], x[:, 1] ** 2, x.sum(1) ** 2, x[:, 0] * x[:, 2], x[:, 2] ** 3]
        y = torch.stack([cols[i % 5] * (1 + i) for i in range(k)], 1)
        return y[:, 0] if k == 1 else y
    return fn


def log_weight(x):  # N(0.7, 1) target from the N(0, 1) proposal, in exact arithmetic
    return 0.7 * x[:, 0] - 0.245


CASES = [  # (mode, k, n_samples, block_size)
    ("plain", 1, 1000, 4096),          # one partial block: the CI failure
    ("plain", 3, 50_001, 4096),
    ("plain", 7, 40_000, 1000),
    ("plain", 2, 3 * 40_000 + 7, 40_000),  # blocks above torch's 32768 reduction grain
    ("is", 6, 20_000, 4096),           # the quickstart's IS rows
    ("is", 1, 30_001, 1001),           # block size not a multiple of the vector width
    ("sn", 3, 20_000, 4096),
    ("sn", 1, 2 * 40_000, 40_000),
]


@pytest.mark.parametrize("mode,k,n,block", CASES)
def test_bitwise_equal_over_batch_sizes_and_threads(mode, k, n, block):
    kw = {} if mode == "plain" else dict(log_weight=log_weight, self_normalized=mode == "sn")
    ref = None
    for t in (1, 2, 3):
        for batch in (block, 3 * block, None):
            with threads(t):
                r = estimate(fn_k(k), sampler, n, seed=11, block_size=block, batch_size=batch, **kw)
            got = (r.estimate, r.stderr, r.covariance) + ((r.ess,) if mode != "plain" else ())
            if ref is None:
                ref = got
                continue
            for a, b in zip(got, ref):
                assert torch.equal(a, b), (t, batch, a, b)


def test_sums_match_float64_references():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 40_000, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, 40_000, 4, generator=g, dtype=torch.float64)
    w = torch.rand(3, 40_000, generator=g, dtype=torch.float64)
    torch.testing.assert_close(chunked_sum(a, 1), a.sum(1), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(gram(a), torch.einsum("bni,bnj->bij", a, a), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(gram(a, weight=w), torch.einsum("bn,bni,bnj->bij", w, a, a), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(gram(a, b), torch.einsum("bni,bnj->bij", a, b), rtol=1e-12, atol=1e-9)
    s = gram(a, weight=w)
    assert torch.equal(s, s.transpose(1, 2))
    t = torch.randn(70_001, generator=g, dtype=torch.float64)
    lens = [1001] * 69 + [70_001 - 69 * 1001]
    with threads(3):
        e3 = exp_blocks(t, lens)
    with threads(1):
        e1 = exp_blocks(t, lens)
        single = torch.cat([torch.exp(s) for s in torch.split(t, lens)])
    assert torch.equal(e1, e3) and torch.equal(e1, single)
    torch.testing.assert_close(e1, torch.exp(t), rtol=4e-16, atol=0)


def test_gram_last_paths_agree_bitwise():
    # gram_last builds all k^2 products at once for small inputs and row by row otherwise; a batch
    # may take either path, so they must agree bit for bit
    from genstat.mc import _sums

    g = torch.Generator().manual_seed(5)
    for k, B, n in ((2, 1, 4096), (4, 2, 4096), (3, 5, 1001), (6, 1, 40_000)):
        xt = torch.randn(k, B, n, generator=g, dtype=torch.float64)
        small = _sums.gram_last(xt)
        old = _sums._OUTER_BYTES
        _sums._OUTER_BYTES = 0
        try:
            rows = _sums.gram_last(xt)
        finally:
            _sums._OUTER_BYTES = old
        assert torch.equal(small, rows), (k, B, n)
        assert torch.equal(small, small.transpose(1, 2))
        torch.testing.assert_close(small, torch.einsum("kbn,jbn->bkj", xt, xt), rtol=1e-12, atol=1e-9)
