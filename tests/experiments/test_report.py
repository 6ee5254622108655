"""genstat report: self-contained HTML for a run and a sweep, checked in headless Chromium; figure labels."""
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pandas as pd
import pytest

import sweep_kinds  # noqa: F401  (registers test.sweep)
from genstat.cli import main
from genstat.experiments import load_config, run_experiment
from genstat.experiments.collect import collect
from genstat.experiments.report import sweep_figures, unit_of, write_report
from genstat.experiments.sweep import plan_sweep, run_sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    f = tmp / "exp.yaml"
    f.write_text(textwrap.dedent("""
        name: toy
        kind: test.sweep
        params: {x: 1.0}
    """))
    run_sweep(plan_sweep(f, grid={"params.x": [1, 2, 4], "params.method": ["a", "b"]}, seeds=[0, 1, 2]),
              tmp / "sw", echo=lambda s: None)
    return tmp / "sw"


@pytest.fixture
def run_dir(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, params = load_config(raw={"name": "toy", "kind": "test.sweep", "params": {"x": 2.5}})
    d = run_experiment(cfg, params, out=tmp_path / "runs", quiet=True)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_xlabel("x [1]")
    ax.set_ylabel("y [1]")
    ax.legend()
    fig.savefig(d / "figures" / "extra.png")
    plt.close(fig)
    (d / "table.md").write_text("| a | b |\n|---|---|\n| 1 | <2> |\n")
    return d


def _self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report must not load anything"
    assert "<script" not in html


def test_run_report(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text()
    _self_contained(html)
    for table_id in ("meta", "versions", "results"):
        assert f'id="{table_id}"' in html
    assert html.count('src="data:image/png;base64,') == 2  # figures/extra.png and the metrics.jsonl curves
    assert 'id="config"' in html and "x: 2.5" in html
    assert 'id="log"' in html and "x=2.5 seed=0 done" in html
    assert "&lt;2&gt;" in html  # text from the run is escaped


def test_sweep_report(sweep_dir, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(sweep_dir), "-o", str(out)]) == 0
    html = out.read_text()
    _self_contained(html)
    for table_id in ("grid", "summary", "summary-long", "collected", "cells"):
        assert f'id="{table_id}"' in html
    # one figure per metric that varies (value, wall_s, ok): every metric against the swept x
    assert html.count('src="data:image/png;base64,') == 3
    assert html.count('<a href="cells/') == 18


def test_sweep_figures_have_labels_units_and_legends(sweep_dir):
    col = collect([sweep_dir])
    assert col.metric_columns == ["d", "value", "wall_s", "ok"]  # d is constant: the report leaves it out
    summary = col.summary(metrics=["value", "wall_s", "ok"])
    figs = sweep_figures(summary, col.config_columns, col.key_columns, {"params.x": [1, 2, 4],
                                                                        "params.method": ["a", "b"]})
    assert [m for m, _ in figs] == ["value", "wall_s", "ok"]
    for metric, fig in figs:
        (ax,) = fig.axes
        assert ax.get_xlabel() == "x" and ax.get_ylabel().startswith(metric)
        assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 4  # method x component
        assert len(ax.collections) == 4  # a CI band per line
    assert figs[1][1].axes[0].get_ylabel() == "wall_s [s]"
    assert unit_of("cbw2_uvp") == "%" and unit_of("train_cpu_s") == "s" and unit_of("w2") is None


def test_quickstart_convergence_figure_labels_every_panel():
    from genstat.experiments.quickstart import NAMES, _plot

    rows = [{"method": m, "component": c, "n": n, "abs_error": 1 / n, "ci_half_width": 2 / n}
            for m in ("mc", "is") for c in NAMES for n in (1000, 10000)]
    figs = []

    class _Run:
        def save_figure(self, fig, name):
            figs.append(fig)

    _plot(pd.DataFrame(rows), _Run())
    (fig,) = figs
    for ax in fig.axes:
        assert ax.get_xlabel() == "n samples" and "CI half-width" in ax.get_ylabel()
        assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 4


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_in_headless_chromium(sweep_dir, run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
    from matplotlib import image

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600",
             f"--user-data-dir={tmp_path / 'profile'}"]
    for d, tables in ((sweep_dir, ("summary", "cells")), (run_dir, ("meta", "results"))):
        page = write_report(d, tmp_path / f"{d.name}.html")
        dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                             timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        for t in tables:  # the tables are in the DOM the browser built
            assert re.search(rf'<table[^>]*id="{t}"', dom.stdout), t
        assert dom.stdout.count("<img") >= 1
        shot = tmp_path / f"{d.name}.png"
        res = subprocess.run([browser, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
        img = image.imread(shot)[..., :3]
        assert img.shape[:2] == (1600, 1280)
        gray = img.mean(axis=2)
        assert gray.std() > 0.05, "the screenshot is blank"
        assert (gray < 0.5).mean() > 0.005, "no text or lines were drawn"
        assert np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 20
