"""The lightsb experiment kinds run end to end on tiny settings and the shipped YAML files validate."""
from pathlib import Path

import pandas as pd
import pytest

from genstat.experiments import load_config, run_experiment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["lightsb_gaussian", "lightsb_benchmark", "bench_lightsb"])
def test_shipped_configs_validate(name):
    cfg, params = load_config(ROOT / "experiments" / f"{name}.yaml")
    assert cfg.kind.startswith("lightsb.")


def test_gaussian_kind_tiny(tmp_path):
    cfg, params = load_config(ROOT / "experiments" / "lightsb_gaussian.yaml", [
        "params.dims=[2]", "params.epsilons=[1.0]", "params.n_test=50", "params.sinkhorn_samples=100"])
    params.models[0].steps = 60
    out = run_experiment(cfg, params, out=tmp_path, quiet=True)
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"lightsb-full-k1", "pot-sinkhorn-100"}
    assert (df["cbw2_uvp"] >= 0).all()
    assert len(list((out / "figures").glob("*.png"))) == 1


def test_bench_kind_tiny_with_anchor(tmp_path):
    cfg, params = load_config(ROOT / "experiments" / "bench_lightsb.yaml", [
        "params.gaussian.dims=[2]", "params.gaussian.epsilons=[1.0]", "params.gaussian.n_test=30",
        "params.gaussian.sinkhorn_samples=0", "params.benchmark.dims=[2]", "params.benchmark.epsilons=[1.0]",
        "params.benchmark.n_train=2000", "params.benchmark.n_test=30", "params.benchmark.sinkhorn_samples=0",
        "params.benchmark.plot=false", "params.gaussian.plot=false"])
    for section in (params.gaussian, params.benchmark):
        for spec in section.models:
            spec.steps = 20
    out = run_experiment(cfg, params, out=tmp_path, quiet=True)
    df = pd.read_csv(out / "results.csv")
    assert set(df["task"]) == {"gaussian", "benchmark"}
    anchor = df[df["method"] == params.benchmark.anchor]
    assert len(anchor) == 2 and (anchor["ratio_to_anchor"] == 1.0).all()
    assert df.loc[df["task"] == "benchmark", "paper_lightsb"].notna().all()


def test_benchmark_kind_authors_construction_paper_protocol(tmp_path):
    cfg, params = load_config(ROOT / "experiments" / "lightsb_benchmark.yaml", [
        "params.dims=[2]", "params.epsilons=[1.0]", "params.n_train=2000", "params.n_test=20",
        "params.construction=authors", "params.protocol=paper", "params.n_per_x=50", "params.plot=false"])
    for spec in params.models:
        spec.steps = 20
    out = run_experiment(cfg, params, out=tmp_path, quiet=True)
    df = pd.read_csv(out / "results.csv")
    assert (df["protocol"] == "paper").all() and (df["floor"] > 0).all()
    assert (df["cbw2_uvp"] > df["floor"]).all() and (df["cbw2_uvp_exact"] >= 0).all()
    assert "floor (true plan)" in (out / "table.md").read_text()
