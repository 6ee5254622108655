"""The chunked k-nearest-neighbour distances behind id_mle and id_twonn, against a direct brute force."""
import math

import pytest
import torch
from torch.testing import assert_close

from genstat.gauge import _knn
from genstat.gauge._knn import knn_distances as _knn_distances

D64 = torch.float64


def _brute(x: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: every pairwise ||x_i - x_j||^2 from the differences in float64, self excluded by index."""
    xd = x.double()
    q = (xd[:, None, :] - xd[None]).pow(2).sum(-1)
    q.fill_diagonal_(math.inf)
    return q.sort(1).values[:, :k].sqrt()


def _data(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "gauss_R5":
        return torch.randn(300, 5, generator=g, dtype=D64)
    if name == "plane_R50":  # 3-d subspace plus small noise in R^50
        return (torch.randn(400, 3, generator=g, dtype=D64) @ torch.randn(3, 50, generator=g, dtype=D64)
                + 1e-3 * torch.randn(400, 50, generator=g, dtype=D64))
    if name == "duplicates":  # pairs and triples of identical points
        x = torch.randn(200, 4, generator=g, dtype=D64)
        return torch.cat([x, x[:20], x[:5]])
    if name == "lattice":  # integer points: many exactly tied distances
        return torch.randint(0, 4, (300, 3), generator=g).to(D64)
    if name == "offset":  # tiny spread far from the origin
        return 1e3 + 1e-3 * torch.randn(300, 4, generator=g, dtype=D64)
    if name == "float32":
        return torch.randn(300, 6, generator=g)
    if name == "tiny":  # squares below float32's smallest number: the pass scales by a power of two first
        return 1e-30 * torch.randn(300, 5, generator=g, dtype=D64)
    if name == "huge":  # norms beyond 2^400: the direct pass
        return 1e153 * torch.randn(100, 3, generator=g, dtype=D64)
    raise KeyError(name)


DATA = ["gauss_R5", "plane_R50", "duplicates", "lattice", "offset", "float32", "tiny", "huge"]


@pytest.mark.parametrize("name", DATA)
@pytest.mark.parametrize("k", [1, 2, 7])
def test_knn_equals_brute_force(name, k):
    x = _data(name)
    T = _knn_distances(x, k)
    assert T.dtype == D64 and T.shape == (x.shape[0], k)
    assert_close(T, _brute(x, k), rtol=1e-13, atol=0)


def test_knn_duplicates_are_neighbours_at_zero():
    x = _data("duplicates")
    T = _knn_distances(x, 2)
    assert bool((T[:5] == 0).all())  # three copies: both nearest others at distance 0
    assert bool((T[5:20, 0] == 0).all()) and bool((T[5:20, 1] > 0).all())
    assert bool((T[20:200] > 0).all())


def test_knn_all_neighbours():
    """k = n - 1: every other point is a candidate."""
    x = _data("gauss_R5")[:9]
    assert_close(_knn_distances(x, 8), _brute(x, 8), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["plane_R50", "lattice", "duplicates"])
def test_knn_chunking_is_invisible(name):
    """One row per chunk (chunk_bytes = 1) gives bit-identical distances to one chunk for all rows."""
    x = _data(name)
    assert torch.equal(_knn_distances(x, 5, chunk_bytes=1), _knn_distances(x, 5, chunk_bytes=1 << 30))


def test_knn_passes(monkeypatch):
    """Well-separated data are proved by the float32 pass; exact ties need float64; huge data the direct pass."""
    calls = []
    real = _knn._knn_pass

    def spy(xd, rows, k, dtype, chunk_bytes):
        out, ok = real(xd, rows, k, dtype, chunk_bytes)
        calls.append((dtype, len(rows), int(ok.sum())))
        return out, ok

    monkeypatch.setattr(_knn, "_knn_pass", spy)
    _knn_distances(_data("gauss_R5"), 5)
    assert calls == [(torch.float32, 300, 300)]
    calls.clear()
    _knn_distances(_data("lattice"), 5)
    assert calls[0][0] == torch.float32 and calls[0][2] < 300
    assert calls[1] == (torch.float64, 300 - calls[0][2], 300 - calls[0][2])
    calls.clear()
    _knn_distances(_data("tiny"), 5)
    assert calls == [(torch.float32, 300, 300)]
    calls.clear()
    _knn_distances(_data("huge"), 5)
    assert [c[2] for c in calls] == [0, 0]


def test_knn_direct_pass(monkeypatch):
    """The direct float64 pass alone (as when neither candidate pass proves a row) equals the brute force."""
    def prove_nothing(xd, rows, k, dtype, chunk_bytes):
        return torch.zeros(len(rows), k, dtype=D64), torch.zeros(len(rows), dtype=torch.bool)

    monkeypatch.setattr(_knn, "_knn_pass", prove_nothing)
    for name in ("plane_R50", "duplicates", "lattice"):
        x = _data(name)
        assert_close(_knn_distances(x, 5, chunk_bytes=1 << 16), _brute(x, 5), rtol=1e-13, atol=0)


def test_knn_memory_is_bounded():
    """No single allocation holds more than about one chunk; the n x n float64 matrix would be 72 MB."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(3000, 20, generator=torch.Generator().manual_seed(1), dtype=D64)
    chunk = 1 << 20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        T = _knn_distances(x, 5, chunk_bytes=chunk)
    peak = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < peak <= 2 * chunk < 3000 * 3000 * 8 / 30
    q = (x[:100, None, :] - x[None]).pow(2).sum(-1)
    q[torch.arange(100), torch.arange(100)] = math.inf
    assert_close(T[:100], q.sort(1).values[:, :5].sqrt(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("g1, g2", [(1, 1), (3, 1), (4, 5), (7, 7)])
def test_smallest_by_group_minima(g1, g2):
    """The two-level group selection returns the kc smallest values of each row (ties included) and their columns."""
    gen = torch.Generator().manual_seed(2)
    width = g1 * g2 * 13
    s = torch.randint(0, 50, (6, width), generator=gen).float()  # many ties
    s[:, -5:] = math.inf  # padding
    v, cols = _knn._smallest(s, 9, g1, g2)
    assert torch.equal(v.sort(1).values, s.sort(1).values[:, :9])
    assert torch.equal(torch.gather(s, 1, cols), v)
    assert all(len(set(row.tolist())) == 9 for row in cols)  # distinct columns
