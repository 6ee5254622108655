"""``torchrun --standalone --nproc_per_node=2 -m genstat run ...``: one run directory written by rank 0,
the sharded engine giving bitwise the one-process results, non-sharding kinds run once, and exit
codes agreed across ranks."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from genstat.cli import main

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")]

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--set", "params.n_samples=20000", "--set", "params.convergence_points=3", "--set", "params.tour=[]"]
GGD = ["--set", "params.groups=4", "--set", "params.n_samples=200", "--set", "params.scipy_groups=1",
       "--set", "params.repeats=1", "--set", "params.betas=[1.0]", "--set", "params.dtypes=[float64]"]


def _torchrun(args, cwd):
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe) if exe.exists() else shutil.which("torchrun"), "--standalone", "--nproc_per_node=2", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=cwd)


def _one_thread(args):
    """The one-process reference at the workers' thread count (torchrun sets OMP_NUM_THREADS=1): the
    engine's own arithmetic does not depend on threads (tests/mc/test_thread_invariance.py), but the
    quickstart's log-density uses exp/logsumexp, whose last bit torch's CPU kernels may round
    differently at another thread count (vector vs scalar code at the threads' chunk boundaries)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(old)


def _only_run_dir(root: Path) -> Path:
    (d,) = list(root.iterdir())
    return d


def test_sharded_kind_writes_once_and_equals_one_process(tmp_path):
    exp = str(ROOT / "experiments" / "quickstart.yaml")
    assert _one_thread(["run", exp, "--out", str(tmp_path / "one"), "--quiet", *QUICK]) == 0
    proc = _torchrun(["-m", "genstat", "run", exp, "--out", str(tmp_path / "two"), *QUICK], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1 and proc.stdout.count("verdict:") == 1  # rank 0 prints
    two = _only_run_dir(tmp_path / "two" / "quickstart")
    meta = json.loads((two / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["backend"] == "gloo" and meta["sharded"] is True
    assert meta["status"] == "completed"
    one = _only_run_dir(tmp_path / "one" / "quickstart")
    assert (two / "results.csv").read_bytes() == (one / "results.csv").read_bytes()
    assert (two / "convergence.csv").read_bytes() == (one / "convergence.csv").read_bytes()


def test_non_sharding_kind_runs_once_on_rank_0(tmp_path):
    exp = str(ROOT / "experiments" / "bench_ggd.yaml")
    assert main(["run", exp, "--out", str(tmp_path / "one"), "--quiet", *GGD]) == 0
    proc = _torchrun(["-m", "genstat", "run", exp, "--out", str(tmp_path / "two"), *GGD], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = _only_run_dir(tmp_path / "two" / "bench_ggd")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["sharded"] is False and meta["status"] == "completed"
    one = pd.read_csv(_only_run_dir(tmp_path / "one" / "bench_ggd") / "results.csv")
    two = pd.read_csv(d / "results.csv")
    assert list(two.columns) == list(one.columns) and len(two) == len(one)   # written once, not per rank


DRIVER = """
import sys
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from genstat.cli import main
from genstat.experiments import experiment
from genstat.experiments.launch import env_rank

class P(BaseModel):
    model_config = ConfigDict(extra="forbid")

@experiment("test.rank0_fails", P, help="fails on rank 0 (not sharded)")
def fails(p, run):
    raise RuntimeError("rank 0 failed")

code = main(sys.argv[2:])
Path(sys.argv[1], f"code{env_rank()}").write_text(str(code))
sys.exit(code)
"""


@pytest.mark.parametrize("case", ["kind_fails", "out_is_a_file"])
def test_exit_codes_agree_across_ranks(tmp_path, case):
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "exp.yaml").write_text("name: f\nkind: test.rank0_fails\n")
    out = tmp_path / "runs"
    if case == "out_is_a_file":
        out.write_text("not a directory")
    proc = _torchrun([str(tmp_path / "driver.py"), str(tmp_path), "run", str(tmp_path / "exp.yaml"), "--out",
                      str(out)], tmp_path)
    assert proc.returncode != 0
    codes = [(tmp_path / f"code{r}").read_text() for r in (0, 1)]
    assert codes == (["1", "1"] if case == "kind_fails" else ["2", "2"]), proc.stderr[-3000:]
