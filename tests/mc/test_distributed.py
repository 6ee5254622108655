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
