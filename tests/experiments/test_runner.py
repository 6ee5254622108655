import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from typing import Literal

from genstat.cli import main
from genstat.experiments import ConfigError, experiment, list_kinds, load_config, run_experiment

ROOT = Path(__file__).resolve().parents[2]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = 1e-2
    steps: int = Field(3, ge=1)
    method: Literal["euler", "heun"] = "euler"
    fail_at: int | None = None


@experiment("test.toy", _Params, help="test kind")
def _toy(p: _Params, run):
    for i in range(p.steps):
        if p.fail_at == i:
            raise KeyboardInterrupt
        run.metric(step=i, loss=1.0 / (i + 1))
        run.add_results({"step": i, "lr": p.lr, "method": p.method})
    run.log("done")


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
name: toy
kind: test.toy
seed: 3
params:
  lr: 1e-3
  steps: 2
"""


def test_yaml_float_and_defaults(tmp_path):
    cfg, params = load_config(_write(tmp_path, GOOD))
    assert isinstance(params.lr, float) and params.lr == 1e-3
    assert cfg.seed == 3 and cfg.device == "cpu" and params.method == "euler"


def test_every_error_reported_with_dotted_path(tmp_path):
    bad = """
    name: toy
    kind: test.toy
    seeed: 3
    params:
      lr: fast
      stepz: 2
      method: rk9
    """
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, bad))
    errs = "\n".join(exc.value.errors)
    assert "seeed: unknown key" in errs
    assert "params.stepz: unknown key" in errs
    assert "params.lr:" in errs and "'fast'" in errs
    assert "params.method:" in errs and "'euler' or 'heun'" in errs
    assert len(exc.value.errors) == 4


def test_unknown_kind_lists_known(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment kind 'nope'.*test.toy"):
        load_config(_write(tmp_path, "name: a\nkind: nope\n"))


@pytest.mark.parametrize("text, needle", [
    (GOOD.replace("steps: 2", "steps: 0"), "params.steps"),
    (GOOD.replace("kind: test.toy", "kind: test.toyy"), "unknown experiment kind"),
    (GOOD.replace("lr: 1e-3", "lrr: 1e-3"), "params.lrr: unknown key"),
    ("name: [unclosed\n", "invalid YAML"),
    (GOOD.replace("seed: 3", "seed: -1"), "seed"),
])
def test_cli_config_errors_exit_2_and_write_nothing(tmp_path, capsys, text, needle):
    out = tmp_path / "runs"
    code = main(["run", str(_write(tmp_path, text)), "--out", str(out)])
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_cli_cuda_without_gpu_is_a_config_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    assert main(["validate", str(_write(tmp_path, GOOD)), "--set", "device=cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_run_directory_layout(tmp_path):
    out = tmp_path / "runs"
    code = main(["run", str(_write(tmp_path, GOOD)), "--out", str(out), "--set", "params.method=heun",
                 "--seed", "7", "--quiet"])
    assert code == 0
    (run_dir,) = list((out / "toy").iterdir())
    stamp, sha = run_dir.name.split("_")
    assert len(stamp) == len("20260101-120000") and len(sha) == 7
    for f in ("config.yaml", "overrides.txt", "meta.json", "metrics.jsonl", "results.csv", "log.txt"):
        assert (run_dir / f).is_file(), f
    assert (run_dir / "figures").is_dir()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["seed"] == 7 and cfg["params"]["method"] == "heun" and cfg["params"]["lr"] == 1e-3
    assert (run_dir / "overrides.txt").read_text() == "params.method=heun\n"
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["seed"] == 7 and meta["world_size"] == 1
    for key in ("python", "torch", "pot", "scipy"):
        assert meta["versions"][key]
    assert meta["start_time"] and meta["end_time"] and "git_sha" in meta and "git_dirty" in meta
    df = pd.read_csv(run_dir / "results.csv")
    assert list(df.step) == [0, 1] and set(df.method) == {"heun"}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1]


def test_interrupted_run_keeps_results(tmp_path):
    cfg, params = load_config(_write(tmp_path, GOOD.replace("steps: 2", "steps: 5")),
                              ["params.fail_at=3"])
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, params, out=tmp_path / "runs", quiet=True)
    (run_dir,) = list((tmp_path / "runs" / "toy").iterdir())
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    assert list(pd.read_csv(run_dir / "results.csv").step) == [0, 1, 2]


SLOW_KIND = """
import sys, time
from pydantic import BaseModel, ConfigDict
from genstat.experiments import experiment
from genstat.cli import main

class P(BaseModel):
    model_config = ConfigDict(extra="forbid")

@experiment("test.slow", P, help="slow")
def slow(p, run):
    run.add_results({"row": 1})
    print("READY", flush=True)
    time.sleep(120)
    run.add_results({"row": 2})

sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_marks_interrupted_and_keeps_results(tmp_path):
    script = _write(tmp_path, SLOW_KIND, "driver.py")
    cfg = _write(tmp_path, "name: slow\nkind: test.slow\n")
    proc = subprocess.Popen([sys.executable, str(script), "run", str(cfg), "--out", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in proc.stdout:
        if "READY" in line:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    (run_dir,) = list((tmp_path / "runs" / "slow").iterdir())
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    assert list(pd.read_csv(run_dir / "results.csv")["row"]) == [1]


def test_failed_run_is_marked(tmp_path):
    @experiment("test.boom", _Params, help="raises")
    def boom(p, run):
        raise RuntimeError("kaput")

    cfg, params = load_config(raw={"name": "boom", "kind": "test.boom"})
    with pytest.raises(RuntimeError):
        run_experiment(cfg, params, out=tmp_path / "runs", quiet=True)
    (run_dir,) = list((tmp_path / "runs" / "boom").iterdir())
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and "kaput" in meta["error"]


def test_list_and_python_dash_m_match(tmp_path):
    a = subprocess.run([sys.executable, "-m", "genstat", "list"], capture_output=True, text=True, cwd=tmp_path)
    b = subprocess.run([str(Path(sys.executable).with_name("genstat")), "list"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert a.returncode == 0 and a.stdout == b.stdout
    assert "quickstart" in a.stdout and "mc.bench" in a.stdout


def test_every_shipped_experiment_validates():
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert any(f.name == "quickstart.yaml" for f in files)
    for f in files:
        load_config(f)


def test_quickstart_runs_fast_and_is_right(tmp_path):
    out = tmp_path / "runs"
    assert main(["run", str(ROOT / "experiments" / "quickstart.yaml"), "--out", str(out), "--quiet",
                 "--set", "params.n_samples=100000", "--set", "params.convergence_points=4"]) == 0
    (run_dir,) = list((out / "quickstart").iterdir())
    df = pd.read_csv(run_dir / "results.csv")
    assert len(df) == 12 and df["z"].abs().max() < 5
    assert (run_dir / "figures" / "convergence.png").stat().st_size > 1000
    tour = pd.read_csv(run_dir / "tour.csv")
    assert list(tour.module) == ["interpolants", "lightsb", "gauge", "importance", "cumulants", "td"]
    assert tour.passed.all(), tour.to_string()
