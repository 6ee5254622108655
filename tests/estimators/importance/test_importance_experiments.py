"""The experiment kinds of estimators.importance run end to end on tiny parameters."""
from pathlib import Path

import pandas as pd
import pytest

from genstat.experiments import load_config, run_experiment

ROOT = Path(__file__).resolve().parents[3]

TINY = {
    "aiscv_moments": ["params.J=3", "params.budget=2000", "params.reps=2"],
    "aiscv_cantilever": ["params.J=4", "params.budget=2000", "params.reps=2"],
    "sobol_ishigami": ["params.budget=1000", "params.reps=2"],
    "rare_event": ["params.budget=2000", "params.reps=2", "params.p=0.001"],
    "bench_aiscv": ["params.speed_reps=1", "params.moments_budget=2000", "params.sobol.budget=1000",
                         "params.sobol.reps=2", "params.sobol.methods=[aiscv,saltelli,scipy]"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_runs(name, tmp_path):
    cfg, params = load_config(ROOT / "experiments" / f"{name}.yaml", TINY[name])
    run_dir = run_experiment(cfg, params, out=tmp_path / "runs", quiet=True)
    df = pd.read_csv(run_dir / "results.csv")
    assert len(df) > 0
    assert (run_dir / "table.md").read_text().startswith("|")
