import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genstat.mc import estimate, replicate

pytestmark = pytest.mark.distributed


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_workers_equal_single_process(tmp_path):
    out = tmp_path / "rank0.pt"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else shutil.which("torchrun"),
           "--standalone", "--nproc_per_node=2", str(Path(__file__).with_name("dist_worker.py")), str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out)

    def sampler(n, g, d):
        return torch.randn(n, 3, generator=g, device=d, dtype=torch.float64)

    fn = lambda x: torch.stack([x[:, 0], x[:, 1] ** 2, x.sum(1) ** 2], 1)
    ref = estimate(fn, sampler, 50_001, seed=17, batch_size=4096 * 5)
    torch.testing.assert_close(got["est"], ref.estimate, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got["se"], ref.stderr, rtol=1e-12, atol=0)
    seq = estimate(fn, sampler, 10**7, seed=17, target_rse=0.01)
    assert got["seq_n"] == seq.n_samples
    torch.testing.assert_close(got["seq"], seq.estimate, rtol=1e-12, atol=1e-15)
    reps = replicate(lambda n, g, d: torch.randn(n, 2, generator=g, device=d, dtype=torch.float64), 9,
                     block_size=2, seed=3)
    assert torch.equal(got["reps"], reps)
    # scalar fn with an idle rank: shape () and the one-process numbers, bitwise
    one = estimate(lambda x: x[:, 0] ** 2, sampler, 1000, seed=5)
    assert got["scalar_one"][0].shape == () and torch.equal(got["scalar_one"][0], one.estimate)
    assert torch.equal(got["scalar_one"][1], one.stderr)
    seq1 = estimate(lambda x: x, lambda n, g, d: torch.exp(2 * torch.randn(n, generator=g, device=d,
                    dtype=torch.float64)), 10**6, seed=5, target_rse=0.05, block_size=64)
    est, se, n, n_pilot = got["scalar_seq"]
    assert est.shape == () and torch.equal(est, seq1.estimate) and torch.equal(se, seq1.stderr)
    assert (n, n_pilot) == (seq1.n_samples, seq1.n_pilot)
    assert torch.equal(got["one_rep"], replicate(lambda n, g, d: torch.randn(n, 4, generator=g, device=d), 1, seed=2))
    isr = estimate(lambda x: x[:, 0], sampler, 30_000, seed=4, block_size=1000,
                   log_weight=lambda x: 1.5 * x[:, 0] - 1.125)
    assert torch.equal(got["is"][0], isr.estimate) and torch.equal(got["is"][1], isr.stderr)
    assert torch.equal(got["is"][2], isr.ess) and got["is"][3] == isr.pareto_k
    assert got["failed"].startswith("RuntimeError: estimate failed on another rank"), got["failed"]
