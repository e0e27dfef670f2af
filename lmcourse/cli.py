"""The ``lmcourse`` command: run notebooks and the course headless, inspect the environment and data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from lmcourse.errors import LmcourseError


def _parse_value(text: str):
    """``-p name value`` values are YAML scalars: 3 → int, 0.1 → float, true → bool, else a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _print_table(rows: list[dict], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def cmd_env(args: argparse.Namespace) -> int:
    import os

    from lmcourse.data import DATA_DIR_ENV, availability
    from lmcourse.profiles import resolve_profile_name
    from lmcourse.runtime import hardware_info, library_versions

    print("lmcourse environment")
    for k, v in library_versions().items():
        print(f"  {k:14s} {v}")
    for k, v in hardware_info().items():
        print(f"  {k:14s} {v}")
    print(f"  {'profile':14s} {resolve_profile_name(None)} (from ${'LMCOURSE_PROFILE'} or the default)")
    print(f"  {DATA_DIR_ENV:14s} {os.environ.get(DATA_DIR_ENV, '(not set)')}")
    sources: dict[str, int] = {}
    for row in availability():
        sources[row["source"]] = sources.get(row["source"], 0) + 1
    print("  data sources   " + ", ".join(f"{k}: {v} splits" for k, v in sorted(sources.items())))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from lmcourse.data import availability

    rows = availability()
    if args.missing:
        rows = [r for r in rows if r["source"] == "unavailable"]
    _print_table(rows, ["dataset", "name", "split", "rows", "source", "location"])
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lmcourse.runner import run_notebook

    params = {name: _parse_value(value) for name, value in args.parameter}
    result = run_notebook(args.notebook, params, profile=args.profile, runs_dir=args.runs_dir,
                          run_id=args.run_id, progress=not args.quiet)
    print(f"{result.status}: {result.output} ({result.wall_time_s:.1f}s)")
    print(f"metrics: {result.run_dir / 'metrics.json'}")
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    from lmcourse.runner import list_notebooks, new_run_id, run_notebook

    notebooks = list_notebooks(args.notebooks)
    if args.only:
        notebooks = [nb for nb in notebooks if any(p in nb.name for p in args.only)]
    if not notebooks:
        raise LmcourseError(f"no notebooks NN_*.ipynb found in {args.notebooks or 'notebooks/'}")
    run_id = args.run_id or new_run_id()
    rows = []
    for nb in notebooks:
        print(f"== {nb.name} ({args.profile or 'default'} profile)", flush=True)
        r = run_notebook(nb, profile=args.profile, runs_dir=args.runs_dir, run_id=run_id, progress=not args.quiet)
        rows.append({"notebook": nb.name, "status": r.status, "seconds": f"{r.wall_time_s:.1f}",
                     "output": str(r.output)})
        print(f"   {r.status} in {r.wall_time_s:.1f}s -> {r.output}", flush=True)
        if not r.ok:
            print(f"   error: {r.error}", file=sys.stderr)
            if args.stop_on_error:
                break
    print()
    _print_table(rows, ["notebook", "status", "seconds", "output"])
    failed = [r for r in rows if r["status"] != "completed"]
    return 1 if failed or len(rows) < len(notebooks) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmcourse", description="Large language models from theory to practice")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", help="print library versions, device, threads and data sources")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("data", help="show which GLUE tasks/splits and corpora are available from which source")
    p.add_argument("--missing", action="store_true", help="only list what is unavailable")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("run", help="execute one notebook with papermill into runs/<notebook>/<run-id>/")
    p.add_argument("notebook", help="path, file name or number prefix (e.g. 00)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a papermill parameter (repeatable); values parsed as YAML scalars")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: $LMCOURSE_PROFILE or cpu)")
    p.add_argument("--runs-dir", default=None, help="where run folders go (default: ./runs)")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: timestamp + random)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("course", help="run all notebooks in order (headless)")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: $LMCOURSE_PROFILE or cpu)")
    p.add_argument("--notebooks", type=Path, default=None, help="folder of notebooks (default: the repo's)")
    p.add_argument("--only", nargs="*", default=None, help="substrings of notebook names to run")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--run-id", default=None)
    p.add_argument("--stop-on-error", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_course)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Other modules (e.g. the benchmark suite) add their subcommands here: register(subparsers) -> None.
_EXTRA_COMMANDS: list = []


def _load_extra_commands() -> None:
    import importlib

    for module in ("lmcourse.bench", "lmcourse.launch"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        register = getattr(mod, "register_cli", None)
        if register is not None and register not in _EXTRA_COMMANDS:
            _EXTRA_COMMANDS.append(register)


def main(argv: Sequence[str] | None = None) -> int:
    _load_extra_commands()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LmcourseError as exc:
        print(f"lmcourse: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
