"""The td experiment kinds run end to end on tiny parameters (files under tmp_path only)."""
from pathlib import Path

import pandas as pd
import pytest

from genstat.experiments import load_config, run_experiment

ROOT = Path(__file__).resolve().parents[3]

TINY = {
    "bench_ggd": ["params.groups=8", "params.n_samples=500", "params.scipy_groups=4", "params.repeats=1",
                  "params.dtypes=[float64]"],
    "td_weighting": ["params.seeds=2", "params.eval_episodes=1", "params.bootstrap=100",
                     "params.tasks=[{algo: ppo, env: NoisyCartPole-v1, steps: 256}, "
                     "{algo: sac, env: NoisyPendulum-v1, steps: 40}]", "params.sac_learning_starts=20",
                     "params.sac_hidden=8"],
}


@pytest.mark.parametrize("name", [pytest.param("bench_ggd"),
                                  pytest.param("td_weighting", marks=pytest.mark.slow)])  # ~10 s of RL
def test_experiment_runs(name, tmp_path):
    cfg, params = load_config(ROOT / "experiments" / f"{name}.yaml", TINY[name])
    run_dir = run_experiment(cfg, params, out=tmp_path / "runs", quiet=True)
    df = pd.read_csv(run_dir / "results.csv")
    assert len(df) > 0
    if name == "bench_ggd":
        assert set(df["method"]) == {"mle", "kurtosis"} and (df["speedup"] > 0).all()
    else:
        assert len(df) == 2 * 4 * 2
        summary = pd.read_csv(run_dir / "summary.csv")
        assert set(summary["variant"]) == {"plain", "ensemble_mse", "gauss_biv", "ggd_biev"}
        assert len(list((run_dir / "figures").glob("*.png"))) == 2
