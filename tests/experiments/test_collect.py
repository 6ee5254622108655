"""genstat collect / compare: the tidy table reproduces every run exactly; the summary over seeds."""
import math
import textwrap

import numpy as np
import pandas as pd
import pytest

import sweep_kinds  # noqa: F401  (registers test.sweep)
from genstat.cli import main
from genstat.experiments import load_config, run_experiment
from genstat.experiments.collect import collect, compare_runs, summarize
from genstat.experiments.sweep import plan_sweep, read_manifest, run_sweep

BASE = """
name: toy
kind: test.sweep
params:
  x: 1.0
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collect")
    f = tmp / "exp.yaml"
    f.write_text(textwrap.dedent(BASE))
    plan = plan_sweep(f, grid={"params.x": [1, 4], "params.repeats": [1, 2]}, seeds=[0, 1, 2], keys=["d"])
    run_sweep(plan, tmp / "sw", echo=lambda s: None)
    return tmp / "sw"


def test_collect_reproduces_every_run_exactly(sweep_dir):
    col = collect([sweep_dir])
    m = read_manifest(sweep_dir)
    assert len(col.runs) == 12
    assert col.config_columns == ["params.x", "params.repeats"]
    assert col.key_columns == ["component", "method", "d"]  # strings, and d declared in the sweep
    assert col.metric_columns == ["value", "wall_s", "ok"]
    t = col.table
    for e in m["cells"].values():
        run_dir = sweep_dir / e["run_dir"]
        rows = t[t["run"] == str(run_dir)]
        assert set(rows["cell"]) == {e["cell"]} and set(rows["seed"]) == {e["seed"]}
        assert set(rows["params.x"]) == {e["overrides"]["params.x"]}
        expected = pd.read_csv(run_dir / "results.csv")
        pd.testing.assert_frame_equal(rows[list(expected.columns)].reset_index(drop=True), expected,
                                      check_exact=True)


def test_summary_over_seeds(sweep_dir):
    col = collect([sweep_dir])
    s = col.summary(level=0.95)
    assert list(s.columns) == ["params.x", "params.repeats", "component", "method", "d", "metric", "n", "mean", "sd",
                               "stderr", "ci_low", "ci_high"]
    assert len(s) == 2 * 2 * 2 * 3 and (s["n"] == 3).all()
    t = col.table
    # t quantile with 2 degrees of freedom in closed form: t = (2p - 1) / sqrt(2 p (1 - p)), p = 0.975
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    for (x, reps, comp), g in t.groupby(["params.x", "params.repeats", "component"]):
        per_seed = g.groupby("run")["value"].mean().to_numpy()  # repeated rows of a run are averaged first
        assert len(per_seed) == 3
        row = s[(s["params.x"] == x) & (s["params.repeats"] == reps) & (s.component == comp) & (s.metric == "value")]
        (row,) = row.itertuples()
        assert row.mean == per_seed.mean()
        assert row.sd == per_seed.std(ddof=1)
        assert row.stderr == per_seed.std(ddof=1) / math.sqrt(3)
        assert row.ci_high - row.mean == pytest.approx(t2 * row.stderr, rel=1e-12)
        assert row.mean - row.ci_low == pytest.approx(t2 * row.stderr, rel=1e-12)
    ok = s[s.metric == "ok"]
    assert ((ok["mean"] >= 0) & (ok["mean"] <= 1)).all()  # a boolean column averages to a fraction
    # one seed: the mean is the run's number and there is no interval
    one = summarize(t[t.seed == 0], by=col.config_columns + col.key_columns, metrics=["value"])
    assert (one["n"] == 1).all() and one["sd"].isna().all() and one["ci_low"].isna().all()
    first = t[(t.seed == 0) & (t["params.repeats"] == 1)].set_index(["params.x", "component"])["value"]
    got = one[one["params.repeats"] == 1].set_index(["params.x", "component"])["mean"]
    assert (got.sort_index() == first.sort_index()).all()


def test_collect_cli_writes_tables(sweep_dir, tmp_path, capsys):
    assert main(["collect", str(sweep_dir), "--metrics", "value", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| params.x | params.repeats | component | method | d | n | value |" in out
    assert "12 run(s)" in out
    for name in ("collected.csv", "summary.csv", "summary.md"):
        assert (tmp_path / name).is_file()
    assert pd.read_csv(tmp_path / "summary.csv")["metric"].unique().tolist() == ["value"]
    assert main(["collect", str(sweep_dir), "--metrics", "nope", "--out", str(tmp_path)]) == 2
    assert "metrics ['nope']" in capsys.readouterr().err
    assert main(["collect", str(sweep_dir), "--keys", "zz", "--out", str(tmp_path)]) == 2
    assert main(["collect", str(tmp_path / "empty")]) == 2


def _run(tmp_path, overrides=(), seed=0):
    cfg, params = load_config(raw={"name": "toy", "kind": "test.sweep"}, overrides=list(overrides), seed=seed)
    return run_experiment(cfg, params, out=tmp_path / "runs", overrides=list(overrides), quiet=True)


def test_collect_plain_runs_finds_what_differs(tmp_path):
    a = _run(tmp_path, ["params.x=2"], seed=0)
    b = _run(tmp_path, ["params.x=2"], seed=1)
    c = _run(tmp_path, ["params.x=3", "params.method=b"], seed=0)
    col = collect([tmp_path / "runs"])
    assert col.config_columns == ["params.x", "params.method"]
    assert set(col.table["cell"]) == {"x=2.0,method=a", "x=3.0,method=b"}
    assert {r.dir for r in col.runs} == {a, b, c}
    s = col.summary(metrics=["value"])
    assert sorted(s.groupby("params.x")["n"].max().tolist()) == [1, 2]


def test_compare_two_runs(tmp_path, capsys):
    a = _run(tmp_path, ["params.x=2"])
    b = _run(tmp_path, ["params.x=5"])
    cmp = compare_runs(a, b)
    assert cmp.config.to_dict("records") == [{"key": "params.x", "A": 2.0, "B": 5.0}]
    r = cmp.results[cmp.results.column == "value"]
    assert list(r["component"]) == ["u", "v"]
    ra, rb = pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv")
    np.testing.assert_array_equal(r["A"].to_numpy(), ra["value"].to_numpy())
    np.testing.assert_array_equal(r["B - A"].to_numpy(), rb["value"].to_numpy() - ra["value"].to_numpy())
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "## config" in out and "| params.x | 2 | 5 |" in out and "## results" in out
    assert main(["compare", str(a), str(tmp_path)]) == 2
