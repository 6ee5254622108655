"""The quickstart kind: family-wise verdict over its 12 rows, and its module tour."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from genstat.cli import main
from genstat.experiments import tour
from genstat.experiments.quickstart import QuickstartParams, estimate_table, familywise_consistent, holm

ROOT = Path(__file__).resolve().parents[2]


def test_holm_matches_the_step_down_formula():
    # Holm (1979) by hand: sorted p = .01, .02, .03, .5 with m = 4 -> .04, .06, .06, .5
    p = np.array([0.03, 0.5, 0.01, 0.02])
    np.testing.assert_allclose(holm(p), [0.06, 0.5, 0.04, 0.06], rtol=0, atol=1e-15)
    np.testing.assert_allclose(holm(np.array([0.9, 0.8])), [1.0, 1.0])  # 2 x 0.8 capped at 1


def test_familywise_false_alarm_rate_is_at_most_nominal():
    """200 seeds of the 12-row table under a correct engine: the family-wise verdict raises a
    false alarm for <= 5% of seeds (binomial sd 1.5%: accept <= 9%), while 'any row's 95% CI
    misses' fires for about 1 - 0.95**(effective rows) of them (the per-row MISS of the old table)."""
    p = QuickstartParams(n_samples=20_000)
    fw, any_miss = 0, 0
    seeds = 200
    for seed in range(seeds):
        df = estimate_table(p, seed)
        fw += not familywise_consistent(df, 0.95)
        any_miss += bool((~df["covered"]).any())
    assert fw / seeds <= 0.09, fw
    assert any_miss / seeds > 0.15, any_miss     # why a per-row verdict is the wrong one for 12 rows


def test_table_is_bitwise_reproducible_and_has_no_timings():
    p = QuickstartParams(n_samples=5000)
    a, b = estimate_table(p, 3), estimate_table(p, 3)
    assert "wall_time" not in a.columns and {"pvalue", "p_holm", "truth", "z"} <= set(a.columns)
    assert a.to_csv(index=False) == b.to_csv(index=False)


def _small(tmp_path, *extra):
    return ["run", str(ROOT / "experiments" / "quickstart.yaml"), "--out", str(tmp_path / "runs"), "--quiet",
            "--set", "params.n_samples=20000", "--set", "params.convergence_points=3", *extra]


def test_a_failed_tour_check_fails_the_run_after_writing_everything(tmp_path, monkeypatch, capsys):
    def broken(seed, device):
        return dict(module="td", check="always fails", value=1.0, truth=0.0, bound=0.5, rule="value < 0.5",
                    passed=False, detail="test", device=str(device))

    monkeypatch.setitem(tour.TOUR, "td", broken)
    assert main(_small(tmp_path, "--set", "params.tour=[gauge, td]")) == 1
    assert "td" in capsys.readouterr().err
    (run_dir,) = list((tmp_path / "runs" / "quickstart").iterdir())
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and "value < 0.5" in meta["error"]
    t = pd.read_csv(run_dir / "tour.csv")
    assert list(t.module) == ["gauge", "td"] and list(t.passed) == [True, False]
    assert len(pd.read_csv(run_dir / "results.csv")) == 12
    assert (run_dir / "figures" / "convergence.png").is_file()


def test_every_tour_check_gets_the_device(monkeypatch):
    seen = []

    def spy(fn):
        def wrapped(seed, device):
            seen.append(device)
            return fn(seed, device)
        return wrapped

    for name in list(tour.TOUR):
        monkeypatch.setitem(tour.TOUR, name, spy(tour.TOUR[name]))
    row = tour.run_check("gauge", 0, "cpu")
    assert seen == [torch.device("cpu")] and row["device"] == "cpu"
    assert {"value", "truth", "bound", "rule", "passed"} <= set(row)


def test_tour_rows_separate_truth_bound_and_rule():
    row = tour.run_check("td", 0, torch.device("cpu"))
    assert row["passed"] and row["truth"] == 1.5
    assert abs(row["value"] - row["truth"]) < row["bound"] and "5 stderr" in row["rule"]
    assert not math.isnan(row["bound"])


@pytest.mark.gpu
def test_tour_runs_on_cuda():
    for name in tour.TOUR:
        row = tour.run_check(name, 0, torch.device("cuda"))
        assert row["passed"], row
