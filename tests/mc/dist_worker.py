"""Launched by test_distributed.py under torchrun: writes rank 0's estimate to argv[1]."""
import sys

import torch
import torch.distributed as dist

from genstat.mc import estimate, replicate


def sampler(n, g, d):
    return torch.randn(n, 3, generator=g, device=d, dtype=torch.float64)


def main(out: str) -> None:
    dist.init_process_group("gloo")
    fn = lambda x: torch.stack([x[:, 0], x[:, 1] ** 2, x.sum(1) ** 2], 1)
    r = estimate(fn, sampler, 50_001, seed=17, batch_size=8192)
    s = estimate(fn, sampler, 10**7, seed=17, target_rse=0.01)
    reps = replicate(lambda n, g, d: torch.randn(n, 2, generator=g, device=d, dtype=torch.float64), 9,
                     block_size=2, seed=3)
    if dist.get_rank() == 0:
        torch.save({"est": r.estimate, "se": r.stderr, "seq": s.estimate, "seq_n": s.n_samples, "reps": reps}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
