"""Recording a notebook's results so that ``lmcourse run`` and the benchmark suite can collect them.

A notebook calls :func:`record_metrics` (or :func:`record`); when it runs under ``lmcourse run`` the
environment variable ``LMCOURSE_RUN_DIR`` points at its run folder and every call rewrites
``metrics.json`` there (atomically, so a crash never leaves half a file). Run interactively, the values
are only kept in memory and shown.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUN_DIR_ENV = "LMCOURSE_RUN_DIR"
METRICS_FILE = "metrics.json"

_recorded: dict[str, Any] = {}


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy/torch scalars become floats/ints, NaN becomes None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_jsonable(data), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_dir() -> Path | None:
    """The folder of the current ``lmcourse run``, or ``None`` when run interactively."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value) if value else None


def record_metrics(metrics: Mapping[str, Any], prefix: str | None = None) -> dict[str, Any]:
    """Record several named values (``prefix/name`` when a prefix is given); returns all recorded."""
    for name, value in metrics.items():
        key = f"{prefix}/{name}" if prefix else str(name)
        _recorded[key] = _jsonable(value)
    folder = run_dir()
    if folder is not None:
        write_json_atomic(folder / METRICS_FILE, {"metrics": dict(_recorded)})
    return dict(_recorded)


def record(name: str, value: Any) -> dict[str, Any]:
    """Record one named value."""
    return record_metrics({name: value})


def recorded() -> dict[str, Any]:
    """Everything recorded so far in this process."""
    return dict(_recorded)


def reset() -> None:
    """Forget what was recorded (tests, or a notebook that restarts an experiment)."""
    _recorded.clear()
