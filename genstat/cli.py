"""Command line: ``genstat run|validate|list`` (and ``sweep|collect|compare|report``, in cli_study).
Exit codes: 0 ok, 1 failed, 2 invalid config, 130 interrupted."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

#: configuration errors printed before "... and N more" (all are kept in ConfigError.errors)
MAX_ERRORS_SHOWN = 50


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
    v.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    v.add_argument("--seed", type=int, default=None)
    v.add_argument("--print", dest="print_config", action="store_true",
                   help="print the resolved configuration (defaults filled in) as YAML")
    sub.add_parser("list", help="list the registered experiment kinds")
    from genstat.cli_study import add_parsers

    add_parsers(sub)  # sweep, collect, compare, report
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from genstat.cli_study import COMMANDS, dispatch

    if args.command in COMMANDS:
        return dispatch(args)
    from genstat.experiments import ConfigError, list_kinds, load_config
    from genstat.experiments.launch import env_rank

    loud = env_rank() == 0  # under torchrun only rank 0 prints
    if args.command == "list":
        if loud:
            print(f"{'kind':32s} {'shards':6s} description")
            for name, kind in list_kinds().items():
                print(f"{name:32s} {'yes' if kind.shards else 'no':6s} {kind.help}")
        return 0
    try:
        cfg, params = load_config(
            args.file, args.overrides,
            seed=getattr(args, "seed", None), device=getattr(args, "device", None),
        )
    except ConfigError as exc:
        if loud:
            print(f"genstat: {args.file}: invalid configuration ({len(exc.errors)} error(s)):", file=sys.stderr)
            for e in exc.errors[:MAX_ERRORS_SHOWN]:
                print(f"  {e}", file=sys.stderr)
            if len(exc.errors) > MAX_ERRORS_SHOWN:
                print(f"  ... and {len(exc.errors) - MAX_ERRORS_SHOWN} more", file=sys.stderr)
        return 2
    if args.command == "validate":
        if loud and args.print_config:
            import yaml

            from genstat.experiments.config import resolved_config

            print(yaml.safe_dump(resolved_config(cfg, params), sort_keys=False), end="")
        elif loud:
            print(f"{args.file}: ok (kind {cfg.kind})")
        return 0
    return _run(args, cfg, params, loud)


def _run(args, cfg, params, loud: bool) -> int:
    """``genstat run`` after validation: one process, or one rank of a torchrun job."""
    from genstat.experiments import get_kind, run_experiment
    from genstat.experiments.launch import session
    from genstat.experiments.runner import ChecksFailed, RunDirectoryError

    def say(msg: str) -> None:
        if loud:
            print(f"genstat: {msg}", file=sys.stderr)

    try:
        ctx = session(cfg.device)
        sess = ctx.__enter__()
    except (ValueError, RuntimeError) as exc:
        say(f"cannot start the torchrun process group: {' '.join(str(exc).split())}")
        return 2
    code, path, agree = 0, None, True
    try:
        try:
            path = run_experiment(cfg, params, out=args.out, overrides=args.overrides, quiet=args.quiet,
                                  session=sess)
        except RunDirectoryError as exc:
            say(" ".join(str(exc).split()))
            code = 2
        except KeyboardInterrupt:
            say("interrupted; finished results were kept")
            code, agree = 130, False
        except ChecksFailed as exc:
            say(f"run failed: {' '.join(str(exc).split())}")
            code = 1
        except Exception as exc:  # the traceback is in the run's log.txt
            say(f"run failed: {type(exc).__name__}: {' '.join(str(exc).split())[:500]} (traceback in log.txt)")
            code = 1
            # Ranks of a sharded kind may be blocked in a collective of the engine waiting for this
            # one: leave without waiting for them (their collective then fails, or torchrun stops them).
            agree = not (sess.distributed and get_kind(cfg.kind).shards)
        if agree:
            code = sess.agree(code)
        if code == 0 and loud:
            print(f"run directory: {path}")
        return code
    finally:
        ctx.__exit__(None, None, None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
