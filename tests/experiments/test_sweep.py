"""genstat sweep: grid expansion and validation, manifest, resume, concurrency, launchers."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sweep_kinds  # noqa: F401  (registers test.sweep)
from genstat.cli import main
from genstat.experiments.collect import collect
from genstat.experiments.config import ConfigError, parse_seeds
from genstat.experiments.manifest import owner_alive
from genstat.experiments.sweep import cell_id, parse_grid, plan_sweep, read_manifest, run_sweep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

BASE = """
name: toy
kind: test.sweep
seed: 0
params:
  x: 1.0
"""


def _yaml(tmp_path, text=BASE, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """The file the test kind appends ``x seed`` to on every call; returns a Counter reader."""
    path = tmp_path / "calls.txt"
    monkeypatch.setenv("SWEEP_TEST_CALLS", str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))

    def read() -> Counter:
        return Counter(path.read_text().splitlines()) if path.exists() else Counter()

    return read


def test_parse_grid_and_seeds():
    g = parse_grid(["params.eps=0.1,1,10", "params.dims=[2],[16, 32]", "params.method=euler,heun", "params.lr=1e-3"])
    assert g == {"params.eps": [0.1, 1, 10], "params.dims": [[2], [16, 32]], "params.method": ["euler", "heun"],
                 "params.lr": ["1e-3"]}  # YAML 1.1 reads 1e-3 as text; the schema makes it a float
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,1,5") == [0, 1, 5]
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    for bad in ("4-1", "a", "-1", "", "1-"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    with pytest.raises(ConfigError) as exc:
        parse_grid(["params.x", "seed=1,2", "params.y=[1", "params.z="])
    errs = "\n".join(exc.value.errors)
    assert "'params.x': expected KEY=V1,V2" in errs and "cannot read the values" in errs
    assert "'seed' cannot be swept" in errs and "'params.z' has no values" in errs


def test_cell_ids_are_readable_and_distinct():
    assert cell_id({}) == "base"
    assert cell_id({"params.eps": 0.1, "params.dims": [2, 16]}) == "eps=0.1,dims=2+16"
    assert cell_id({"name": "x y"}) != cell_id({"name": "x_y"})  # cleaned names carry a hash
    assert cell_id({"params.m": {"a": 1}}) != cell_id({"params.m": {"a": 2}})


def test_bad_grid_values_are_reported_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", str(_yaml(tmp_path)), "--grid", "params.x=1,-2,0", "--grid", "params.method=a,c",
                 "--grid", "params.xx=1", "--seeds", "0-1", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "params.x: Input should be greater than 0 (got -2" in err and "cell x=-2,method=a,xx=1" in err
    assert "(got 0" in err and "params.method: Input should be 'a' or 'b' (got 'c')" in err
    assert "[every cell] params.xx: unknown key" in err
    assert not out.exists()
    # the same checks for a sweep block in the file, and for the CLI's own arguments
    bad = BASE + "sweep:\n  grid: {params.x: [1, -1]}\n  seeds: 3-1\n"
    assert main(["sweep", str(_yaml(tmp_path, bad)), "--out", str(out), "-j", "0"]) == 2
    err = capsys.readouterr().err
    assert "sweep.seeds" in err and "-j/--jobs: must be >= 1" in err
    assert main(["sweep", str(_yaml(tmp_path, BASE + "sweep:\n  grid: {params.x: [1, -1]}\n")),
                 "--out", str(out)]) == 2
    assert "cell x=-1" in capsys.readouterr().err
    assert not out.exists()


def test_sweep_block_in_yaml(tmp_path, calls, capsys):
    text = BASE + "sweep:\n  grid: {params.x: [1, 2], params.method: [a, b]}\n  seeds: 0-1\n  keys: [d]\n"
    f = _yaml(tmp_path, text)
    plan = plan_sweep(f)
    assert plan.grid == {"params.x": [1, 2], "params.method": ["a", "b"]} and plan.seeds == [0, 1]
    assert [c for c, _ in plan.cells] == ["x=1,method=a", "x=1,method=b", "x=2,method=a", "x=2,method=b"]
    assert plan.keys == ["d"]
    # the command line replaces the block's values for a key, and its seeds
    plan = plan_sweep(f, grid={"params.x": [3]}, seeds=[5])
    assert plan.grid == {"params.x": [3], "params.method": ["a", "b"]} and plan.seeds == [5]
    # genstat run ignores the block: one run of the base config, without the block in config.yaml
    assert main(["run", str(f), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    (run_dir,) = (tmp_path / "runs" / "toy").iterdir()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "sweep" not in cfg and cfg["params"]["x"] == 1.0
    assert calls() == Counter({"1 0": 1})
    capsys.readouterr()
    assert main(["sweep", str(f), "--grid", "params.method=a", "--out", str(tmp_path / "sw")]) == 0
    m = read_manifest(tmp_path / "sw")
    assert sorted(m["cells"]) == ["x=1,method=a/seed0", "x=1,method=a/seed1", "x=2,method=a/seed0",
                                  "x=2,method=a/seed1"]
    assert m["grid"] == {"params.x": [1, 2], "params.method": ["a"]} and m["seeds"] == [0, 1] and m["keys"] == ["d"]
    for e in m["cells"].values():
        assert e["status"] == "completed" and e["attempts"] == 1 and e["owner"] is None
        run_dir = tmp_path / "sw" / e["run_dir"]
        assert run_dir.parent.parent.parent == tmp_path / "sw" / "cells" / e["cell"]
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["seed"] == e["seed"] and cfg["params"]["x"] == e["overrides"]["params.x"]
        assert (run_dir / "overrides.txt").read_text().splitlines() == ["params.x=" + str(e["overrides"]["params.x"]),
                                                                         "params.method=a"]
    assert calls() == Counter({"1 0": 2, "1 1": 1, "2 0": 1, "2 1": 1})


DRIVER = """
import sys
sys.path[:0] = [{here!r}, {root!r}]
import sweep_kinds  # registers test.sweep here and, through the fork server, in the workers
from genstat.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


def _driver(tmp_path) -> Path:
    return _yaml(tmp_path, DRIVER.format(here=str(HERE), root=str(ROOT)), "driver.py")


def _values(sweep_dir) -> pd.DataFrame:
    t = collect([sweep_dir]).table
    return t.sort_values(["cell", "seed", "component"])[["cell", "seed", "component", "value", "wall_s"]] \
        .reset_index(drop=True)


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_after_sigterm(tmp_path, calls, monkeypatch, jobs):
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv("SWEEP_TEST_HOLD", str(hold))
    f = _yaml(tmp_path, BASE + "  hold_at: 2\n")
    args = [sys.executable, str(_driver(tmp_path)), "sweep", str(f), "--grid", "params.x=1,2,3", "--seeds", "0-1",
            "-j", str(jobs), "--out", str(tmp_path / "sw")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = hold.with_name("hold.started")
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "re-run the same command to resume" in err
    before = read_manifest(tmp_path / "sw")["cells"]
    status = {k: e["status"] for k, e in before.items()}
    assert status["x=2/seed0"] == "interrupted"
    assert set(status.values()) <= {"completed", "interrupted", "pending", "running"}, status
    for k, e in before.items():  # a worker stopped before it could say so: its claim is stale
        assert e["status"] != "running" or not owner_alive(e["owner"]), e
    if jobs == 1:
        assert status == {"x=1/seed0": "completed", "x=1/seed1": "completed", "x=2/seed0": "interrupted",
                          "x=2/seed1": "pending", "x=3/seed0": "pending", "x=3/seed1": "pending"}
    interrupted_dir = tmp_path / "sw" / before["x=2/seed0"]["run_dir"]
    assert json.loads((interrupted_dir / "meta.json").read_text())["status"] == "interrupted"
    done_before = {k for k, s in status.items() if s == "completed"}
    calls_before = calls()

    hold.unlink()
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res
    after = read_manifest(tmp_path / "sw")["cells"]
    assert all(e["status"] == "completed" for e in after.values())
    for k in done_before:  # finished cells were not rerun
        assert after[k]["run_dir"] == before[k]["run_dir"] and after[k]["attempts"] == 1
    assert after["x=2/seed0"]["attempts"] == 2 and len(after["x=2/seed0"]["runs"]) == 2
    calls_after = calls() - calls_before
    assert all(calls_after[f"{k.split('/')[0][2:]} {k.split('seed')[1]}"] == 0 for k in done_before)
    assert sum(calls_after.values()) == 6 - len(done_before)

    # identical to an uninterrupted sweep
    monkeypatch.delenv("SWEEP_TEST_HOLD")
    assert main(args[2:-1] + [str(tmp_path / "ref")]) == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "sw"), _values(tmp_path / "ref"), check_exact=True)


def test_failed_cell_is_retried_and_others_go_on(tmp_path, calls, monkeypatch, capsys):
    fail = tmp_path / "fail"
    fail.touch()
    monkeypatch.setenv("SWEEP_TEST_FAIL", str(fail))
    args = ["sweep", str(_yaml(tmp_path, BASE + "  fail_at: 2\n")), "--grid", "params.x=1,2,3",
            "--out", str(tmp_path / "sw")]
    assert main(args) == 1
    assert "x=2/seed0 (failed)" in capsys.readouterr().err
    m = read_manifest(tmp_path / "sw")["cells"]
    assert [m[k]["status"] for k in ("x=1/seed0", "x=2/seed0", "x=3/seed0")] == ["completed", "failed", "completed"]
    assert "planned failure" in m["x=2/seed0"]["error"]
    failed_dir = tmp_path / "sw" / m["x=2/seed0"]["run_dir"]
    assert "planned failure" in (failed_dir / "log.txt").read_text()
    fail.unlink()
    assert main(args) == 0
    m2 = read_manifest(tmp_path / "sw")["cells"]
    assert m2["x=2/seed0"]["status"] == "completed" and m2["x=2/seed0"]["run_dir"] != m["x=2/seed0"]["run_dir"]
    assert failed_dir.is_dir()  # the failed attempt stays on disk
    assert calls() == Counter({"1 0": 1, "2 0": 2, "3 0": 1})
    assert main(args) == 0  # nothing left to do
    assert calls() == Counter({"1 0": 1, "2 0": 2, "3 0": 1})


def test_stale_claim_is_redone(tmp_path, calls):
    f = _yaml(tmp_path)
    plan = plan_sweep(f, grid={"params.x": [1, 2]})
    run_sweep(plan, tmp_path / "sw", echo=lambda s: None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    m = read_manifest(tmp_path / "sw")
    m["cells"]["x=2/seed0"].update(status="running", owner={"host": os.uname().nodename, "pid": dead.pid})
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps(m))
    run_sweep(plan, tmp_path / "sw", echo=lambda s: None)
    assert calls() == Counter({"1 0": 1, "2 0": 2})


def test_two_sweeps_into_one_directory(tmp_path, calls):
    """Overlapping grids launched at once: one valid manifest, the union of the cells, each run once."""
    f = _yaml(tmp_path)
    driver = _driver(tmp_path)
    common = [sys.executable, str(driver), "sweep", str(f), "--seeds", "0-1", "--out", str(tmp_path / "sw")]
    procs = [subprocess.Popen(common + ["--grid", grid], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for grid in ("params.x=1,2,3", "params.x=3,2,4")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    m = read_manifest(tmp_path / "sw")
    assert sorted(m["cells"]) == [f"x={x}/seed{s}" for x in (1, 2, 3, 4) for s in (0, 1)]
    assert all(e["status"] == "completed" and e["attempts"] == 1 for e in m["cells"].values())
    assert calls() == Counter({f"{x} {s}": 1 for x in (1, 2, 3, 4) for s in (0, 1)})
    assert m["grid"]["params.x"] in ([1, 2, 3, 4], [3, 2, 4, 1]) and len(m["invocations"]) == 2
    # a sweep of another base configuration is refused and changes nothing
    text = (tmp_path / "sw" / "sweep.json").read_text()
    res = subprocess.run(common + ["--set", "params.method=b"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "another base configuration" in res.stderr
    assert (tmp_path / "sw" / "sweep.json").read_text() == text


def test_manifest_updates_from_many_processes_are_all_kept(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=sweep_kinds.hammer, args=(str(tmp_path), f"p{i}", 25)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    m = read_manifest(tmp_path)
    assert sorted(m["cells"]) == sorted(f"p{i}-{j}" for i in range(4) for j in range(25))
    assert not list(tmp_path.glob(".sweep.json.*"))  # no temporary files left behind


def test_submitit_local_launcher_runs_a_two_cell_sweep(tmp_path, calls):
    pytest.importorskip("submitit")
    f = _yaml(tmp_path)
    args = ["sweep", str(f), "--grid", "params.x=1,2", "--launcher", "submitit-local", "-j", "2",
            "--launcher-opt", "timeout_min=5"]
    assert main(args + ["--out", str(tmp_path / "sw")]) == 0
    m = read_manifest(tmp_path / "sw")
    assert all(e["status"] == "completed" for e in m["cells"].values()) and len(m["cells"]) == 2
    assert m["invocations"][0]["launcher"] == "submitit-local"
    assert list((tmp_path / "sw" / "submitit").iterdir())  # the jobs' files
    assert calls() == Counter({"1 0": 1, "2 0": 1})
    assert main(["sweep", str(f), "--grid", "params.x=1,2", "--out", str(tmp_path / "ref")]) == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "sw"), _values(tmp_path / "ref"), check_exact=True)


def test_shipped_sweeps_expand_and_validate():
    for name in ("sweep_lightsb.yaml", "sweep_interpolants.yaml", "sweep_td_weighting.yaml"):
        plan = plan_sweep(ROOT / "experiments" / name)
        assert len(plan.cells) * len(plan.seeds) > 1, name


def test_launcher_that_cannot_start_hands_back_its_cells(tmp_path, capsys):
    pytest.importorskip("submitit")
    import shutil

    if shutil.which("srun"):
        pytest.skip("this machine has SLURM")
    out = tmp_path / "sw"
    assert main(["sweep", str(_yaml(tmp_path)), "--grid", "params.x=1,2", "--out", str(out), "--launcher", "slurm"]) == 2
    assert "cannot start the slurm launcher" in capsys.readouterr().err
    m = read_manifest(out)
    assert {e["status"] for e in m["cells"].values()} == {"pending"}
    assert all(e["owner"] is None and e["attempts"] == 0 for e in m["cells"].values())


def test_a_worker_that_cannot_import_the_kind_fails_its_cells(tmp_path, monkeypatch):
    """The kind's module is imported in the worker: when it cannot be, the cell fails (with the error)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # a submitit job: sweep_kinds is not importable there
    pytest.importorskip("submitit")
    args = ["sweep", str(_yaml(tmp_path)), "--grid", "params.x=1", "--out", str(tmp_path / "sw"),
            "--launcher", "submitit-local"]
    assert main(args) == 1
    (e,) = read_manifest(tmp_path / "sw")["cells"].values()
    assert e["status"] == "failed" and "No module named 'sweep_kinds'" in e["error"] and e["owner"] is None
