"""``python -m genstat.experiments.gpu_check`` (``make gpu-check``)."""
import subprocess
import sys

import pytest
import torch

from genstat.experiments import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA: the no-CUDA path is not taken")
def test_without_cuda_it_says_so_writes_nothing_and_exits_0(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, "-m", "genstat.experiments.gpu_check", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == gpu_check.NO_CUDA == "no CUDA device: skipping GPU check"
    assert not out.exists()


def test_engine_rows_report_throughput_per_batch_on_cpu():
    rows = gpu_check.engine_rows([torch.device("cpu")], batches=(2**12, 2**13), n_samples=2**14, repeats=1)
    assert [r["batch_size"] for r in rows] == [4096, 8192]
    assert all(r["cpu_Msamples_per_s"] > 0 for r in rows)


@pytest.mark.gpu
def test_quick_gpu_check_writes_the_page(tmp_path):
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--out", str(out), "--quick"]) == 0
    text = out.read_text()
    assert "Engine throughput" in text and "cuda_Msamples_per_s" in text and "Errors:" not in text
