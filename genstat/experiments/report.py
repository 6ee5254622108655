"""``genstat report``: one self-contained HTML file for a run or a sweep directory.

A run's report holds its meta, versions, results.csv and the other tables, every figure (embedded as
base64 PNG), curves drawn from metrics.jsonl, the resolved config and the tail of its log. A sweep's
report holds the cells and their status, the summary over seeds (``genstat collect``), one figure per
metric against the swept parameter with confidence bands, and the base config. Nothing is loaded
from outside the file.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .manifest import MANIFEST, read_manifest

__all__ = ["write_report", "sweep_figures", "unit_of"]

MAX_ROWS = 500
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
     color:#1d1d1f;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{border:1px solid #d0d0d0;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f2f5} td:first-child,th:first-child{text-align:left}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px;overflow-x:auto;font-size:12px;max-height:480px}
figure{margin:12px 0} figcaption{font-size:13px;color:#555} img{max-width:100%;border:1px solid #eee}
.status{display:inline-block;padding:2px 8px;border-radius:4px;color:#fff;background:#888}
.completed{background:#2e7d32}.failed{background:#c62828}.interrupted,.running,.queued{background:#ef6c00}
.muted{color:#666;font-size:13px} details{margin:10px 0} summary{cursor:pointer;font-weight:600}
"""

#: units guessed from a column name's ending, for axis labels
_UNITS = (("_s", "s"), ("_seconds", "s"), ("_ms", "ms"), ("_pct", "%"), ("uvp", "%"), ("_percent", "%"))


def unit_of(name: str) -> str | None:
    """The unit a column name implies (``wall_s`` -> ``s``, ``cbw2_uvp`` -> ``%``), or None."""
    low = name.lower()
    for suffix, unit in _UNITS:
        if low.endswith(suffix):
            return unit
    return None


def _axis_label(name: str, unit: str | None = None) -> str:
    unit = unit or unit_of(name)
    return f"{name} [{unit}]" if unit else name


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _table(df: pd.DataFrame, table_id: str, *, max_rows: int = MAX_ROWS) -> str:
    note = ""
    if len(df) > max_rows:
        note = f'<p class="muted">first {max_rows} of {len(df)} rows</p>'
        df = df.head(max_rows)
    return df.to_html(index=False, border=0, na_rep="", table_id=table_id, classes="tbl",
                      float_format=lambda v: f"{v:.6g}") + note


def _kv_table(d: dict, table_id: str) -> str:
    return _table(pd.DataFrame({"key": list(d), "value": [json.dumps(v) if isinstance(v, (list, dict)) else str(v)
                                                          for v in d.values()]}), table_id)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(b64: str, caption: str) -> str:
    return (f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _details(title: str, inner: str) -> str:
    return f"<details><summary>{_esc(title)}</summary>{inner}</details>"


def _varying(table: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns with at least one value and more than one distinct value."""
    return [c for c in columns if table[c].notna().any() and table[c].nunique(dropna=True) > 1]


def _pre(text: str, pre_id: str) -> str:
    return f'<pre id="{pre_id}">{_esc(text)}</pre>'


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


# -- run -------------------------------------------------------------------------------------------------------

def _metrics_figure(path: Path):
    """Curves of metrics.jsonl: one panel per numeric field against ``step`` (or the record number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    text = _read_text(path) or ""
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            rows.append(rec)
    if not rows:
        return None
    df = pd.DataFrame(rows)
    x = "step" if "step" in df and pd.api.types.is_numeric_dtype(df["step"]) else None
    skip = {"step", "time", "timestamp", "t", "elapsed_s"}
    metrics = [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])][:8]
    groups = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])
              and df[c].map(lambda v: isinstance(v, str)).all()]
    if not metrics:
        return None
    ncol = min(3, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, m in zip(axes.ravel(), metrics):
        parts = list(df.groupby(groups, sort=False)) if groups else [("all records", df)]
        for name, g in parts[:10]:
            g = g[g[m].notna()]
            label = ", ".join(map(str, name)) if isinstance(name, tuple) else str(name)
            ax.plot(g[x] if x else np.arange(len(g)), g[m], ".-", ms=3, lw=1, label=label)
        ax.set_xlabel("step" if x else "record number (metrics.jsonl line)")
        ax.set_ylabel(_axis_label(m))
        ax.set_title(m)
        ax.legend(fontsize=7, title=", ".join(groups) or None, title_fontsize=7)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _run_report(d: Path) -> tuple[str, list[str]]:
    meta = json.loads((d / "meta.json").read_text())
    title = f"{meta.get('name', d.name)} ({meta.get('kind', '?')})"
    status = meta.get("status", "?")
    body = [f"<h1>{_esc(title)}</h1>",
            f'<p><span class="status {_esc(status)}">{_esc(status)}</span> <span class="muted">{_esc(d)}</span></p>']
    body.append("<h2>Meta</h2>")
    body.append(_kv_table({k: v for k, v in meta.items() if k != "versions"}, "meta"))
    body.append("<h2>Versions</h2>")
    body.append(_kv_table(meta.get("versions", {}), "versions"))
    results = d / "results.csv"
    body.append("<h2>Results (results.csv)</h2>")
    try:
        body.append(_table(pd.read_csv(results), "results"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        body.append('<p class="muted">no results.csv</p>')
    others = sorted(p for p in d.glob("*.csv") if p.name != "results.csv")
    for p in others:
        body.append(f"<h2>Table {_esc(p.name)}</h2>")
        try:
            body.append(_table(pd.read_csv(p), f"table-{p.stem}"))
        except pd.errors.EmptyDataError:
            body.append('<p class="muted">empty</p>')
    for p in sorted(d.glob("*.md")):
        body.append(f"<h2>{_esc(p.name)}</h2>" + _pre(_read_text(p) or "", f"md-{p.stem}"))
    figs = sorted((d / "figures").glob("*.png"))
    body.append("<h2>Figures</h2>")
    for p in figs:
        body.append(_figure(base64.b64encode(p.read_bytes()).decode(), f"figures/{p.name}"))
    fig = _metrics_figure(d / "metrics.jsonl")
    if fig is not None:
        body.append(_figure(_png(fig), "metrics.jsonl: each numeric field against the step"))
    if not figs and fig is None:
        body.append('<p class="muted">no figures</p>')
    body.append("<h2>Resolved config (config.yaml)</h2>" + _pre(_read_text(d / "config.yaml") or "", "config"))
    overrides = (_read_text(d / "overrides.txt") or "").strip()
    if overrides:
        body.append("<h2>Overrides</h2>" + _pre(overrides, "overrides"))
    log = (_read_text(d / "log.txt") or "").splitlines()
    body.append(f"<h2>Log (last {min(len(log), 80)} of {len(log)} lines)</h2>" + _pre("\n".join(log[-80:]), "log"))
    return title, body


# -- sweep -----------------------------------------------------------------------------------------------------

def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sweep_figures(summary: pd.DataFrame, config_cols: list[str], key_cols: list[str], grid: dict,
                  level: float = 0.95) -> list[tuple[str, Any]]:
    """One matplotlib figure per metric of a :func:`~genstat.experiments.collect.summarize` table: the
    mean and its CI band against the swept parameter (the first numeric grid key with several values;
    without a grid, the first key column), a line per combination of the other config and key columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [k for k in grid if k in config_cols and summary[k].nunique(dropna=False) > 1]
    # x: a numeric swept key, else any swept key, else (a sweep over seeds only) the first key column
    # that varies, as categories
    keys = [k for k in key_cols if summary[k].nunique(dropna=False) > 1]
    xkey = next((k for k in swept if _numeric(grid[k])), next(iter(swept + keys), None))
    out = []
    for metric, s in summary.groupby("metric", sort=False):
        fig, ax = plt.subplots(figsize=(7.2, 4.2))
        lines = [c for c in config_cols + key_cols if c != xkey and s[c].nunique(dropna=False) > 1]
        parts = list(s.groupby(lines, sort=False, dropna=False)) if lines else [((), s)]
        categorical = xkey is None or not _numeric(list(s[xkey].dropna()))
        cats = list(dict.fromkeys(s[xkey].astype(str))) if xkey is not None and categorical else []
        for name, g in parts[:12]:
            name = name if isinstance(name, tuple) else (name,)
            label = ", ".join(f"{c.removeprefix('params.')}={v}" for c, v in zip(lines, name)) or metric
            if xkey is None:
                xs = np.zeros(len(g))
            elif categorical:
                xs = np.array([cats.index(str(v)) for v in g[xkey]], dtype=float)
            else:
                xs = g[xkey].to_numpy(dtype=float)
            order = np.argsort(xs, kind="stable")
            xs, mean = xs[order], g["mean"].to_numpy()[order]
            lo, hi = g["ci_low"].to_numpy()[order], g["ci_high"].to_numpy()[order]
            (line,) = ax.plot(xs, mean, "o-", ms=4, label=label)
            if np.isfinite(lo).any():
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        if categorical and cats:
            ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats)) > 6 else 0)
        elif xkey is not None:
            xv = s[xkey].to_numpy(dtype=float)
            if (xv > 0).all() and xv.max() / xv.min() >= 20:
                ax.set_xscale("log")
        n = int(s["n"].max()) if len(s) else 0
        ax.set_xlabel(xkey.removeprefix("params.") if xkey else "(no swept parameter)")
        ax.set_ylabel(_axis_label(metric))
        ax.set_title(f"{metric}: mean, band = {level:.0%} t-interval over seeds (n ≤ {n})", fontsize=10)
        if len(parts) > 4:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        else:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append((metric, fig))
    return out


def _sweep_report(d: Path, *, metrics: list[str] | None, level: float) -> tuple[str, list[str]]:
    from .collect import collect, summary_wide

    m = read_manifest(d) or {}
    title = f"sweep {m.get('name', d.name)} ({m.get('kind', '?')})"
    cells = pd.DataFrame([{"entry": k, **{c: e.get(c) for c in ("cell", "seed", "status", "attempts", "run_dir",
                                                                   "error")}}
                          for k, e in m.get("cells", {}).items()])
    counts = cells["status"].value_counts().to_dict() if len(cells) else {}
    body = [f"<h1>{_esc(title)}</h1>",
            f'<p class="muted">{_esc(d)} &middot; file {_esc(m.get("file"))} &middot; '
            + ", ".join(f"{v} {_esc(k)}" for k, v in counts.items()) + "</p>",
            "<h2>Grid and seeds</h2>", _kv_table({**m.get("grid", {}), "seeds": m.get("seeds", [])}, "grid")]
    try:
        col = collect([d])
    except ValueError as exc:
        body.append(f'<p class="muted">no summary: {_esc(exc)}</p>')
        col = None
    if col is not None:
        chosen = metrics if metrics is not None else _varying(col.table, col.metric_columns)
        summary = col.summary(metrics=chosen, level=level)
        by = col.config_columns + col.key_columns
        body.append(f"<h2>Summary over seeds</h2><p class=\"muted\">mean ± half-width of the {level:.0%} "
                    f"t-interval over n seeds; metrics constant over every run are left out (all in the table "
                    f"below)</p>")
        body.append(_table(summary_wide(summary, by=by), "summary"))
        body.append("<h2>Figures</h2>")
        for metric, fig in sweep_figures(summary, col.config_columns, col.key_columns, m.get("grid", {}), level):
            body.append(_figure(_png(fig), f"{metric}: mean and {level:.0%} t-interval over seeds per cell"))
        full = col.summary(level=level)
        body.append(_details(f"Summary, long format: every metric ({len(full)} rows)", _table(full, "summary-long")))
        rel = col.table["run"].map(lambda p: str(Path(p).relative_to(d)) if Path(p).is_relative_to(d) else p)
        body.append(_details(f"All rows (genstat collect, {len(col.table)} rows)",
                             _table(col.table.assign(run=rel), "collected")))
    body.append("<h2>Cells</h2>")
    if len(cells):
        cells["run_dir"] = cells["run_dir"].map(
            lambda p: f'<a href="{_esc(p)}/">{_esc(p)}</a>' if isinstance(p, str) else "")
        body.append(cells.to_html(index=False, border=0, na_rep="", table_id="cells", escape=False,
                                  formatters={c: (lambda v: _esc(v) if not isinstance(v, float) or v == v else "")
                                              for c in cells.columns if c != "run_dir"}))
    import yaml

    body.append("<h2>Base config</h2>" + _pre(yaml.safe_dump(m.get("base", {}), sort_keys=False), "config"))
    body.append("<h2>Invocations</h2>" + _table(pd.DataFrame([{"time": i.get("time"), "argv": " ".join(i.get("argv", [])),
                                                               "launcher": i.get("launcher"), "jobs": i.get("jobs"),
                                                               "host": i.get("host")}
                                                              for i in m.get("invocations", [])]), "invocations"))
    return title, body


def write_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    metrics: list[str] | None = None,
    level: float = 0.95,
) -> Path:
    """Write the HTML report of a run or sweep directory and return its path.

    Parameters
    ----------
    path : path
        A run directory (has ``meta.json``) or a sweep directory (has ``sweep.json``).
    out : path, optional
        The HTML file (default ``<path>/report.html``).
    metrics : list of str, optional
        Sweep only: the metrics to summarise and plot (default: every numeric results column).
    level : float
        Sweep only: confidence level of the intervals over seeds.
    """
    d = Path(path)
    if (d / MANIFEST).is_file():
        title, body = _sweep_report(d, metrics=metrics, level=level)
    elif (d / "meta.json").is_file():
        title, body = _run_report(d)
    else:
        raise ValueError(f"{d} is neither a run directory (meta.json) nor a sweep directory ({MANIFEST})")
    target = Path(out) if out is not None else d / "report.html"
    from .runner import atomic_write_text

    atomic_write_text(target, _page(title, body))
    return target
