"""Run directories on disk: file modes, meta.json liveness (pid, host, heartbeat), metrics rows,
signals, and unusable ``--out`` directories."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
from pydantic import BaseModel, ConfigDict

from genstat.cli import main
from genstat.experiments import experiment, load_config, run_experiment
from genstat.experiments.runner import run_is_dead


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sleep: float = 0.0


@experiment("test.files", _P, help="test kind: a metric, a result row, optional sleep")
def _files(p: _P, run):
    run.metric(loss=1.0)
    run.metric(loss=0.5)
    run.metric(step=10, loss=0.25)
    run.metric(loss=0.125)
    run.add_results({"row": 1})
    run.save_table(pd.DataFrame({"a": [1]}), "extra")
    if p.sleep:
        first = json.loads((run.dir / "meta.json").read_text())["heartbeat"]
        time.sleep(p.sleep)
        second = json.loads((run.dir / "meta.json").read_text())["heartbeat"]
        run.add_results({"row": 2, "heartbeat_moved": second > first})


def _run(tmp_path, **kw):
    cfg, params = load_config(raw={"name": "files", "kind": "test.files", "params": kw})
    return run_experiment(cfg, params, out=tmp_path / "runs", quiet=True, heartbeat_s=0.05)


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        d = _run(tmp_path)
    finally:
        os.umask(old)
    for f in ("config.yaml", "meta.json", "results.csv", "extra.csv", "overrides.txt", "log.txt",
              "metrics.jsonl"):
        assert oct((d / f).stat().st_mode & 0o777) == oct(0o644), f


def test_meta_records_pid_host_and_a_moving_heartbeat(tmp_path):
    d = _run(tmp_path, sleep=0.5)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["pid"] == os.getpid() and meta["hostname"] == socket.gethostname()
    assert meta["heartbeat_interval_s"] == 0.05 and meta["heartbeat"] >= time.time() - 60
    assert bool(pd.read_csv(d / "results.csv")["heartbeat_moved"].iloc[1])
    assert not run_is_dead(meta)


def test_run_is_dead_from_stale_heartbeat_or_dead_pid():
    now = time.time()
    base = {"status": "running", "pid": os.getpid(), "hostname": socket.gethostname(),
            "heartbeat": now, "heartbeat_interval_s": 30.0}
    assert not run_is_dead(base, now=now + 10)
    assert run_is_dead(base, now=now + 3600)                       # heartbeat stale
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert run_is_dead(dict(base, pid=proc.pid), now=now + 10)     # same host, pid gone
    assert not run_is_dead(dict(base, pid=proc.pid, hostname="elsewhere"), now=now + 10)
    assert not run_is_dead(dict(base, status="completed"), now=now + 3600)


def test_metrics_rows_carry_step_and_timestamp(tmp_path):
    t0 = time.time()
    d = _run(tmp_path)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 10, 11]
    assert all(t0 - 1 <= r["timestamp"] <= time.time() + 1 for r in rows)
    assert [r["loss"] for r in rows] == [1.0, 0.5, 0.25, 0.125]


SLOW_CLEANUP = """
import sys, time
from pydantic import BaseModel, ConfigDict
from genstat.experiments import experiment, runner
from genstat.cli import main

class P(BaseModel):
    model_config = ConfigDict(extra="forbid")

_write = runner.atomic_write_text

def slow_write(path, text):          # make the runner's own cleanup (meta.json) slow
    if path.name == "meta.json" and '"interrupted"' in text:
        print("CLEANUP", flush=True)
        time.sleep(1.5)
    _write(path, text)

runner.atomic_write_text = slow_write

@experiment("test.slow", P, help="slow")
def slow(p, run):
    run.add_results({"row": 1})
    print("READY", flush=True)
    time.sleep(120)

sys.exit(main(sys.argv[1:]))
"""


def test_second_sigterm_during_cleanup_still_exits_130(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(SLOW_CLEANUP)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("name: slow\nkind: test.slow\n")
    proc = subprocess.Popen([sys.executable, str(script), "run", str(cfg), "--out", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in proc.stdout:
        if "READY" in line:
            break
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:
        if "CLEANUP" in line:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    (run_dir,) = list((tmp_path / "runs" / "slow").iterdir())
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"


GOOD = "name: files\nkind: test.files\n"


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(GOOD)
    out = tmp_path / "afile"
    out.write_text("x")
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and str(out) in err and "Traceback" not in err


def test_read_only_out_is_a_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(GOOD)
    if os.geteuid() == 0:             # root writes through mode bits; /sys refuses new entries
        out = "/sys/genstat-test-runs"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        out = str(ro / "runs")
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "Traceback" not in err


def test_failed_kind_is_one_line_exit_1_with_traceback_in_log(tmp_path, capsys):
    @experiment("test.kaput", _P, help="raises")
    def kaput(p, run):
        raise RuntimeError("kaput")

    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: kaput\nkind: test.kaput\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: kaput" in err
    (run_dir,) = list((tmp_path / "runs" / "kaput").iterdir())
    assert "Traceback" in (run_dir / "log.txt").read_text()
