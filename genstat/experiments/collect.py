"""Tables across runs: ``genstat collect`` (one tidy table and a summary over seeds) and ``genstat compare``.

Which columns are what, in the tidy table of :func:`collect`:

- run columns: ``run`` (the run directory), ``cell``, ``seed``, ``status``;
- config columns: the resolved config flattened to dotted keys (``params.eps``; lists and mappings as
  JSON text), those that differ between the runs found, plus every swept key of a sweep (even with one
  value); ``seed`` and ``description`` are left out;
- results columns: every row of each run's ``results.csv`` as written (a name that clashes with a run
  column gets the prefix ``result_``).

The summary groups rows by the config columns and the **key columns**: the non-numeric results
columns (method, component, task, ...) plus the numeric ones declared as keys (``--keys d,epsilon``
or ``keys:`` in the ``sweep:`` block). Every other numeric (or boolean) results column is a metric;
seed columns (``seed``, ``seed_index``, ``result_seed``) are neither. Rows that share a run and a
group are averaged first, so ``n`` counts seeds (runs), not rows; then per group and metric: mean,
sd, stderr = sd/sqrt(n), and the Student-t confidence interval mean ± t_{n-1} stderr.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from .runner import markdown_table
from .manifest import MANIFEST, read_manifest
from .sweep import cell_id

__all__ = ["RunInfo", "Collection", "find_runs", "collect", "summarize", "summary_wide", "summary_markdown", "compare_runs",
           "Comparison"]

RUN_COLUMNS = ("run", "cell", "seed", "status")
_SEED_COLUMN = re.compile(r"(result_)?seed(_index)?")


@dataclass(frozen=True)
class RunInfo:
    """One run directory found by :func:`find_runs`."""

    dir: Path
    config: dict
    meta: dict
    cell: str | None = None
    sweep: Path | None = None
    grid_keys: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_info(directory: Path, **extra: Any) -> RunInfo:
    try:
        config = yaml.safe_load((directory / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    return RunInfo(directory, config, _read_json(directory / "meta.json"), **extra)


def _sweep_runs(sweep_dir: Path) -> list[RunInfo]:
    m = read_manifest(sweep_dir) or {}
    grid = tuple(m.get("grid", {}))
    keys = tuple(m.get("keys", []))
    values = {}
    for k, vs in m.get("grid", {}).items():
        try:  # sorted where the values compare (numbers, strings, lists of numbers), else as given
            vs = sorted(vs)
        except TypeError:
            pass
        values[k] = [json.dumps(v, sort_keys=True) for v in vs]

    def order(entry: dict) -> tuple:  # by grid value, then seed (not the order entries were added)
        ov = entry.get("overrides", {})
        pos = [values[k].index(json.dumps(ov[k], sort_keys=True)) if k in ov and json.dumps(ov[k], sort_keys=True)
               in values[k] else len(values[k]) for k in values]
        return (*pos, entry.get("seed", 0))

    out = []
    for entry in sorted(m.get("cells", {}).values(), key=order):
        if entry.get("run_dir"):
            out.append(_run_info(sweep_dir / entry["run_dir"], cell=entry["cell"], sweep=sweep_dir,
                                 grid_keys=grid, keys=keys))
    return out


def find_runs(paths: Iterable[str | Path], *, include_incomplete: bool = False) -> list[RunInfo]:
    """Run directories under ``paths``: a run directory itself, a sweep directory (its manifest's latest
    attempt of each cell), or any folder searched recursively for both. Only completed runs unless
    ``include_incomplete``."""
    runs: dict[Path, RunInfo] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such directory")
        found: list[RunInfo] = []
        if (p / MANIFEST).is_file():
            found = _sweep_runs(p)
        elif (p / "meta.json").is_file():
            found = [_run_info(p)]
        else:
            sweeps = sorted(m.parent for m in p.rglob(MANIFEST))
            for s in sweeps:
                found += _sweep_runs(s)
            for meta in sorted(p.rglob("meta.json")):
                if not any(s in meta.parents for s in sweeps):
                    found.append(_run_info(meta.parent))
        for r in found:
            runs.setdefault(r.dir.resolve(), r)
    out = list(runs.values())
    if not include_incomplete:
        out = [r for r in out if r.meta.get("status") == "completed"]
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict) and (d or not prefix):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (list, dict)):
        out[prefix[:-1]] = json.dumps(d, sort_keys=True)
    else:
        out[prefix[:-1]] = d
    return out


@dataclass
class Collection:
    """The tidy table of :func:`collect` and the roles of its columns."""

    table: pd.DataFrame
    config_columns: list[str]
    key_columns: list[str]
    metric_columns: list[str]
    runs: list[RunInfo] = field(default_factory=list)

    def summary(self, *, metrics: list[str] | None = None, level: float = 0.95) -> pd.DataFrame:
        return summarize(self.table, by=self.config_columns + self.key_columns,
                         metrics=self.metric_columns if metrics is None else metrics, level=level)


def collect(
    paths: Iterable[str | Path],
    *,
    keys: Iterable[str] = (),
    include_incomplete: bool = False,
) -> Collection:
    """One tidy table over every run found under ``paths`` (see the module docstring for the columns).

    Parameters
    ----------
    paths : paths
        Run directories, sweep directories, or folders holding them.
    keys : column names
        Numeric results columns that identify a row rather than measure something (``d``, ``epsilon``);
        a sweep's declared ``keys`` are added.
    include_incomplete : bool
        Also take runs that are not ``completed`` (their finished rows).

    Raises
    ------
    ValueError
        No run was found, or a declared key is not a results column.
    """
    runs = find_runs(paths, include_incomplete=include_incomplete)
    if not runs:
        raise ValueError(f"no {'' if include_incomplete else 'completed '}runs found under "
                         f"{', '.join(map(str, paths))}")
    flat = []
    for r in runs:
        f = _flatten(r.config)
        f.pop("seed", None)
        f.pop("description", None)
        flat.append(f)
    all_keys = list(dict.fromkeys(k for f in flat for k in f))
    swept = {k for r in runs for k in r.grid_keys}
    config_cols = [k for k in all_keys
                   if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1
                   or any(k == g or k.startswith(g + ".") for g in swept)]
    frames = []
    for r, f in zip(runs, flat):
        path = r.dir / "results.csv"
        try:
            res = pd.read_csv(path)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            continue
        res = res.rename(columns={c: f"result_{c}" for c in res.columns if c in RUN_COLUMNS or c in config_cols})
        cell = r.cell if r.cell is not None else cell_id({k: f.get(k) for k in config_cols})
        head = {"run": str(r.dir), "cell": cell, "seed": r.config.get("seed", r.meta.get("seed")),
                "status": r.meta.get("status")}
        head.update({k: f.get(k) for k in config_cols})
        frames.append(pd.concat([pd.DataFrame([head] * len(res)), res], axis=1))
    if not frames:
        raise ValueError("the runs found have no results.csv")
    table = pd.concat(frames, ignore_index=True)
    result_cols = [c for c in table.columns if c not in RUN_COLUMNS and c not in config_cols]
    declared = list(dict.fromkeys([*keys, *(k for r in runs for k in r.keys)]))
    unknown = [k for k in declared if k not in result_cols]
    if unknown:
        raise ValueError(f"keys {unknown} are not results.csv columns; columns: {result_cols}")
    key_cols, metric_cols = [], []
    for c in result_cols:
        if _SEED_COLUMN.fullmatch(c):
            continue
        numeric = pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])
        (metric_cols if numeric and c not in declared else key_cols).append(c)
    return Collection(table, config_cols, key_cols, metric_cols, runs)


def summarize(
    table: pd.DataFrame,
    *,
    by: list[str],
    metrics: list[str],
    level: float = 0.95,
) -> pd.DataFrame:
    """Mean, sd, stderr and a Student-t CI over seeds, per group ``by`` and metric (long format).

    Rows of the same ``run`` and group are averaged first, so ``n`` is the number of runs (seeds)
    with a value. With ``n = 1`` the sd, stderr and CI are NaN.

    Returns
    -------
    DataFrame
        Columns ``by + [metric, n, mean, sd, stderr, ci_low, ci_high]``.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise ValueError(f"metrics {missing} are not columns of the table; columns: {list(table.columns)}")
    cols = ["run", *by]
    data = table[cols + metrics].copy()
    for m in metrics:
        data[m] = pd.to_numeric(data[m].astype("float64") if pd.api.types.is_bool_dtype(data[m]) else data[m],
                                errors="coerce")
    per_run = data.groupby(cols, sort=False, dropna=False)[metrics].mean().reset_index()
    rows = []
    for group, g in per_run.groupby(by, sort=False, dropna=False) if by else [((), per_run)]:
        group = group if isinstance(group, tuple) else (group,)
        for m in metrics:
            x = g[m].dropna().to_numpy(dtype="float64")
            n = len(x)
            mean = float(x.mean()) if n else math.nan
            sd = float(x.std(ddof=1)) if n > 1 else math.nan
            se = sd / math.sqrt(n) if n > 1 else math.nan
            half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se if n > 1 else math.nan
            rows.append({**dict(zip(by, group)), "metric": m, "n": n, "mean": mean, "sd": sd, "stderr": se,
                         "ci_low": mean - half, "ci_high": mean + half})
    return pd.DataFrame(rows, columns=[*by, "metric", "n", "mean", "sd", "stderr", "ci_low", "ci_high"])


def summary_wide(summary: pd.DataFrame, *, by: list[str], floatfmt: str = ".4g") -> pd.DataFrame:
    """The long summary as one row per group: ``n`` and ``mean ± CI half-width`` (text) per metric."""
    wide = []
    groups = summary.groupby(by, sort=False, dropna=False) if by else [((), summary)]
    for group, g in groups:
        group = group if isinstance(group, tuple) else (group,)
        row: dict = dict(zip(by, group))
        row["n"] = int(g["n"].max())
        for _, s in g.iterrows():
            half = s["ci_high"] - s["mean"]
            row[s["metric"]] = ("" if pd.isna(s["mean"]) else format(s["mean"], floatfmt) if not np.isfinite(half)
                                else f"{s['mean']:{floatfmt}} ± {half:{floatfmt}}")
        wide.append(row)
    return pd.DataFrame(wide)


def summary_markdown(summary: pd.DataFrame, *, by: list[str], level: float = 0.95, floatfmt: str = ".4g") -> str:
    """:func:`summary_wide` as a markdown table, with a line saying what the ± is."""
    if summary.empty:
        return "(no rows)\n"
    wide = summary_wide(summary, by=by, floatfmt=floatfmt)
    wide = wide.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    wide.columns = [str(c).replace("|", "\\|") for c in wide.columns]
    note = f"mean ± half-width of the {level:.0%} t-interval over n seeds\n\n"
    return note + markdown_table(wide, floatfmt)


@dataclass
class Comparison:
    """Differences between two runs: config, meta and results (long format)."""

    a: Path
    b: Path
    config: pd.DataFrame
    meta: pd.DataFrame
    results: pd.DataFrame

    def to_markdown(self, floatfmt: str = ".6g") -> str:
        out = [f"A = {self.a}\nB = {self.b}\n"]
        for title, df in (("config", self.config), ("meta", self.meta), ("results", self.results)):
            out.append(f"## {title}\n")
            out.append(markdown_table(df, floatfmt) if not df.empty else "(no differences)\n")
        return "\n".join(out)


def _meta_flat(meta: dict) -> dict:
    flat = _flatten({k: v for k, v in meta.items() if k != "argv"})
    flat["argv"] = " ".join(map(str, meta.get("argv", [])))
    return flat


def _diff_dicts(a: dict, b: dict, skip: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = []
    for k in dict.fromkeys([*a, *b]):
        if k in skip:
            continue
        va, vb = a.get(k, "(absent)"), b.get(k, "(absent)")
        if json.dumps(va, default=str) != json.dumps(vb, default=str):
            rows.append({"key": k, "A": va, "B": vb})
    return pd.DataFrame(rows, columns=["key", "A", "B"])


def compare_runs(a: str | Path, b: str | Path, *, keys: Iterable[str] = ()) -> Comparison:
    """Config, meta and results of two run directories side by side.

    Results rows are matched on the non-numeric columns common to both tables plus ``keys`` (and, for
    repeated keys, the order of appearance); every common numeric column is compared: A, B, B - A and
    B / A, one row per (row, column) in long format. ``ValueError`` when a path is not a run directory.
    """
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not (p / "meta.json").is_file():
            raise ValueError(f"{p} is not a run directory (no meta.json)")
    ra, rb = _run_info(a), _run_info(b)
    config = _diff_dicts(_flatten(ra.config), _flatten(rb.config))
    meta = _diff_dicts(_meta_flat(ra.meta), _meta_flat(rb.meta), skip=("start_time", "end_time", "heartbeat", "pid"))
    frames = []
    for p in (a, b):
        try:
            frames.append(pd.read_csv(p / "results.csv"))
        except (FileNotFoundError, pd.errors.EmptyDataError):
            frames.append(pd.DataFrame())
    da, db = frames
    keys = list(keys)
    common = [c for c in da.columns if c in db.columns]
    numeric = [c for c in common if c not in keys and pd.api.types.is_numeric_dtype(da[c])
               and pd.api.types.is_numeric_dtype(db[c])]
    on = [c for c in common if c not in numeric]
    rows = []
    if common:
        da = da.assign(_row=da.groupby(on, sort=False, dropna=False).cumcount() if on else range(len(da)))
        db = db.assign(_row=db.groupby(on, sort=False, dropna=False).cumcount() if on else range(len(db)))
        merged = da[on + ["_row"] + numeric].merge(db[on + ["_row"] + numeric], on=on + ["_row"], how="outer",
                                                    suffixes=(" A", " B"), sort=False)
        for _, r in merged.iterrows():
            for c in numeric:
                va, vb = r[f"{c} A"], r[f"{c} B"]
                rows.append({**{k: r[k] for k in on}, "column": c, "A": va, "B": vb, "B - A": vb - va,
                             "B / A": vb / va if va not in (0, 0.0) and not pd.isna(va) else math.nan})
    results = pd.DataFrame(rows, columns=[*on, "column", "A", "B", "B - A", "B / A"])
    return Comparison(a, b, config, meta, results)
