"""Command line of studies: ``genstat sweep|collect|compare|report`` (parsers and exit codes).

Kept beside :mod:`genstat.cli`, which adds these subcommands to its parser and hands them here.
Exit codes as there: 0 ok, 1 a cell or command failed, 2 invalid input (nothing written),
130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["COMMANDS", "add_parsers", "dispatch"]

COMMANDS = ("sweep", "collect", "compare", "report")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parsers(sub) -> None:
    """Add the study subcommands to ``genstat``'s subparsers."""
    s = sub.add_parser("sweep", help="run an experiment over a grid of settings times seeds (resumable)",
                       description="One ordinary run per (grid cell, seed) under a sweep directory with a "
                                   "manifest (sweep.json). Re-running the same command resumes it.")
    s.add_argument("file")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values of a dotted key, read as a YAML list: params.eps=0.1,1,10 or params.dims=[2],[16]; "
                        "replaces the file's sweep.grid entry for that key")
    s.add_argument("--seeds", default=None, help="0-4, 0,1,5 or 0-2,7 (default: the file's sweep.seeds, else its seed)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the base config in every cell")
    s.add_argument("-j", "--jobs", type=int, default=1, help="cells run at once, each in a fresh process (default 1)")
    s.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="local processes, SLURM jobs through submitit, or submitit's local executor")
    s.add_argument("--launcher-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="submitit executor parameter, e.g. timeout_min=120, slurm_partition=gpu, gpus_per_node=1")
    s.add_argument("--out", default=None, help="the sweep directory (default: runs/sweeps/<name>)")
    s.add_argument("--device", default=None, help="cpu, cuda or cuda:N for every cell")
    s.add_argument("--keys", default="", help="numeric results columns that identify rows, for collect (d,epsilon)")
    s.add_argument("--retry-running", action="store_true",
                   help="also rerun cells claimed by a process on another host (e.g. a killed SLURM job)")
    s.add_argument("--dry-run", action="store_true", help="validate and list the cells; write nothing")

    c = sub.add_parser("collect", help="one tidy table over runs and a summary (mean, sd, stderr, CI) over seeds")
    c.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories, or folders holding them")
    c.add_argument("--keys", default="", help="numeric results columns that identify rows (d,epsilon)")
    c.add_argument("--metrics", default="", help="metrics to summarise (default: every numeric results column)")
    c.add_argument("--level", type=float, default=0.95, help="confidence level of the t-intervals (default 0.95)")
    c.add_argument("--out", default=None,
                   help="folder for collected.csv, summary.csv, summary.md (default: the first DIR)")
    c.add_argument("--all", dest="include_incomplete", action="store_true",
                   help="also take runs that are not completed")

    d = sub.add_parser("compare", help="config, meta and result differences of two runs")
    d.add_argument("run_a")
    d.add_argument("run_b")
    d.add_argument("--keys", default="", help="numeric results columns to match rows on")

    r = sub.add_parser("report", help="one self-contained HTML file for a run or a sweep")
    r.add_argument("dir", metavar="RUN_OR_SWEEP_DIR")
    r.add_argument("-o", "--output", default=None, help="the HTML file (default: DIR/report.html)")
    r.add_argument("--metrics", default="", help="sweep: metrics to summarise and plot (default: all)")
    r.add_argument("--level", type=float, default=0.95)


def _err(msg: str) -> None:
    print(f"genstat: {msg}", file=sys.stderr)


def _config_errors(what: str, errors: list[str]) -> int:
    _err(f"{what}: invalid configuration ({len(errors)} error(s)):")
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    return 2


def _sweep(args: argparse.Namespace) -> int:
    from genstat.experiments.config import ConfigError, parse_seeds
    from genstat.experiments.launchers import LauncherError
    from genstat.experiments.sweep import SweepError, parse_grid, plan_sweep, run_sweep

    errors: list[str] = []
    grid, seeds, options = {}, None, {}
    try:
        grid = parse_grid(args.grid)
    except ConfigError as exc:
        errors += exc.errors
    if args.seeds is not None:
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError as exc:
            errors.append(f"--seeds: {exc}")
    if args.jobs < 1:
        errors.append(f"-j/--jobs: must be >= 1, got {args.jobs}")
    for item in args.launcher_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            errors.append(f"--launcher-opt {item!r}: expected KEY=VALUE")
            continue
        import yaml

        options[key.strip()] = yaml.safe_load(value)
    try:
        plan = plan_sweep(args.file, grid=grid, seeds=seeds, overrides=args.overrides, device=args.device,
                          keys=_csv_list(args.keys))
    except ConfigError as exc:
        errors += exc.errors
    if errors:
        return _config_errors(args.file, errors)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / plan.name
    if args.dry_run:
        print(f"sweep {out}: {len(plan.cells)} cell(s) x seeds {plan.seeds}")
        for cid, ov in plan.cells:
            print(f"  {cid}: " + ", ".join(f"{k}={v!r}" for k, v in ov.items()))
        return 0
    try:
        entries = run_sweep(plan, out, jobs=args.jobs, launcher=args.launcher, launcher_options=options,
                            retry_running=args.retry_running, argv=["genstat", *sys.argv[1:]])
    except (SweepError, LauncherError) as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err(f"sweep interrupted; finished cells are kept, re-run the same command to resume ({out})")
        return 130
    from genstat.experiments.manifest import held_by_live_owner, this_process

    me = this_process()
    # entries another live sweep process claimed are its to finish, not failures of this one
    elsewhere = {k for k, e in entries.items()
                 if e.get("owner") != me and held_by_live_owner(e, retry_running=args.retry_running)}
    bad = {k: e["status"] for k, e in entries.items() if e["status"] != "completed" and k not in elsewhere}
    counts: dict[str, int] = {}
    for e in entries.values():
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    print(f"sweep directory: {out} (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")")
    if elsewhere:
        print(f"{len(elsewhere)} run(s) still with another sweep process: " + ", ".join(sorted(elsewhere)[:10])
              + "; re-run the command after it ends to check them")
    if bad:
        _err(f"{len(bad)} run(s) not completed: " + ", ".join(f"{k} ({s})" for k, s in list(bad.items())[:10])
             + "; re-run the command to retry them")
        return 1
    return 0


def _collect(args: argparse.Namespace) -> int:
    from genstat.experiments.collect import collect, summary_markdown
    from genstat.experiments.runner import atomic_write_text

    try:
        col = collect(args.dirs, keys=_csv_list(args.keys), include_incomplete=args.include_incomplete)
        metrics = _csv_list(args.metrics) or col.metric_columns
        summary = col.summary(metrics=metrics, level=args.level)
    except (ValueError, FileNotFoundError) as exc:
        _err(str(exc))
        return 2
    by = col.config_columns + col.key_columns
    md = summary_markdown(summary, by=by, level=args.level)
    out = Path(args.out) if args.out else Path(args.dirs[0])
    atomic_write_text(out / "collected.csv", col.table.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", md)
    print(md, end="")
    print(f"\n{len(col.runs)} run(s), {len(col.table)} row(s); keys: {', '.join(col.key_columns) or '-'}; "
          f"config columns: {', '.join(col.config_columns) or '-'}\nwrote {out}/collected.csv, summary.csv, summary.md")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from genstat.experiments.collect import compare_runs

    try:
        cmp = compare_runs(args.run_a, args.run_b, keys=_csv_list(args.keys))
    except ValueError as exc:
        _err(str(exc))
        return 2
    print(cmp.to_markdown(), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    from genstat.experiments.report import write_report

    try:
        path = write_report(args.dir, args.output, metrics=_csv_list(args.metrics) or None, level=args.level)
    except ValueError as exc:
        _err(str(exc))
        return 2
    print(f"report: {path}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Run a study subcommand parsed by :func:`add_parsers`."""
    return {"sweep": _sweep, "collect": _collect, "compare": _compare, "report": _report}[args.command](args)
