"""The benchmark suite: a YAML spec of runs, executed with papermill, results kept as data.

A spec is a matrix of notebook × model × task × seed × profile (plus any papermill parameter of the
notebook). Every combination is one run, executed into ``runs/<bench>/<run-id>/`` (the output notebook
and ``metrics.json``, see :mod:`lmcourse.runner`). Completed runs are skipped when the sweep is started
again, so a rerun resumes it; a failing run keeps its output notebook, is marked ``failed`` and the sweep
goes on. Afterwards the runs are aggregated into ``results.csv`` (one row a run) and ``leaderboard.md``
(mean ± std over seeds per model × task, the GLUE score as GLUE defines it, published references from
``data/references/glue_dev.yaml`` and the previous results of the same spec, with regressions flagged).

Spec format (``data/bench/*.yaml``)::

    name: smoke                      # runs go to runs/<name>/
    description: two tiny runs for CI
    notebook: 07_finetuning_glue     # default notebook of the matrix
    matrix:                          # every combination of these lists is a run
      model: [minilm-l6]
      task: [sst2, mrpc]
      seed: [0]
      profile: [smoke]
    parameters: {num_epochs: 1}      # the same papermill parameters for every run (optional)
    include: []                      # extra single runs, as mappings of the axes above (optional)
    exclude: []                      # partial mappings; a run matching one is dropped (optional)
    tolerance: 0.02                  # a task score this much below the previous results is a regression
    resources: {cpus: 2, gpus: 0}    # per run, for cluster backends (optional)
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lmcourse.errors import LmcourseError, SpecError, UnknownNameError
from lmcourse.tracking import METRICS_FILE, write_json_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = REPO_ROOT / "data" / "bench"
REFERENCES_FILE = REPO_ROOT / "data" / "references" / "glue_dev.yaml"
SPEC_KEYS = ("name", "description", "notebook", "matrix", "parameters", "include", "exclude", "tolerance",
             "resources")
AXES = ("notebook", "model", "task", "seed", "profile")
RESOURCE_KEYS = ("cpus", "gpus")
# Per-task numbers a fine-tuning notebook records as ``<task>/<name>``; the benchmark reads exactly these.
METRIC_NAMES = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "combined_score")
PERF_NAMES = ("train_tokens_per_s", "mfu", "peak_memory_bytes", "train_seconds", "trainable_params", "train_flops")


# ------------------------------------------------------------------------------------------------ spec
class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping key (for error messages)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {loader.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
    return _LinedDict(mapping, lines, node.start_mark.line + 1)


class _LinedDict(dict):
    def __init__(self, data: dict, lines: dict, line: int):
        super().__init__(data)
        self.lines, self.line = lines, line

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list:
    seq = _LinedList(loader.construct_sequence(node, deep=True))
    seq.item_lines = [n.start_mark.line + 1 for n in node.value]
    seq.line = node.start_mark.line + 1
    return seq


class _LinedList(list):
    item_lines: list[int]
    line: int


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: which notebook, with which parameters, into which folder."""

    bench: str
    run_id: str
    notebook: str  # path of the notebook
    parameters: dict[str, Any]
    resources: dict[str, float] = field(default_factory=dict)

    def folder(self, runs_dir: str | os.PathLike) -> Path:
        return Path(runs_dir) / self.bench / self.run_id


@dataclass
class BenchSpec:
    name: str
    path: Path
    description: str
    runs: list[PlannedRun]
    tolerance: float
    raw: dict[str, Any]


def find_spec(spec: str | os.PathLike) -> Path:
    """A spec file from a path or a name shipped in ``data/bench`` (``smoke``, ``cpu``, ``gpu``)."""
    path = Path(spec)
    if path.is_file():
        return path
    for candidate in (SPECS_DIR / f"{spec}.yaml", SPECS_DIR / str(spec)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))) or "none"
    raise SpecError(f"benchmark spec {str(spec)!r} not found: give a YAML file or one of the shipped specs: {shipped}")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value).replace("/", "--")).strip("-") or "x"


def make_run_id(notebook: Path, parameters: Mapping[str, Any]) -> str:
    """Readable and stable: ``07-minilm-l6-sst2-smoke-s0`` plus a hash when other parameters are set."""
    main = [notebook.name[:2]]
    main += [_slug(parameters[k]) for k in ("model", "task", "profile") if parameters.get(k) is not None]
    if parameters.get("seed") is not None:
        main.append(f"s{parameters['seed']}")
    rest = {k: v for k, v in parameters.items() if k not in AXES}
    if rest:
        main.append(hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8])
    return "-".join(main)


def load_spec(spec: str | os.PathLike) -> BenchSpec:
    """Parse and validate a spec; every problem raises :class:`SpecError` naming the file and line."""
    from lmcourse.data import get_task
    from lmcourse.models import KNOWN_MODELS, resolve
    from lmcourse.profiles import resolve_profile_name
    from lmcourse.runner import find_notebook, notebook_parameters

    path = find_spec(spec)
    where = str(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec is a mapping with keys {', '.join(SPEC_KEYS)}")

    def fail(message: str, mapping: Any = raw, key: Any = None) -> SpecError:
        line = mapping.line_of(key) if isinstance(mapping, _LinedDict) else getattr(mapping, "line", 1)
        return SpecError(f"{where}:{line}: {message}")

    for key in raw:
        if key not in SPEC_KEYS:
            raise fail(f"unknown key {key!r}; a spec has {', '.join(SPEC_KEYS)}", raw, key)
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise fail(f"name {name!r} must be letters, digits, '.', '_' or '-' (it names runs/<name>/)", raw, "name")
    matrix = raw.get("matrix")
    if not isinstance(matrix, dict) or not matrix:
        raise fail("'matrix' must be a non-empty mapping of axis -> list of values", raw, "matrix")
    fixed = raw.get("parameters") or {}
    if not isinstance(fixed, dict):
        raise fail("'parameters' must be a mapping of papermill parameter -> value", raw, "parameters")
    tolerance = raw.get("tolerance", 0.02)
    if not isinstance(tolerance, int | float) or tolerance < 0:
        raise fail(f"'tolerance' must be a non-negative number, got {tolerance!r}", raw, "tolerance")
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or any(k not in RESOURCE_KEYS for k in resources):
        raise fail(f"'resources' must be a mapping with keys {', '.join(RESOURCE_KEYS)}", raw, "resources")

    axes: dict[str, list] = {}
    for axis, values in matrix.items():
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise fail(f"matrix axis {axis!r} is empty: the matrix would have no runs", matrix, axis)
        axes[axis] = list(values)
    if "notebook" not in axes:
        if not raw.get("notebook"):
            raise fail("no notebook: set 'notebook:' or a 'notebook' axis in the matrix", raw)
        axes = {"notebook": [raw["notebook"]], **axes}

    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    for key, items in (("include", raw.get("include") or []), ("exclude", raw.get("exclude") or [])):
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise fail(f"'{key}' must be a list of mappings", raw, key)
    for extra in raw.get("include") or []:
        combos.append({"notebook": axes["notebook"][0], **extra})
    for drop in raw.get("exclude") or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in drop.items())]
    if not combos:
        raise fail("the matrix (after include/exclude) has no runs", raw, "matrix")

    notebooks: dict[str, tuple[Path, dict]] = {}
    runs: list[PlannedRun] = []
    for combo in combos:
        nb_name = str(combo["notebook"])
        if nb_name not in notebooks:
            try:
                beside = path.parent / nb_name
                nb_path = beside.resolve() if beside.is_file() else find_notebook(nb_name)
            except LmcourseError as exc:
                raise fail(str(exc), matrix if "notebook" in matrix else raw, "notebook") from None
            notebooks[nb_name] = (nb_path, notebook_parameters(nb_path))
        nb_path, declared = notebooks[nb_name]
        params = {**fixed, **{k: v for k, v in combo.items() if k != "notebook"}}
        for pname in params:
            if pname not in declared:
                src = matrix if pname in matrix else fixed if pname in fixed else raw
                raise fail(f"{nb_path.name} has no parameter {pname!r}; its parameters are {sorted(declared)}",
                           src, pname)
        try:
            if "task" in params:
                params["task"] = get_task(params["task"]).name
            if "model" in params and str(params["model"]).lower() not in KNOWN_MODELS:
                resolve(str(params["model"]))  # known names are checked when the run loads the weights
            params["profile"] = resolve_profile_name(params.get("profile"))
        except UnknownNameError as exc:
            bad = next((k for k in ("task", "model", "profile") if k in str(exc)), None)
            src = matrix if bad in matrix else fixed if bad in fixed else raw
            raise fail(exc.args[0] if exc.args else str(exc), src, bad) from None
        if "seed" in params and not isinstance(params["seed"], int):
            raise fail(f"seed must be an integer, got {params['seed']!r}", matrix, "seed")
        run_id = make_run_id(nb_path, params)
        runs.append(PlannedRun(name, run_id, str(nb_path), params, dict(resources)))
    ids = [r.run_id for r in runs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise fail(f"the matrix produces the same run twice: {', '.join(dupes)}", raw, "matrix")
    return BenchSpec(name, path, str(raw.get("description", "")), runs, float(tolerance), dict(raw))


# ------------------------------------------------------------------------------------------------ sweep
def run_status(run: PlannedRun, runs_dir: str | os.PathLike) -> str:
    """``completed`` / ``failed`` / ``pending`` from the run folder's metrics.json (same parameters only)."""
    path = run.folder(runs_dir) / METRICS_FILE
    if not path.is_file():
        return "pending"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return "pending"
    if data.get("parameters") != json.loads(json.dumps(run.parameters, default=str)):
        return "pending"  # same folder, other parameters: run again
    return str(data.get("status", "pending"))


def execute_run(run: PlannedRun, runs_dir: str | os.PathLike) -> dict[str, Any]:
    """Execute one planned run (here, or inside a cluster worker) and return its metrics.json content."""
    from lmcourse.runner import run_notebook

    params = dict(run.parameters)
    profile = params.pop("profile", None)
    folder = run.folder(runs_dir)
    run_notebook(run.notebook, params, profile=profile, run_dir=folder, progress=False,
                 extra_info={"bench": run.bench, "run_id": run.run_id})
    return json.loads((folder / METRICS_FILE).read_text())


@dataclass
class SweepResult:
    spec: BenchSpec
    runs_dir: Path
    planned: list[PlannedRun]
    skipped: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    results_file: Path | None = None
    leaderboard_file: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def select_runs(spec: BenchSpec, only: str | None = None) -> list[PlannedRun]:
    """Runs whose id matches ``only`` (a glob such as ``*sst2*``, or a plain substring)."""
    if not only:
        return list(spec.runs)
    pattern = only if any(ch in only for ch in "*?[") else f"*{only}*"
    chosen = [r for r in spec.runs if fnmatch.fnmatch(r.run_id, pattern)]
    if not chosen:
        raise SpecError(f"--only {only!r} matches none of the {len(spec.runs)} runs of {spec.name!r} "
                        f"(ids look like {spec.runs[0].run_id})")
    return chosen


Executor = Callable[[list[PlannedRun], Path, Callable[[PlannedRun, dict], None]], None]


def _local_executor(runs: list[PlannedRun], runs_dir: Path, done: Callable[[PlannedRun, dict], None]) -> None:
    for run in runs:
        done(run, execute_run(run, runs_dir))


# Environment a cluster worker needs to see to behave like this process (data mirror, offline, profile).
FORWARDED_ENV = ("LMCOURSE_DATA_DIR", "LMCOURSE_PROFILE", "LMCOURSE_THREADS", "LMCOURSE_DEVICE", "HF_HUB_OFFLINE",
                 "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "MPLBACKEND")
MAX_SHIPPED_BYTES = 64 * 2**20


def _execute_and_ship(run: PlannedRun) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Inside a cluster worker: execute into a private folder and return metrics plus the run's files.

    Shipping the files back (an output notebook and metrics.json, usually well under a megabyte) means the
    workers need no shared filesystem; the driver writes them under its own ``runs/``.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lmcourse-run-") as tmp:
        summary = execute_run(run, tmp)
        folder = run.folder(tmp)
        files, total = {}, 0
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                total += len(data)
                if total > MAX_SHIPPED_BYTES:
                    raise LmcourseError(f"run {run.run_id}: output files exceed {MAX_SHIPPED_BYTES >> 20} MiB")
                files[str(path.relative_to(folder))] = data
    return summary, files


def ray_executor(address: str | None = None, num_cpus: int | None = None) -> Executor:
    """Run each planned run as a Ray task with its resources; results come back to the local ``runs/``.

    ``address`` joins an existing cluster (``auto``, ``ray://host:10001``); without it a local Ray
    instance is started (``num_cpus`` caps it). Needs the optional extra ``pip install lmcourse[cluster]``.
    """

    def execute(runs: list[PlannedRun], runs_dir: Path, done: Callable[[PlannedRun, dict], None]) -> None:
        try:
            import ray
        except ImportError:
            raise LmcourseError("the ray backend needs Ray: pip install 'lmcourse[cluster]'") from None
        if not runs:
            return
        started_here = not ray.is_initialized()
        if started_here:
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": env}, ignore_reinit_error=True)
        try:
            task = ray.remote(_execute_and_ship)
            pending = {}
            for run in runs:
                opts = {"num_cpus": run.resources.get("cpus", 1), "num_gpus": run.resources.get("gpus", 0),
                        "max_retries": 0}
                pending[task.options(**opts).remote(run)] = run
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                run = pending.pop(ref)
                folder = run.folder(runs_dir)
                try:
                    summary, files = ray.get(ref)
                except Exception as exc:  # the worker died or could not start the kernel
                    summary = {"status": "failed", "error": f"ray task failed: {type(exc).__name__}: {exc}",
                               "notebook": Path(run.notebook).name, "parameters": run.parameters,
                               "profile": run.parameters.get("profile"), "metrics": {}, "wall_time_s": 0.0,
                               "bench": run.bench, "run_id": run.run_id}
                    files = {METRICS_FILE: json.dumps(summary).encode()}
                folder.mkdir(parents=True, exist_ok=True)
                for name, data in files.items():
                    target = folder / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, target)
                done(run, summary)
        finally:
            if started_here:
                ray.shutdown()

    return execute


def make_executor(backend: str = "local", address: str | None = None, num_cpus: int | None = None) -> Executor:
    """The executor for a backend name: ``local`` (one run after another here) or ``ray``."""
    if backend == "local":
        if address:
            raise SpecError("--address only applies to --backend ray")
        return _local_executor
    if backend == "ray":
        return ray_executor(address, num_cpus)
    raise UnknownNameError(f"unknown backend {backend!r}; choose local or ray")


def run_spec(spec: str | os.PathLike | BenchSpec, runs_dir: str | os.PathLike | None = None,
             only: str | None = None, dry_run: bool = False, progress: bool = True,
             executor: Executor | None = None, aggregate_results: bool = True) -> SweepResult:
    """Run (or with ``dry_run`` only list) a spec's runs, skipping completed ones; then aggregate."""
    from tqdm.auto import tqdm

    from lmcourse.runner import default_runs_dir

    spec = spec if isinstance(spec, BenchSpec) else load_spec(spec)
    runs_dir = Path(runs_dir or default_runs_dir())
    planned = select_runs(spec, only)
    result = SweepResult(spec, runs_dir, planned)
    todo = []
    for run in planned:
        if run_status(run, runs_dir) == "completed":
            result.skipped.append(run.run_id)
        else:
            todo.append(run)
    if dry_run:
        return result
    bar = tqdm(total=len(todo), desc=f"bench {spec.name}", unit="run", disable=not progress or not todo)

    def done(run: PlannedRun, summary: dict) -> None:
        (result.completed if summary.get("status") == "completed" else result.failed).append(run.run_id)
        bar.set_postfix_str(f"{run.run_id}: {summary.get('status')}", refresh=False)
        bar.update(1)

    try:
        (executor or _local_executor)(todo, runs_dir, done)
    finally:
        bar.close()
    if aggregate_results:
        result.results_file, result.leaderboard_file = aggregate(spec, runs_dir)
    return result


# ------------------------------------------------------------------------------------------ aggregation
RESULT_COLUMNS: dict[str, type | tuple[type, ...]] = {
    "bench": str, "run_id": str, "status": str, "notebook": str, "model": str, "task": str, "seed": int,
    "profile": str, "score": float, **{m: float for m in METRIC_NAMES},
    "wall_time_s": float, **{p: float for p in PERF_NAMES},
    "cpu_model": str, "cpu_cores": int, "gpu": str, "device": str, "torch": str, "transformers": str,
    "git_commit": str, "started_at": str, "parameters": str, "error": str,
}
REQUIRED_RESULT_COLUMNS = ("bench", "run_id", "status", "notebook", "profile", "wall_time_s")


def _task_metrics(task: str | None, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The GLUE numbers and performance numbers a notebook recorded for ``task`` (``<task>/<name>``)."""
    out: dict[str, Any] = {}
    if not task:
        return out
    for name in (*METRIC_NAMES, *PERF_NAMES):
        for key in (f"{task}/{name}", f"{task}/eval_{name}"):
            if key in metrics and metrics[key] is not None:
                out[name] = metrics[key]
                break
    if task == "mnli" and f"{task}_mismatched/accuracy" in metrics:
        out["mnli_mismatched_accuracy"] = metrics[f"{task}_mismatched/accuracy"]
    return out


def result_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One results-table row from a run's metrics.json."""
    from lmcourse.metrics import task_score

    params = summary.get("parameters") or {}
    task = params.get("task")
    metrics = summary.get("metrics") or {}
    values = _task_metrics(task, metrics)
    glue_values = {k: float(v) for k, v in values.items() if k in METRIC_NAMES}
    score = None
    if glue_values:
        try:
            score = task_score(task, glue_values)
        except LmcourseError:
            score = None
    if score is not None and values.get("mnli_mismatched_accuracy") is not None:
        score = (score + float(values["mnli_mismatched_accuracy"])) / 2  # GLUE counts MNLI as m/mm averaged
    hw, versions = summary.get("hardware") or {}, summary.get("versions") or {}
    row = {
        "bench": summary.get("bench"), "run_id": summary.get("run_id"), "status": summary.get("status"),
        "notebook": summary.get("notebook"), "model": params.get("model"), "task": task,
        "seed": params.get("seed"), "profile": summary.get("profile"), "score": score,
        **{m: values.get(m) for m in METRIC_NAMES}, "wall_time_s": summary.get("wall_time_s"),
        **{p: values.get(p) for p in PERF_NAMES},
        "cpu_model": hw.get("cpu_model"), "cpu_cores": hw.get("cpu_cores"), "gpu": hw.get("gpu"),
        "device": hw.get("device"), "torch": versions.get("torch"), "transformers": versions.get("transformers"),
        "git_commit": summary.get("git_commit"), "started_at": summary.get("started_at"),
        "parameters": json.dumps(params, sort_keys=True, default=str), "error": summary.get("error"),
    }
    return row


def validate_results(rows: Iterable[Mapping[str, Any]]) -> None:
    """Check results rows against :data:`RESULT_COLUMNS` (names, types, required values, ranges)."""
    for i, row in enumerate(rows):
        missing = [c for c in RESULT_COLUMNS if c not in row]
        extra = [c for c in row if c not in RESULT_COLUMNS]
        if missing or extra:
            raise LmcourseError(f"results row {i}: missing columns {missing}, unexpected columns {extra}")
        for col, typ in RESULT_COLUMNS.items():
            value = row[col]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if col in REQUIRED_RESULT_COLUMNS:
                    raise LmcourseError(f"results row {i}: {col} is required")
                continue
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if typ is int and isinstance(value, float) and value.is_integer():
                continue
            if not isinstance(value, typ):
                raise LmcourseError(f"results row {i}: {col}={value!r} is not {typ.__name__}")
        if row["status"] not in ("completed", "failed", "interrupted"):
            raise LmcourseError(f"results row {i}: unknown status {row['status']!r}")
        for m in ("accuracy", "f1", "mfu"):
            v = row[m]
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and not 0.0 <= v <= 1.0:
                raise LmcourseError(f"results row {i}: {m}={v} is not a fraction in [0, 1]")


def collect_results(spec: BenchSpec, runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows for every run of the spec that has a metrics.json (completed or failed)."""
    rows = []
    for run in spec.runs:
        path = run.folder(runs_dir) / METRICS_FILE
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        summary.setdefault("bench", run.bench)
        summary.setdefault("run_id", run.run_id)
        rows.append(result_row(summary))
    validate_results(rows)
    return rows


# Short model names whose published numbers are filed under another id (the checkpoint they started from).
REFERENCE_ALIASES = {"minilm-l6": "nreimers/MiniLM-L6-H384-uncased"}


def load_references(path: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """Published dev-set task scores: model -> task -> score (two-metric tasks averaged, as GLUE does).

    A value stored as ``score`` (a source that gives one number without naming the metric) is used as
    the task score; MNLI matched and mismatched are averaged into one ``mnli`` score. Models are keyed by
    the id in the file and by every lmcourse short name that resolves to it.
    """
    from lmcourse.metrics import task_score
    from lmcourse.models import KNOWN_MODELS

    path = Path(path or REFERENCES_FILE)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, dict[str, float]] = {}
    for model, entry in (data.get("models") or {}).items():
        tasks: dict[str, float] = {}
        for task, values in (entry.get("tasks") or {}).items():
            try:
                values = {k: float(v) for k, v in values.items()}
                tasks[task] = values["score"] if "score" in values else task_score(task, values)
            except (LmcourseError, TypeError, ValueError, AttributeError):
                continue
        if "mnli" in tasks and "mnli_mismatched" in tasks:
            tasks["mnli"] = (tasks["mnli"] + tasks.pop("mnli_mismatched")) / 2
        out[str(model)] = tasks
    for short, known in KNOWN_MODELS.items():
        target = REFERENCE_ALIASES.get(short)
        if target is None and known.source == "Hub":
            target = known.locate()
        if target in out:
            out.setdefault(short, out[target])
    return out


def leaderboard(rows: list[dict[str, Any]], references: Mapping[str, Mapping[str, float]] | None = None,
                previous: list[dict[str, Any]] | None = None, tolerance: float = 0.02):
    """Mean ± std over seeds per model × task, the GLUE score, references and regressions (a DataFrame)."""
    import pandas as pd

    from lmcourse.metrics import glue_score

    done = pd.DataFrame([r for r in rows if r["status"] == "completed" and r["score"] is not None])
    if done.empty:
        return pd.DataFrame(columns=["model", "task", "runs", "mean", "std"])
    grouped = done.groupby(["model", "task", "profile"])["score"]
    table = grouped.agg(runs="count", mean="mean", std="std").reset_index()
    table["std"] = table["std"].fillna(0.0)
    refs = references or {}
    table["published"] = [refs.get(m, {}).get(t) for m, t in zip(table["model"], table["task"])]
    prev_means: dict[tuple, float] = {}
    if previous:
        prev = pd.DataFrame([r for r in previous if r["status"] == "completed" and r["score"] is not None])
        if not prev.empty:
            prev_means = prev.groupby(["model", "task", "profile"])["score"].mean().to_dict()
    table["previous"] = [prev_means.get((m, t, p)) for m, t, p in zip(table["model"], table["task"], table["profile"])]
    table["regression"] = [prev is not None and mean < prev - tolerance
                           for mean, prev in zip(table["mean"], table["previous"])]
    glue_rows = []
    for (model, profile), part in table.groupby(["model", "profile"]):
        per_task = {t: {"accuracy": s} for t, s in zip(part["task"], part["mean"])}
        glue_rows.append({"model": model, "task": f"GLUE ({len(per_task)} tasks)", "profile": profile,
                          "runs": int(part["runs"].sum()), "mean": glue_score(per_task), "std": float("nan"),
                          "published": None, "previous": None, "regression": False})
    return pd.concat([table, pd.DataFrame(glue_rows)], ignore_index=True)


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.1f}" if pct else str(value)


def leaderboard_markdown(spec_name: str, table, rows: list[dict[str, Any]]) -> str:
    """The leaderboard as Markdown: one line per model × task, scores in percent."""
    lines = [f"# Benchmark `{spec_name}`", "",
             f"{sum(r['status'] == 'completed' for r in rows)} completed, "
             f"{sum(r['status'] != 'completed' for r in rows)} failed runs. Scores are dev-set task scores in "
             "percent (two-metric tasks averaged, as GLUE does), mean ± std over seeds; `published` is the "
             "reference in data/references/glue_dev.yaml, `previous` the last aggregate of this spec.", "",
             "| model | profile | task | runs | score | published | previous | |", "|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        std = "" if r["std"] is None or (isinstance(r["std"], float) and math.isnan(r["std"])) else \
            f" ± {100 * r['std']:.1f}"
        flag = "⚠ regression" if r.get("regression") else ""
        lines.append(f"| {r['model']} | {r['profile']} | {r['task']} | {r['runs']} | {_fmt(r['mean'])}{std} | "
                     f"{_fmt(r.get('published'))} | {_fmt(r.get('previous'))} | {flag} |")
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- `{r['run_id']}`: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def _read_csv_rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    df = pd.read_csv(path)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
            for rec in df.to_dict("records")]


def aggregate(spec: BenchSpec, runs_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``leaderboard.md`` for the spec; keep the previous results in history/."""
    import pandas as pd

    folder = Path(runs_dir) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    rows = collect_results(spec, runs_dir)
    results_path, board_path = folder / "results.csv", folder / "leaderboard.md"
    previous = None
    if results_path.is_file():
        previous = _read_csv_rows(results_path)
        history = folder / "history"
        history.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        results_path.replace(history / f"results-{stamp}.csv")
    else:
        older = sorted((folder / "history").glob("results-*.csv")) if (folder / "history").is_dir() else []
        previous = _read_csv_rows(older[-1]) if older else None
    table = leaderboard(rows, load_references(), previous, spec.tolerance)
    tmp = results_path.with_suffix(".csv.tmp")
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(tmp, index=False)
    os.replace(tmp, results_path)
    tmp_md = board_path.with_suffix(".md.tmp")
    tmp_md.write_text(leaderboard_markdown(spec.name, table, rows), encoding="utf-8")
    os.replace(tmp_md, board_path)
    write_json_atomic(folder / "leaderboard.json", {"spec": spec.name, "generated": time.time(),
                                                     "rows": table.to_dict("records")})
    return results_path, board_path


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate a results.csv (for the report notebook)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise LmcourseError(f"no benchmark results at {path}; run `lmcourse bench <spec>` first")
    rows = _read_csv_rows(path)
    for row in rows:
        for col, typ in RESULT_COLUMNS.items():
            if typ is str and row.get(col) is not None:
                row[col] = str(row[col])
            if typ is int and row.get(col) is not None:
                row[col] = int(row[col])
    validate_results(rows)
    return rows


# ------------------------------------------------------------------------------------------------- CLI
def cmd_bench(args) -> int:
    spec = load_spec(args.spec)
    executor = make_executor(args.backend, args.address, args.num_cpus)
    result = run_spec(spec, runs_dir=args.runs_dir, only=args.only, dry_run=args.dry_run, progress=not args.quiet,
                      executor=executor)
    if args.dry_run:
        print(f"{spec.name}: {len(result.planned)} runs ({len(result.skipped)} already completed)")
        for run in result.planned:
            state = "done" if run.run_id in result.skipped else "todo"
            print(f"  [{state}] {run.run_id}  {Path(run.notebook).name}  {json.dumps(run.parameters, default=str)}")
        return 0
    print(f"{spec.name}: {len(result.completed)} ran, {len(result.skipped)} skipped (already completed), "
          f"{len(result.failed)} failed")
    if result.results_file:
        print(f"results: {result.results_file}\nleaderboard: {result.leaderboard_file}")
        print(result.leaderboard_file.read_text(encoding="utf-8"))
    return 1 if result.failed else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark spec (notebook × model × task × seed × profile)")
    p.add_argument("spec", help="a spec YAML file or a shipped spec name (smoke, cpu, gpu)")
    p.add_argument("--only", default=None, help="only runs whose id matches this glob or substring")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) without running")
    p.add_argument("--runs-dir", default=None,
                   help="where runs/<bench>/ goes (default: $LMCOURSE_RUNS_DIR, the checkout's runs/, else ./runs)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: one run after another here; ray: one Ray task per run (pip install lmcourse[cluster])")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, ray://head:10001); default: start one")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a locally started Ray instance")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)


# ------------------------------------------------------------------------------------------- reporting
def find_results(results: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
                 prefer: Iterable[str] = ("gpu", "cpu", "smoke"), run_if_missing: str | None = "smoke",
                 progress: bool = True) -> Path:
    """The results.csv to report on.

    ``results`` may be a results.csv, a bench folder or a bench name under ``runs_dir``. With ``None``
    the first of ``prefer`` that has results is used; when there is none, the ``run_if_missing`` spec is
    run first (the smoke spec takes a few minutes on a laptop).
    """
    from lmcourse.runner import default_runs_dir

    runs_dir = Path(runs_dir or default_runs_dir())
    if results is not None:
        path = Path(results)
        for candidate in (path, path / "results.csv", runs_dir / str(results) / "results.csv"):
            if candidate.is_file():
                return candidate
        raise LmcourseError(f"no benchmark results at {results!r} (looked for a results.csv there and under "
                            f"{runs_dir}); run `lmcourse bench <spec>` first")
    for name in prefer:
        candidate = runs_dir / name / "results.csv"
        if candidate.is_file():
            return candidate
    if run_if_missing is None:
        raise LmcourseError(f"no benchmark results under {runs_dir}; run `lmcourse bench smoke` first")
    sweep = run_spec(run_if_missing, runs_dir=runs_dir, progress=progress)
    assert sweep.results_file is not None
    return sweep.results_file
