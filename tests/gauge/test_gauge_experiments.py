"""Smoke runs of the gauge experiment kinds with tiny settings (the real tables are in docs/gauge.md).

The kinds are called directly (not through ``list_kinds``) so that these tests do not import the other
modules' experiment files.
"""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from genstat.experiments.config import ExperimentConfig
from genstat.experiments.gauge import GaugeToyParams, IDManifoldsParams, run_id_manifolds, run_toy
from genstat.experiments.runner import Run

ROOT = Path(__file__).resolve().parents[2]


def _setup(name, params_cls, tmp_path, **over):
    raw = yaml.safe_load((ROOT / "experiments" / name).read_text())
    cfg = ExperimentConfig(**raw)
    params = params_cls(**{**raw["params"], **over})
    return cfg, params, Run(tmp_path / "run", cfg, quiet=True)


@pytest.mark.parametrize("name,cls", [("gauge_toy.yaml", GaugeToyParams), ("id_manifolds.yaml", IDManifoldsParams)])
def test_yaml_files_validate(name, cls):
    raw = yaml.safe_load((ROOT / "experiments" / name).read_text())
    assert raw["kind"] in ("gauge.toy", "gauge.id_manifolds")
    cls(**raw["params"])


@pytest.mark.slow
def test_toy_smoke(tmp_path):
    _, params, run = _setup("gauge_toy.yaml", GaugeToyParams, tmp_path, decompose_steps=5, decompose_samples=200,
                            chains=64, langevin_steps=5, hidden=8)
    run_toy(params, run)
    run.close()
    df = pd.read_csv(run.dir / "results.csv")
    assert len(df) == 3 and (run.dir / "figures" / "decomposition.png").is_file()
    assert df.loc[1, "mean_abs_gauge_residual"] < 1e-10 < df.loc[2, "mean_abs_gauge_residual"]


@pytest.mark.slow
def test_id_manifolds_smoke(tmp_path):
    _, params, run = _setup("id_manifolds.yaml", IDManifoldsParams, tmp_path, manifolds=["linear5_R20"], steps=3,
                            n_data=200, n_points=2, flow_points=1, flow_steps=4, hidden=8)
    run_id_manifolds(params, run)
    run.close()
    df = pd.read_csv(run.dir / "results.csv")
    assert set(df["model"]) == {"-", "exact", "energy", "free"}
    assert (run.dir / "table.md").is_file()
