"""Running a sweep: the spec's prepare steps first (here), then the matrix, skipping completed runs, here or
on a Ray cluster; then aggregate."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcourse.bench.aggregation import aggregate
from lmcourse.bench.spec import BenchSpec, PlannedRun, PrepareStep, load_spec, model_available, select_runs
from lmcourse.errors import ArgumentError, LmcourseError, UnknownNameError
from lmcourse.tracking import METRICS_FILE

# Environment a cluster worker needs to see to behave like this process (data mirror, offline, profile).
FORWARDED_ENV = ("LMCOURSE_DATA_DIR", "LMCOURSE_PROFILE", "LMCOURSE_THREADS", "LMCOURSE_DEVICE",
                 "LMCOURSE_CHECKPOINTS_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
                 "TOKENIZERS_PARALLELISM", "MPLBACKEND")
MAX_SHIPPED_BYTES = 64 * 2**20

#: Executes runs and calls ``done(run, metrics_json)`` for each as it finishes.
Executor = Callable[[list[PlannedRun], Path, Callable[[PlannedRun, dict], None]], None]


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


def execute_prepare(step: PrepareStep, runs_dir: str | os.PathLike) -> Path:
    """Run one prepare step into ``runs/<bench>/prepare-<n>/`` and return where its product now resolves.

    A failing notebook, or one that completes without publishing its product, raises
    :class:`~lmcourse.errors.LmcourseError` naming the step and its output notebook.
    """
    from lmcourse.models import resolve
    from lmcourse.runner import run_notebook

    params = dict(step.parameters)
    profile = params.pop("profile", None)
    result = run_notebook(step.notebook, params, profile=profile, run_dir=step.folder(runs_dir), progress=False,
                          extra_info={"bench": step.bench, "run_id": step.run_id, "produces": step.produces})
    what = f"{step.run_id} of {step.bench!r} ({Path(step.notebook).name}, profile {profile}, makes {step.produces!r})"
    if not result.ok:
        raise LmcourseError(f"{what} {result.status}: {result.error}; its output notebook is {result.output}. "
                            "The matrix was not started.")
    reason = model_available(step.produces)
    if reason is not None:
        raise LmcourseError(f"{what} completed but did not publish the model: {reason}. The notebook must call "
                            "lmcourse.models.publish_scratch_bert(...); the matrix was not started.")
    return Path(resolve(step.produces))


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
    prepare: list[PrepareStep] = field(default_factory=list)  # the steps this sweep needs, in order
    prepare_skipped: list[str] = field(default_factory=list)  # their run ids whose product was already there
    prepared: list[str] = field(default_factory=list)  # their run ids that ran (and published their product)

    @property
    def ok(self) -> bool:
        return not self.failed

    def prepare_lines(self) -> list[str]:
        """One line per prepare step for listings (``--dry-run``): state, id, notebook, product, parameters."""
        lines = []
        for step in self.prepare:
            state = "done" if step.run_id in self.prepare_skipped or step.run_id in self.prepared else "todo"
            lines.append(f"  [{state}] {step.run_id}  {Path(step.notebook).name}  produces {step.produces}  "
                         f"{json.dumps(step.parameters, default=str)}")
        return lines


# ------------------------------------------------------------------------------------------- executors
def _local_executor(runs: list[PlannedRun], runs_dir: Path, done: Callable[[PlannedRun, dict], None]) -> None:
    for run in runs:
        done(run, execute_run(run, runs_dir))


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
            raise ArgumentError("--address only applies to --backend ray")
        return _local_executor
    if backend == "ray":
        return ray_executor(address, num_cpus)
    raise UnknownNameError(f"unknown backend {backend!r}; choose local or ray")


# ------------------------------------------------------------------------------------------------ sweep
def run_spec(spec: str | os.PathLike | BenchSpec, runs_dir: str | os.PathLike | None = None,
             only: str | None = None, dry_run: bool = False, progress: bool = True,
             executor: Executor | None = None, force_prepare: bool = False,
             shipped_dir: str | os.PathLike | None = None) -> SweepResult:
    """Run (or with ``dry_run`` only list) a spec's runs, skipping completed ones; then aggregate.

    The spec's prepare steps whose product a run still to do uses run first, here and one after another, into
    ``runs/<bench>/prepare-<n>/``; a step whose product already resolves is skipped. ``force_prepare`` runs
    every step a selected run needs, even when its product is there (it is replaced).
    A failing step raises :class:`~lmcourse.errors.LmcourseError` before any run of the matrix starts.
    The leaderboard compares the results with the shipped ones of the spec (``shipped_dir``, default
    ``data/results/``) when there are some.
    """
    from tqdm.auto import tqdm

    from lmcourse.paths import default_runs_dir

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
    # the models of the runs still to do (of every selected run when forced)
    used = {str(r.parameters.get("model", "")).lower() for r in (planned if force_prepare else todo)}
    result.prepare = [s for s in spec.prepare if s.produces in used]
    for step in result.prepare:
        if not force_prepare and step.ready():
            result.prepare_skipped.append(step.run_id)
    if dry_run:
        return result
    for step in result.prepare:
        if step.run_id not in result.prepare_skipped:
            if progress:
                print(f"bench {spec.name}: {step.run_id}: {Path(step.notebook).name} makes {step.produces!r} ...",
                      flush=True)
            execute_prepare(step, runs_dir)
            result.prepared.append(step.run_id)
    bar = tqdm(total=len(todo), desc=f"bench {spec.name}", unit="run", disable=not progress or not todo)

    def done(run: PlannedRun, summary: dict) -> None:
        (result.completed if summary.get("status") == "completed" else result.failed).append(run.run_id)
        bar.set_postfix_str(f"{run.run_id}: {summary.get('status')}", refresh=False)
        bar.update(1)

    try:
        (executor or _local_executor)(todo, runs_dir, done)
    finally:
        bar.close()
    result.results_file, result.leaderboard_file = aggregate(spec, runs_dir, shipped_dir)
    return result
