"""Command line: ``genstat run|validate|list``. Exit codes: 0 ok, 1 failed, 2 invalid config,
130 interrupted."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genstat", description="Run genstat YAML experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="validate and run an experiment file")
    r.add_argument("file")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set params.steps=100")
    r.add_argument("--out", default="runs", help="root of the run directories (default: runs)")
    r.add_argument("--device", choices=None, default=None, help="cpu, cuda or cuda:N")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--quiet", action="store_true", help="log to log.txt only")
    v = sub.add_parser("validate", help="check an experiment file without running it")
    v.add_argument("file")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("list", help="list the registered experiment kinds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from genstat.experiments import ConfigError, list_kinds, load_config, run_experiment

    if args.command == "list":
        for name, kind in list_kinds().items():
            print(f"{name:32s} {kind.help}")
        return 0
    try:
        cfg, params = load_config(
            args.file, args.overrides,
            seed=getattr(args, "seed", None), device=getattr(args, "device", None),
        )
    except ConfigError as exc:
        print(f"genstat: {args.file}: invalid configuration ({len(exc.errors)} error(s)):", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.file}: ok (kind {cfg.kind})")
        return 0
    try:
        path = run_experiment(cfg, params, out=args.out, overrides=args.overrides, quiet=args.quiet)
    except KeyboardInterrupt:
        print("genstat: interrupted; finished results were kept", file=sys.stderr)
        return 130
    print(f"run directory: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
