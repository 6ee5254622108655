"""Launched by test_distributed.py under torchrun: writes rank 0's results to argv[1]."""
import sys

import torch
import torch.distributed as dist

from genstat.mc import estimate, replicate


def sampler(n, g, d):
    return torch.randn(n, 3, generator=g, device=d, dtype=torch.float64)


def lognormal(n, g, d):
    return torch.exp(2 * torch.randn(n, generator=g, device=d, dtype=torch.float64))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    fn = lambda x: torch.stack([x[:, 0], x[:, 1] ** 2, x.sum(1) ** 2], 1)
    r = estimate(fn, sampler, 50_001, seed=17, batch_size=8192)
    s = estimate(fn, sampler, 10**7, seed=17, target_rse=0.01)
    reps = replicate(lambda n, g, d: torch.randn(n, 2, generator=g, device=d, dtype=torch.float64), 9,
                     block_size=2, seed=3)
    # scalar fn where rank 1 owns no block (one block), and sequentially (rank 1 idle in the pilot)
    scalar_one = estimate(lambda x: x[:, 0] ** 2, sampler, 1000, seed=5)
    scalar_seq = estimate(lambda x: x, lognormal, 10**6, seed=5, target_rse=0.05, block_size=64)
    # one replication: rank 1 owns no block
    one_rep = replicate(lambda n, g, d: torch.randn(n, 4, generator=g, device=d), 1, seed=2)
    # importance sampling: the Pareto tail kept on both ranks is assembled exactly
    is_r = estimate(lambda x: x[:, 0], sampler, 30_000, seed=4, block_size=1000,
                    log_weight=lambda x: 1.5 * x[:, 0] - 1.125)
    # a failure on one rank stops every rank with an error instead of a hang
    def bad(x):
        if dist.get_rank() == 1:
            raise ArithmeticError("boom on rank 1")
        return x[:, 0]
    try:
        estimate(bad, sampler, 20_000, seed=1, block_size=1000)
        failed = "no error"
    except ArithmeticError as exc:
        failed = f"ArithmeticError: {exc}"
    except RuntimeError as exc:
        failed = f"RuntimeError: {exc}"
    if dist.get_rank() == 0:
        torch.save({"est": r.estimate, "se": r.stderr, "seq": s.estimate, "seq_n": s.n_samples, "reps": reps,
                    "scalar_one": (scalar_one.estimate, scalar_one.stderr),
                    "scalar_seq": (scalar_seq.estimate, scalar_seq.stderr, scalar_seq.n_samples, scalar_seq.n_pilot),
                    "one_rep": one_rep, "is": (is_r.estimate, is_r.stderr, is_r.ess, is_r.pareto_k),
                    "failed": failed}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
