"""The interpolants benchmark against the real torchcfm (optional ``[bench]`` extra) and without it.

Tiny settings (a few steps, one cheap sampler): these check the rows, the fair-anchor columns and the
anchor's training loop, not the numbers (docs/interpolants.md has the measured table)."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from genstat.experiments.config import ExperimentConfig, apply_overrides
from genstat.experiments.interpolants import (BenchParams, TorchCFMConfig, _build, _import_torchcfm, _Stream,
                                              _train_torchcfm, run_bench)
from genstat.experiments.runner import Run

ROOT = Path(__file__).resolve().parents[2]
TINY = ["params.steps=5", "params.n_eval=50", "params.seeds=[0,1]", "params.samplers=[euler:2]"]


def run_yaml(tmp_path, edit=None):
    raw = apply_overrides(yaml.safe_load((ROOT / "experiments" / "bench_interpolants.yaml").read_text()), TINY)
    if edit is not None:
        edit(raw["params"])
    cfg = ExperimentConfig(**raw)
    run = Run(tmp_path, cfg, quiet=True)
    try:
        run_bench(BenchParams(**cfg.params), run)
    finally:
        run.close()
    return (pd.read_csv(tmp_path / "results.csv"), pd.read_csv(tmp_path / "summary.csv"),
            (tmp_path / "log.txt").read_text(), (tmp_path / "table.md").read_text())


def test_without_torchcfm_skips_its_rows(tmp_path, monkeypatch):
    # a None entry makes the import fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "torchcfm", None)
    monkeypatch.setitem(sys.modules, "torchcfm.conditional_flow_matching", None)
    res, summ, log, table = run_yaml(tmp_path)
    assert "torchcfm is not installed" in log
    assert (res.impl == "genstat").all() and not res.method.str.startswith("torchcfm").any()
    # the fair anchors fall back to the in-repo re-implementations with the cosine schedule
    assert "best fair anchor per sampler: euler:2: " in table and "(re-impl)" in table.splitlines()[0]
    assert "REFERENCE.md" in table
    assert summ.w2_ratio_best_fair.min() <= 1.0


def test_real_torchcfm_rows(tmp_path):
    pytest.importorskip("torchcfm")
    res, summ, log, table = run_yaml(tmp_path)
    cfg = yaml.safe_load((ROOT / "experiments" / "bench_interpolants.yaml").read_text())["params"]
    names = [r["name"] for r in cfg["torchcfm"]] + [r["name"] for r in cfg["variants"]]
    assert list(summ.method) == names
    assert set(res[res.impl == "torchcfm"].method) == {r["name"] for r in cfg["torchcfm"]}
    assert res.w2.gt(0).all() and res.train_cpu_s.gt(0).all() and res.train_cpu_s_samplers.gt(0).all()
    best = summ.loc[summ.w2_ratio_best_fair == 1.0, "method"]
    assert len(best) == 1 and best.iloc[0] in cfg["fair"]
    # per-seed wins: one W/L per seed, against the best fair anchor's W2 on that seed
    assert summ.loc[summ.method != best.iloc[0], "seeds_vs_best_fair"].str.fullmatch("[WL]{2}").all()
    ref = res[res.method == best.iloc[0]].set_index("seed").w2
    for name, d in res.groupby("method"):
        if name != best.iloc[0]:
            want = "".join("W" if w < ref[s] else "L" for s, w in zip(d.seed, d.w2))
            assert summ.set_index("method").loc[name, "seeds_vs_best_fair"] == want
    assert "torchcfm is not installed" not in log


def test_torchcfm_loop_reproduces_and_leaves_global_rngs_alone():
    pytest.importorskip("torchcfm")
    matchers = _import_torchcfm()
    r = TorchCFMConfig(name="t", matcher="OT-CFM", lr=1e-2, lr_schedule="cosine", batch_size=32, hidden=8)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(3 * 32, 2, generator=g), torch.randn(3 * 32, 2, generator=g) + 3
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    weights = []
    for _ in range(2):
        _, model = _build(r, seed=5)
        _train_torchcfm(r, matchers, model, _Stream(x0), _Stream(x1), steps=3, seed=5)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    torch.testing.assert_close(torch.get_rng_state(), torch_state, rtol=0, atol=0)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_stream_serves_consecutive_rows_then_refuses():
    x = torch.arange(10.0).reshape(5, 2)
    s = _Stream(x)
    torch.testing.assert_close(s(2, None, None), x[:2])
    torch.testing.assert_close(s(3), x[2:])
    with pytest.raises(RuntimeError, match="exhausted"):
        s(1)


@pytest.mark.parametrize("edit,match", [
    (lambda p: p.update(fair=["nope"]), "fair rows"),
    (lambda p: p.update(anchor="torchcfm I-CFM"), "anchor"),  # the time unit must be an in-repo row
    (lambda p: p["variants"][0].update(name="torchcfm I-CFM"), "unique"),
])
def test_bad_rows(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        run_yaml(tmp_path, edit)
