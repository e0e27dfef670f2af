"""Executing notebooks headless with papermill, one folder per run with the output and its metrics.

``runs/<group>/<run-id>/`` receives the executed notebook and ``metrics.json``: what the notebook
recorded (:mod:`lmcourse.tracking`) plus status, parameters, profile, wall time, hardware, library
versions and git commit. A failing notebook keeps its output notebook (with the error in it) and is
marked ``failed``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmcourse.errors import ArgumentError, LmcourseError
from lmcourse.paths import NOTEBOOKS_DIR, REPO_ROOT, default_runs_dir
from lmcourse.profiles import PROFILE_ENV, resolve_profile_name
from lmcourse.tracking import METRICS_FILE, RUN_DIR_ENV, write_json_atomic

HEADLESS_PROGRESS_ENV = "TQDM_DISABLE"  # set for the kernels of headless runs
# torch's profiler (kineto) writes "USDT: ... SyncActivityProfilerHandler.cpp ... profiler_start/stop" to the
# kernel's stderr, which is the console of a headless run; its messages go up to level 5 (USDT), so 6 mutes them.
# Set only where the user has not set it.
KINETO_LOG_ENV, KINETO_QUIET = "KINETO_LOG_LEVEL", "6"
# the kernel's own log on the console: "Kernel is running over TCP without encryption" (a warning at every start)
# and, under load, "KeyboardInterrupt caught in kernel" (an error: jupyter_client sends SIGINT before every
# shutdown). Critical only; a kernel that dies still fails its run, with the error in metrics.json and the output
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def git_commit(cwd: Path = REPO_ROOT) -> str | None:
    """The commit of the checkout (with ``-dirty`` when it has changes), or ``None`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters declared in the notebook's ``parameters`` cell (name -> inferred info)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The course notebooks ``NN_topic.ipynb`` in order."""
    folder = Path(folder or NOTEBOOKS_DIR)
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def find_notebook(name: str | os.PathLike) -> Path:
    """A notebook path from a path, a file name or a prefix such as ``00`` (looked up in notebooks/)."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    candidates = [p for p in list_notebooks() if p.name == str(name) or p.stem == str(name)
                  or p.name.startswith(f"{name}_")]
    if len(candidates) == 1:
        return candidates[0]
    known = ", ".join(p.name for p in list_notebooks())
    raise LmcourseError(f"notebook {str(name)!r} not found; give a path or one of: {known}")


@dataclass
class RunResult:
    notebook: Path
    run_dir: Path
    output: Path
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "completed"


SEED_RANGE = (0, 2**32 - 1)  # what numpy and torch accept
POSITIVE_PARAMETERS = ("learning_rate", "num_epochs", "batch_size", "max_length")  # None, or a number > 0
BOOLEAN_PARAMETERS = ("run_wikitext", "keep_models", "analysis")


def check_parameters(notebook: str, params: dict[str, Any]) -> None:
    """Check the values of a notebook's papermill parameters where they enter (``lmcourse run -p``, ``course``,
    benchmark specs), before any folder is made or cell runs: a seed is an integer in :data:`SEED_RANGE`, sizes
    and rates in :data:`POSITIVE_PARAMETERS` are ``None`` or > 0 (integers where they count), switches are true
    or false, ``task``/``tasks`` name GLUE tasks. One :class:`ArgumentError` names the parameter and what it
    must be."""

    def bad(name: str, value: Any, what: str) -> ArgumentError:
        return ArgumentError(f"{notebook}: parameter {name} = {value!r} is not {what}")

    for name, value in params.items():
        if name == "seed" or name.endswith("_seed"):
            low, high = SEED_RANGE
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(name, value, f"a seed: an integer from {low} to 2**32 - 1")
        elif name in POSITIVE_PARAMETERS and value is not None:
            counts = name in ("batch_size", "max_length")
            kind = int if counts else int | float
            if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or value != value:
                raise bad(name, value, "a positive integer (or None: the profile's)" if counts
                          else "a positive number (or None: the profile's)")
        elif name in BOOLEAN_PARAMETERS and not isinstance(value, bool):
            raise bad(name, value, "true or false")
        elif name in ("task", "tasks") and value is not None:
            from lmcourse.data import GLUE_TASKS

            trainable = [t for t in GLUE_TASKS if t != "ax"]  # AX is MNLI's diagnostic set: no training split
            names = [value] if name == "task" else value
            if not isinstance(names, list) or not names or any(n not in trainable for n in names):
                raise bad(name, value, ("a GLUE task" if name == "task" else "a list of GLUE tasks")
                          + f" ({', '.join(trainable)}), or None: the profile's")


def run_notebook(
    notebook: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    profile: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    group: str | None = None,
    run_id: str | None = None,
    run_dir: str | os.PathLike | None = None,
    extra_info: dict[str, Any] | None = None,
    progress: bool = True,
    kernel_name: str = "python3",
    epilogue: str | None = None,
) -> RunResult:
    """Execute ``notebook`` with papermill into ``runs/<group or notebook>/<run-id>/``.

    Unknown parameter names or profiles fail before anything runs. The kernel sees
    ``LMCOURSE_RUN_DIR`` (where :func:`lmcourse.tracking.record_metrics` writes) and ``LMCOURSE_PROFILE``.
    ``epilogue``: code run in one more cell after the notebook's last (what :func:`gpu_check` records); the
    executed notebook under the run folder shows it, the notebook itself is not changed.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from lmcourse.runtime import hardware_info, library_versions

    nb = find_notebook(notebook)
    params = dict(parameters or {})
    declared = notebook_parameters(nb)
    if "profile" not in declared:
        raise ArgumentError(f"{nb.name} has no 'profile' parameter in a cell tagged 'parameters'")
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ArgumentError(f"{nb.name} has no parameter(s) {unknown}; its parameters are {sorted(declared)}")
    if "profile" in params and profile is None:
        profile = params.pop("profile")
    params["profile"] = resolve_profile_name(profile)
    check_parameters(nb.name, params)

    if run_dir:
        folder = Path(run_dir)
    else:
        folder = Path(runs_dir or default_runs_dir()) / (group or nb.stem) / (run_id or new_run_id())
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / nb.name
    metrics_path = folder / METRICS_FILE
    metrics_path.unlink(missing_ok=True)

    import tqdm  # noqa: F401 - imported (and its TQDM_* defaults read) before TQDM_DISABLE is set below

    env_before = {k: os.environ.get(k) for k in (RUN_DIR_ENV, PROFILE_ENV, HEADLESS_PROGRESS_ENV, KINETO_LOG_ENV)}
    os.environ.setdefault(KINETO_LOG_ENV, KINETO_QUIET)
    os.environ[RUN_DIR_ENV] = str(folder.resolve())
    os.environ[PROFILE_ENV] = params["profile"]
    # no progress bars inside the kernel: the executed notebook under runs/ keeps readable outputs (this
    # process's own bar over the cells is unaffected: tqdm reads TQDM_* when it is imported)
    os.environ[HEADLESS_PROGRESS_ENV] = "1"
    source = nb
    if epilogue:
        import nbformat

        copy = nbformat.read(nb, as_version=4)
        copy.cells.append(nbformat.v4.new_code_cell(epilogue, metadata={"tags": ["epilogue"]}))
        source = folder / f".input-{nb.name}"
        nbformat.write(copy, source)
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    status, error = "completed", None
    try:
        papermill.execute_notebook(
            str(source), str(output), parameters=params, kernel_name=kernel_name, cwd=str(nb.parent),
            progress_bar=progress, log_output=False, report_mode=False, extra_arguments=KERNEL_ARGUMENTS,
        )
    except PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}"
    except KeyboardInterrupt:
        status, error = "interrupted", "KeyboardInterrupt"
        raise
    except Exception as exc:  # kernel died, bad notebook, ...
        status, error = "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    finally:
        wall = time.perf_counter() - started
        if source != nb:
            source.unlink(missing_ok=True)
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        recorded = {}
        if metrics_path.is_file():
            try:
                recorded = json.loads(metrics_path.read_text()).get("metrics", {})
            except (OSError, json.JSONDecodeError):
                recorded = {}
        summary = {
            "notebook": nb.name,
            "run_dir": str(folder),
            "status": status,
            "error": error,
            "profile": params["profile"],
            "parameters": params,
            "metrics": recorded,
            "wall_time_s": round(wall, 3),
            "started_at": started_at,
            "hardware": hardware_info(),
            "versions": library_versions(),
            "git_commit": git_commit(),
            **(extra_info or {}),
        }
        write_json_atomic(metrics_path, summary)
    return RunResult(nb, folder, output, status, recorded, error, wall)


# keys that stand for a whole run when it recorded them (bench runs: ``score``; notebook 07: the GLUE average)
MAIN_METRIC_KEYS = ("score", "glue/average_score")


def main_metric(metrics: dict[str, Any]) -> tuple[str | None, Any]:
    """The run's headline number: the first of :data:`MAIN_METRIC_KEYS` it recorded, else its first metric."""
    for key in MAIN_METRIC_KEYS:
        if key in metrics:
            return key, metrics[key]
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            return key, value
    return None, None


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every run folder under ``runs_dir`` (default :func:`default_runs_dir`) that has a ``metrics.json``:
    run, notebook, profile, status, main metric, wall time, start, and its TensorBoard event folders."""
    import json

    from lmcourse.tensorboard_logs import event_folders

    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    rows = []
    for path in sorted(root.rglob(METRICS_FILE)) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {"status": "unreadable metrics.json"}
        key, value = main_metric(data.get("metrics") or {})
        rows.append({"run": str(path.parent.relative_to(root)), "notebook": data.get("notebook"),
                     "profile": data.get("profile"), "status": data.get("status"), "main metric": key,
                     "value": value, "wall time s": data.get("wall_time_s"), "started": data.get("started_at"),
                     "tensorboard": len(event_folders(path.parent))})
    return rows


# ---------------------------------------------------------------------------------- the CUDA check
GPU_CHECK_EPILOGUE = """\
# appended by `lmcourse gpu-check` (not part of the notebook): the device this run used, its precision policy
# and the peak of PyTorch's CUDA allocator over the whole run
import torch as _torch

from lmcourse.runtime import bf16_supported as _bf16_supported
from lmcourse.runtime import resolve_device as _resolve_device
from lmcourse.tracking import record_metrics as _record_metrics

_device = _resolve_device()
_record_metrics({"device": str(_device),
                 "gpu": _torch.cuda.get_device_name(_device) if _device.type == "cuda" else None,
                 "dtype": "bf16 autocast" if _bf16_supported(_device) else "fp32",
                 "peak_memory_bytes": _torch.cuda.max_memory_allocated(_device) if _device.type == "cuda" else None},
                prefix="gpu_check")
"""
GPU_CHECK_BUDGET_S = 480  # every notebook at smoke sizes on one GPU


def gpu_check(notebooks: list[Path], device: str = "cuda", runs_dir: str | os.PathLike | None = None,
              run_id: str | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Run ``notebooks`` in the smoke profile with ``$LMCOURSE_DEVICE=device`` (so every context, model and
    timer takes its CUDA path: bf16 autocast where supported, CUDA synchronisation, the allocator's peak)
    into ``runs/gpu-check/<run-id>/<notebook>/``; one row per notebook: status, seconds, device, dtype, peak
    memory, error. :func:`lmcourse.cli.cmd_gpu_check` refuses to start without CUDA."""
    from lmcourse.runtime import DEVICE_ENV

    root = Path(runs_dir or default_runs_dir()) / "gpu-check" / (run_id or new_run_id())
    before = os.environ.get(DEVICE_ENV)
    os.environ[DEVICE_ENV] = device
    rows = []
    try:
        for nb in notebooks:
            r = run_notebook(nb, profile="smoke", run_dir=root / Path(nb).stem, progress=progress,
                             epilogue=GPU_CHECK_EPILOGUE, extra_info={"gpu_check": True})
            peak = r.metrics.get("gpu_check/peak_memory_bytes")
            rows.append({"notebook": r.notebook.name, "status": r.status, "seconds": r.wall_time_s,
                         "device": r.metrics.get("gpu_check/device", ""), "dtype": r.metrics.get("gpu_check/dtype", ""),
                         "peak memory MiB": f"{peak / 2**20:.0f}" if isinstance(peak, int | float) else "",
                         "error": (r.error or "").splitlines()[0] if r.error else "", "run_dir": r.run_dir})
    finally:
        if before is None:
            os.environ.pop(DEVICE_ENV, None)
        else:
            os.environ[DEVICE_ENV] = before
    return rows
