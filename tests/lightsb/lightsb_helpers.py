import torch


def random_gaussians(d, seed, dtype=torch.float64):
    """Two random Gaussians N(a, A), N(b, B) with rotated, well-conditioned covariances."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        mean = torch.randn(d, generator=g, dtype=dtype)
        m = torch.randn(d, d, generator=g, dtype=dtype) / d**0.5
        out += [mean, m @ m.T + 0.5 * torch.eye(d, dtype=dtype)]
    return out
