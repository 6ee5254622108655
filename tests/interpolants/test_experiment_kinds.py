"""Smoke test of the interpolants experiment kinds on tiny settings (the YAML files validate).

The kinds are called directly (not through the registry, which imports every module's kinds)."""
from pathlib import Path

import pandas as pd
import pydantic
import pytest
import yaml

from genstat.experiments.config import ExperimentConfig, apply_overrides
from genstat.experiments.interpolants import BenchParams, Toy2dParams, run_bench, run_toy2d
from genstat.experiments.interpolants_nfe import NFEParams, run_nfe
from genstat.experiments.runner import Run

ROOT = Path(__file__).resolve().parents[2]


def load(name, overrides):
    raw = apply_overrides(yaml.safe_load((ROOT / "experiments" / name).read_text()), overrides)
    return ExperimentConfig(**raw)


@pytest.mark.parametrize("name,params_cls,fn,overrides", [
    pytest.param("interpolants_2d.yaml", Toy2dParams, run_toy2d,
                 ["params.steps=20", "params.n_eval=100", "params.n_trajectories=20",
                  "params.method.gamma=scaled_brownian", "params.method.a=0.1", "params.method.t_min=0.01",
                  "params.sde_eps=[0.1]", "params.sde_steps=5"], marks=pytest.mark.slow),  # matplotlib: ~10 s
    ("bench_interpolants.yaml", BenchParams, run_bench, ["params.steps=10", "params.n_eval=100", "params.seeds=[0]"]),
    ("interpolants_nfe.yaml", NFEParams, run_nfe,
     ["params.steps=10", "params.n_eval=100", "params.seeds=[0]", "params.nfe=[4,8]", "params.reference_steps=20",
      "params.dopri5_tol=[0.01]", "params.samplers=[euler,rk4,ghvb3]"]),
])
def test_kind_runs(tmp_path, name, params_cls, fn, overrides):
    cfg = load(name, overrides)
    assert cfg.kind in ("interpolants.toy2d", "interpolants.bench", "interpolants.nfe")
    run = Run(tmp_path, cfg, quiet=True)
    try:
        fn(params_cls(**cfg.params), run)
    finally:
        run.close()
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) > 0 and df["w2"].notna().all() and (df["w2"] > 0).all()
    assert (tmp_path / "table.md").is_file()


def test_bad_params():
    with pytest.raises(pydantic.ValidationError, match="rk5"):
        BenchParams(samplers=["rk5"])
    with pytest.raises(pydantic.ValidationError, match="swissroll"):
        Toy2dParams(target="swissroll")
    with pytest.raises(pydantic.ValidationError, match="unknown"):
        Toy2dParams(method={"unknown": 1})


def test_nfe_kind_rejects_unknown_samplers():
    with pytest.raises(pydantic.ValidationError, match="samplers must be among"):
        NFEParams(samplers=["leapfrog"])
