"""The ``lmcourse`` command: run notebooks, the course and benchmarks headless, inspect the environment and data,
classify text with an exported ONNX model."""

from __future__ import annotations

import argparse
import json
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


def _number(kind: type, low: float | None = None, *, above: bool = False, high: float | None = None,
            below: bool = False):
    """An argparse ``type`` that parses ``kind`` and checks its range where the argument enters: a value out of
    range is one argparse error (usage, the argument's name and what it must be; exit code 2) before anything
    runs or is written."""
    parts = []
    if low is not None:
        parts.append(f"> {low:g}" if above else f">= {low:g}")
    if high is not None:
        parts.append(f"< {high:g}" if below else f"<= {high:g}")
    what = ("an integer" if kind is int else "a number") + (" " + " and ".join(parts) if parts else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (low is not None and (value <= low if above else value < low)) or (
                high is not None and (value >= high if below else value > high)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {what}")
        return value

    parse.__name__ = "integer" if kind is int else "number"  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1)
NONNEGATIVE_INT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, above=True)
SEED = _number(int, 0, high=2**32 - 1)  # numpy's and torch's seed range
PROBABILITY = _number(float, 0, high=1, below=True)  # a dropout rate


class _Parser(argparse.ArgumentParser):
    """argparse with one line for a user's mistake (no usage block): what was wrong and where the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
    from lmcourse.paths import default_runs_dir
    from lmcourse.profiles import resolve_profile_name
    from lmcourse.runner import list_notebooks, new_run_id, run_notebook

    notebooks = list_notebooks(args.notebooks)
    if args.only:
        notebooks = [nb for nb in notebooks if any(p in nb.name for p in args.only)]
    if not notebooks:
        raise LmcourseError(f"no notebooks NN_*.ipynb found in {args.notebooks or 'notebooks/'}")
    run_id = args.run_id or new_run_id()
    rows = []
    width = max(len(nb.name) for nb in notebooks)
    print(f"{len(notebooks)} notebooks, {resolve_profile_name(args.profile)} profile, into "
          f"{Path(args.runs_dir or default_runs_dir()) / '<notebook>' / run_id}", flush=True)
    for nb in notebooks:  # one line a notebook: its name when it starts, its status when it ends
        print(f"{nb.name.ljust(width)}  ", end="" if not args.progress else "\n", flush=True)
        r = run_notebook(nb, profile=args.profile, runs_dir=args.runs_dir, run_id=run_id, progress=args.progress)
        rows.append({"notebook": nb.name, "status": r.status, "seconds": f"{r.wall_time_s:.1f}",
                     "output": str(r.output)})
        print(f"{r.status} in {r.wall_time_s:.1f}s" + ("" if r.ok else f": {(r.error or '').splitlines()[0]}"),
              flush=True)
        if not r.ok and args.stop_on_error:
            break
    print()
    _print_table(rows, ["notebook", "status", "seconds", "output"])
    failed = [r for r in rows if r["status"] != "completed"]
    return 1 if failed or len(rows) < len(notebooks) else 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    """Every notebook at smoke sizes on the CUDA device, and a short report; stops at once without CUDA."""
    import torch

    from lmcourse.errors import ArgumentError
    from lmcourse.runner import GPU_CHECK_BUDGET_S, gpu_check, list_notebooks

    if not str(args.device).startswith("cuda"):
        raise ArgumentError(f"--device {args.device!r}: the CUDA check runs on 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        build = (f"a CPU-only build: on a GPU machine reinstall torch=={torch.__version__.split('+')[0]} from PyPI, "
                 "whose Linux wheel is the CUDA build" if torch.version.cuda is None
                 else f"built for CUDA {torch.version.cuda}, sees no GPU or driver")
        raise LmcourseError(f"no CUDA device here (torch {torch.__version__}: {build}); the CUDA check needs one. "
                            "On this machine `python3 tasks.py course` runs the smoke profile on the CPU")
    notebooks = list_notebooks(args.notebooks)
    if args.only:
        notebooks = [nb for nb in notebooks if any(p in nb.name for p in args.only)]
    if not notebooks:
        raise LmcourseError(f"no notebooks NN_*.ipynb found in {args.notebooks or 'notebooks/'}")
    index = torch.device(args.device).index or 0
    print(f"gpu-check: {torch.cuda.get_device_name(index)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"bf16 {'supported' if torch.cuda.is_bf16_supported() else 'not supported'}; {len(notebooks)} notebooks, "
          "smoke profile", flush=True)
    rows = gpu_check(notebooks, args.device, runs_dir=args.runs_dir, run_id=args.run_id, progress=False)
    return _gpu_check_report(rows, GPU_CHECK_BUDGET_S)


def _gpu_check_report(rows: list[dict], budget_s: float) -> int:
    """The table of :func:`lmcourse.runner.gpu_check`'s rows, the total against the budget; 1 if any failed."""
    table = [{**r, "seconds": f"{r['seconds']:.1f}", "result": "pass" if r["status"] == "completed" else "FAIL"}
             for r in rows]
    _print_table(table, ["notebook", "result", "seconds", "device", "dtype", "peak memory MiB", "error"])
    total = sum(r["seconds"] for r in rows)
    failed = [r["notebook"] for r in rows if r["status"] != "completed"]
    print(f"total {total:.0f} s (budget {budget_s:.0f} s{', over it' if total > budget_s else ''}); "
          f"{len(rows) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    if rows:
        print(f"runs: {Path(rows[0]['run_dir']).parent}")
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lmcourse.bench import (
        compare_with_shipped,
        comparison_summary,
        load_results,
        load_shipped,
        load_spec,
        make_executor,
        run_spec,
        ship_results,
    )
    from lmcourse.errors import ArgumentError

    if args.allow_incomplete and not args.ship:
        raise ArgumentError("--allow-incomplete only applies to --ship")
    if args.keep_shipped and not args.ship:
        raise ArgumentError("--keep-shipped only applies to --ship")
    if args.ship and (args.only or args.dry_run):
        raise ArgumentError("--ship ships the whole finished sweep and runs nothing: drop --only/--dry-run")
    spec = load_spec(args.spec)
    if not args.ship:  # every run's notebook parameters checked before any of them runs
        from lmcourse.runner import check_parameters

        for planned in [*spec.prepare, *spec.runs]:
            check_parameters(f"{spec.path.name}: {Path(planned.notebook).name}", planned.parameters)
    if args.ship:
        folder = ship_results(spec, runs_dir=args.runs_dir, shipped_dir=args.shipped_dir,
                              allow_incomplete=args.allow_incomplete, keep_shipped=args.keep_shipped)
        shipped = load_shipped(spec.name, folder.parent)
        print(f"shipped {shipped.describe()}")
        print("\n".join(f"  {folder / name}" for name in ("results.csv", "manifest.yaml", "leaderboard.md")))
        return 0
    executor = make_executor(args.backend, args.address, args.num_cpus)
    result = run_spec(spec, runs_dir=args.runs_dir, only=args.only, dry_run=args.dry_run, progress=not args.quiet,
                      executor=executor, force_prepare=args.force_prepare, shipped_dir=args.shipped_dir)
    if args.dry_run:
        print(f"{spec.name}: {len(result.planned)} runs ({len(result.skipped)} already completed)")
        if result.prepare:
            print(f"prepare ({len(result.prepare_skipped)} of {len(result.prepare)} already made):")
            print("\n".join(result.prepare_lines()))
        for run in result.planned:
            state = "done" if run.run_id in result.skipped else "todo"
            print(f"  [{state}] {run.run_id}  {Path(run.notebook).name}  {json.dumps(run.parameters, default=str)}")
        return 0
    print(f"{spec.name}: {len(result.completed)} ran, {len(result.skipped)} skipped (already completed), "
          f"{len(result.failed)} failed")
    if result.results_file and result.leaderboard_file:
        print(f"results: {result.results_file}\nleaderboard: {result.leaderboard_file}")
        print(result.leaderboard_file.read_text(encoding="utf-8"))
        shipped = load_shipped(spec.name, args.shipped_dir)
        if shipped is not None:
            print(comparison_summary(compare_with_shipped(load_results(result.results_file), shipped), shipped))
    return 0 if result.ok else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from lmcourse.errors import ArgumentError
    from lmcourse.paths import default_runs_dir
    from lmcourse.runner import list_runs
    from lmcourse.tensorboard_logs import event_folders

    root = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    if args.markdown and not args.profiles:
        raise ArgumentError("--markdown only applies to --profiles")
    if args.profiles:
        return _print_profile_runs(root, args.shipped_dir, markdown=args.markdown)
    rows = list_runs(root)
    if not rows:
        print(f"no runs under {root}: `lmcourse run <notebook>`, `lmcourse course` or `lmcourse bench <spec>` "
              "make them")
    else:
        import pandas as pd

        table = pd.DataFrame(rows)
        table["value"] = table["value"].map(lambda v: f"{v:.4g}" if isinstance(v, int | float) else "")
        table["wall time s"] = table["wall time s"].map(lambda v: f"{v:.0f}" if isinstance(v, int | float) else "")
        table["started"] = table["started"].map(lambda v: str(v)[:19].replace("T", " ") if v else "")
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
            print(table.to_string(index=False))
    if event_folders(root) if root.is_dir() else []:
        print(f"\nTensorBoard: tensorboard --logdir {root}")
    return 0


PROFILE_RUNS_HEADER = "last complete run of each notebook (`lmcourse runs --profiles --markdown`)"


def _print_profile_runs(root: Path, shipped_dir: str | None, *, markdown: bool) -> int:
    """For each notebook and profile its last complete run (date, commit, machine, wall time, where) or "never
    run". ``markdown``: the README's column, from the shipped results only (runs/ is this machine's)."""
    from lmcourse.run_history import complete_runs, describe_run, last_complete_runs, profile_run_cells

    last = last_complete_runs(complete_runs(root, shipped_dir, local=not markdown))
    if markdown:
        print(f"| profile | {PROFILE_RUNS_HEADER} |\n|---|---|")
        for profile, cell in profile_run_cells(last).items():
            print(f"| `{profile}` | {cell} |")
        return 0
    print(f"complete runs under {root} and in the shipped results (data/results/), the last of each:")
    _print_table([{"notebook": r["notebook"], "profile": r["profile"], "runs": r["runs"],
                   "last complete run": describe_run(r["run"])} for r in last],
                 ["notebook", "profile", "runs", "last complete run"])
    return 0


def cmd_exercises(args: argparse.Namespace) -> int:
    from lmcourse import exercises

    if args.id is None:
        exercises.list_exercises(args.chapter)
        return 0
    print(exercises.statement(args.id))
    if args.hint:
        exercises.hint(args.id)
    if args.solution:
        exercises.solution(args.id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmcourse", description="Large language models from theory to practice")
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
    p.add_argument("--progress", action="store_true", help="papermill's bar over each notebook's cells")
    p.add_argument("-q", "--quiet", action="store_true", help="(the default: one line a notebook, then the table)")
    p.set_defaults(func=cmd_course)

    p = sub.add_parser("gpu-check", help="every notebook at smoke sizes on the CUDA device, with a short report "
                                         "(device, dtype, peak memory, time, pass/fail); refuses without CUDA")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N")
    p.add_argument("--notebooks", type=Path, default=None, help="folder of notebooks (default: the repo's)")
    p.add_argument("--only", nargs="*", default=None, help="substrings of notebook names to run")
    p.add_argument("--runs-dir", default=None, help="runs go to <runs-dir>/gpu-check/<run-id>/ (default: ./runs)")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_gpu_check)

    p = sub.add_parser("bench", help="run a benchmark spec (notebook × model × task × seed × profile)")
    p.add_argument("spec", help="a spec YAML file or a shipped spec name (smoke, cpu, gpu)")
    p.add_argument("--only", default=None, help="only runs whose id matches this glob or substring")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) without running")
    p.add_argument("--runs-dir", default=None,
                   help="where runs/<bench>/ goes (default: $LMCOURSE_RUNS_DIR, the checkout's runs/, else ./runs)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: one run after another here; ray: one Ray task per run (pip install lmcourse[cluster])")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, ray://head:10001); default: start one")
    p.add_argument("--num-cpus", type=POSITIVE_INT, default=None, help="CPUs of a locally started Ray instance")
    p.add_argument("--force-prepare", action="store_true",
                   help="run the spec's prepare steps even when the models they produce already exist")
    p.add_argument("--ship", action="store_true",
                   help="run nothing: copy the finished sweep's results into data/results/<bench>/ (results.csv, "
                        "manifest.yaml, leaderboard.md); refuses a sweep with failed or missing runs")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="with --ship: ship a sweep with failed or missing runs anyway (the manifest says so)")
    p.add_argument("--keep-shipped", action="store_true",
                   help="with --ship: complete the sweep with the already shipped rows of the runs it lacks "
                        "(a sweep finished over several sittings; each row keeps its own commit and date)")
    p.add_argument("--shipped-dir", default=None,
                   help="the shipped results to ship into and compare with (default: the checkout's data/results)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("runs", help="list the runs under runs/ and the command that opens their TensorBoard logs")
    p.add_argument("--runs-dir", default=None,
                   help="where the runs are (default: $LMCOURSE_RUNS_DIR, the checkout's runs/, else ./runs)")
    p.add_argument("--profiles", action="store_true",
                   help="for each notebook and profile, its last complete run (date, commit, machine, wall time) "
                        "under runs/ and in the shipped results, or 'never run'")
    p.add_argument("--markdown", action="store_true",
                   help="with --profiles: the README's column, from the shipped results only")
    p.add_argument("--shipped-dir", default=None, help="the shipped results (default: the checkout's data/results)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("exercises", help="list the chapters' exercises and what you passed, or show one")
    p.add_argument("id", nargs="?", default=None, help="an exercise id (e.g. 02.sdpa): print what it asks")
    p.add_argument("--chapter", type=POSITIVE_INT, default=None, help="only this chapter's exercises (1-14)")
    p.add_argument("--hint", action="store_true", help="with an id: print its hint")
    p.add_argument("--solution", action="store_true", help="with an id: print the reference solution's source")
    p.set_defaults(func=cmd_exercises)

    p = sub.add_parser("classify", help="classify text (one per line, a file or stdin) with an exported ONNX model")
    p.add_argument("model", help="an exported model folder (lmcourse.compression.export_onnx)")
    p.add_argument("input", nargs="?", default="-", help="a text file, one text per line (default: stdin)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32)
    p.add_argument("--truncate", action="store_true", help="cut texts longer than the model's maximum length")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="ONNX Runtime intra-op threads")
    p.set_defaults(func=cmd_classify)

    _add_training_commands(sub)
    return parser


def cmd_classify(args: argparse.Namespace) -> int:
    """Print ``label<TAB>probability<TAB>text`` for every input line."""
    from lmcourse.compression.classify import classify_texts
    from lmcourse.errors import ArgumentError, DataUnavailableError

    if args.input == "-":
        source, lines = "standard input", sys.stdin.read().splitlines()
    else:
        path = Path(args.input)
        if not path.exists():
            raise DataUnavailableError(f"input file {path} does not exist (give a text file, or '-' for stdin)")
        if not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file (a device, a pipe or a socket)"
            raise ArgumentError(f"input {path} is {kind}: give a text file with one text per line, or '-' for "
                                "stdin")
        try:
            source, lines = f"input file {path}", path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ArgumentError(f"input file {path} is not UTF-8 text: give a text file, one text per "
                                "line") from None
    if not any(line.strip() for line in lines):
        raise ArgumentError(f"{source} is empty (no text on any line): give one text per line")
    for row in classify_texts(args.model, lines, batch_size=args.batch_size, truncate=args.truncate,
                              threads=args.threads):
        print(f"{row['label']}\t{row['score']:.4f}\t{row['text']}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Char-level GPT pretraining (nanoGPT's Shakespeare setting) with :func:`lmcourse.pretraining.train`;
    ``--global-batch`` sequences per optimiser step whatever the number of processes and ``--grad-accum``."""
    import torch

    from lmcourse import distributed as dist
    from lmcourse.context import resolve_context
    from lmcourse.data import load_corpus
    from lmcourse.errors import ArgumentError
    from lmcourse.models.gpt import GPT, GPTConfig
    from lmcourse.pretraining import StreamBatches, TrainConfig, clm_step_outputs, train
    from lmcourse.tokenization import CharTokenizer
    from lmcourse.tracking import write_json_atomic

    if args.n_embd % args.n_head:
        raise ArgumentError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}: each head gets "
                            "n_embd / n_head dimensions")
    _, world = dist.init_from_env()
    ctx = resolve_context(args.profile, seed=args.seed, device=args.device, bf16=args.bf16 or False,
                          threads=args.threads).apply()
    per_device = dist.per_device_batch_size(args.global_batch, args.grad_accum, world)
    text = "\n".join(load_corpus(args.corpus, "train")["text"])
    chars = CharTokenizer(text)
    data = torch.tensor(chars.encode(text), dtype=torch.long)
    train_data = data[: int(0.9 * len(data))]
    config = GPTConfig(vocab_size=chars.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    with ctx.seeded():
        model = GPT(config)
    cfg = TrainConfig(max_steps=args.steps, lr=args.lr, warmup_steps=args.warmup, schedule="cosine",
                      min_lr_ratio=0.1, weight_decay=0.1, betas=(0.9, 0.99), eval_every=args.steps + 1,
                      bf16=ctx.bf16, grad_accum_steps=args.grad_accum, fused_adamw=False)
    out = Path(args.out)
    result = train(model, StreamBatches(train_data, args.block_size, args.global_batch, ctx), clm_step_outputs,
                   cfg, ctx, output_dir=out / "checkpoints" if args.save else None, progress=dist.is_main_process())
    if dist.is_main_process():
        write_json_atomic(out / "history.json", {
            "world_size": world, "global_batch": args.global_batch, "grad_accum_steps": args.grad_accum,
            "per_device_batch": per_device, "history": result.history, "context": ctx.to_dict(),
            "tokens_per_s_per_process": result.perf.get("train_tokens_per_s"),
            "tokens_per_s_total": (result.perf.get("train_tokens_per_s") or 0.0) * world,
            "mfu": result.perf.get("mfu"), "device": result.perf.get("device"),
        })
        print(f"pretrain: {args.steps} steps on {world} process(es) on {ctx.device}, final loss "
              f"{result.history[-1]['loss']:.4f} -> {out / 'history.json'}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """:func:`lmcourse.finetuning.finetune` from the command line; the ``Trainer`` handles DDP by itself."""
    from lmcourse import distributed as dist
    from lmcourse.context import resolve_context
    from lmcourse.finetuning import finetune, metric_record
    from lmcourse.tracking import write_json_atomic

    ctx = resolve_context(args.profile, seed=args.seed, device=args.device)
    overrides = {k: v for k, v in {"max_steps": args.max_steps, "max_train_samples": args.max_train_samples,
                                   "batch_size": args.batch_size, "learning_rate": args.learning_rate}.items()
                 if v is not None}
    result = finetune(args.task, args.model, ctx=ctx, output_dir=args.out, **overrides)
    if dist.is_main_process():
        record = metric_record(result)
        if args.out:
            write_json_atomic(Path(args.out) / "finetune_metrics.json", record)
        print(json.dumps(record, indent=2, default=str))
    return 0


def _add_training_commands(sub) -> None:
    """``pretrain`` and ``finetune``: they run unchanged on one process or many (torchrun, accelerate launch)."""
    p = sub.add_parser("pretrain", help="char-level GPT pretraining; runs under torchrun/accelerate launch")
    p.add_argument("--corpus", default="tiny-shakespeare")
    p.add_argument("--steps", type=POSITIVE_INT, default=200)
    p.add_argument("--global-batch", type=POSITIVE_INT, default=16, help="sequences per optimiser step, all processes")
    p.add_argument("--grad-accum", type=POSITIVE_INT, default=1, help="micro-batches per step on each process")
    p.add_argument("--block-size", type=POSITIVE_INT, default=64)
    p.add_argument("--n-layer", type=POSITIVE_INT, default=4)
    p.add_argument("--n-head", type=POSITIVE_INT, default=4)
    p.add_argument("--n-embd", type=POSITIVE_INT, default=128)
    p.add_argument("--dropout", type=PROBABILITY, default=0.0)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-3)
    p.add_argument("--warmup", type=NONNEGATIVE_INT, default=10)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (default: fp32)")
    p.add_argument("--save", action="store_true", help="write checkpoints (main process only)")
    p.add_argument("--out", default="runs/pretrain")
    _add_context_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune on a GLUE task; runs under torchrun/accelerate launch")
    p.add_argument("--task", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--max-steps", type=POSITIVE_INT, default=None)
    p.add_argument("--max-train-samples", type=POSITIVE_INT, default=None)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None)
    p.add_argument("--learning-rate", type=POSITIVE_FLOAT, default=None)
    p.add_argument("--out", default=None)
    _add_context_flags(p)
    p.set_defaults(func=cmd_finetune)


def _add_context_flags(p: argparse.ArgumentParser) -> None:
    """The run context of a training command: profile, seed, device, threads."""
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: $LMCOURSE_PROFILE or cpu)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: $LMCOURSE_DEVICE or the best)")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads per process")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``lmcourse`` command (also the function to hand :func:`lmcourse.distributed.launch_in_notebook`)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LmcourseError as exc:
        print(f"lmcourse: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
