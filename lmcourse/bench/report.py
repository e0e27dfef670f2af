"""For the report: find the results to report on, and the published reference scores to compare with."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from lmcourse.errors import LmcourseError
from lmcourse.paths import SHIPPED_DATA_DIR

REFERENCES_FILE = SHIPPED_DATA_DIR / "references" / "glue_dev.yaml"
SHIPPED_RESULTS_DIR = SHIPPED_DATA_DIR / "results"  # the project's own measured results (lmcourse.bench.shipped)
# Short model names whose published numbers are filed under another id (the checkpoint they started from).
REFERENCE_ALIASES = {"minilm-l6": "nreimers/MiniLM-L6-H384-uncased"}


def find_results(results: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
                 prefer: Iterable[str] = ("gpu", "cpu", "smoke"), shipped: bool = False,
                 shipped_dir: str | os.PathLike | None = None) -> Path:
    """The results.csv to report on; it only looks, it never runs a benchmark.

    ``results`` may be a results.csv, a bench folder or a bench name under ``runs_dir`` (default: the
    checkout's ``runs/``). With ``None`` the first of ``prefer`` that has a ``runs_dir/<name>/results.csv``
    is used. With ``shipped``, the project's shipped results (``data/results/<name>/``, or ``shipped_dir``) are
    the fallback when you have no runs of your own: a bench name, or the first of ``prefer``, found there.
    :func:`is_shipped` tells which of the two a path is. When nothing is found,
    :class:`~lmcourse.errors.LmcourseError` says which command makes some.
    """
    from lmcourse.paths import default_runs_dir

    given_runs_dir = runs_dir is not None
    runs_dir = Path(runs_dir or default_runs_dir())
    shipped_root = Path(shipped_dir or SHIPPED_RESULTS_DIR)
    prefer = tuple(prefer)
    if results is not None:
        path = Path(results)
        candidates = [path, path / "results.csv", runs_dir / str(results) / "results.csv"]
        if shipped:
            candidates.append(shipped_root / str(results) / "results.csv")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        also = f" or under {shipped_root}" if shipped else ""
        raise LmcourseError(f"no benchmark results at {results!r} (looked for a results.csv there and under "
                            f"{runs_dir}{also}); run `lmcourse bench <spec>` first")
    for root in (runs_dir, shipped_root) if shipped else (runs_dir,):
        for name in prefer:
            candidate = root / name / "results.csv"
            if candidate.is_file():
                return candidate
    spec = "smoke" if "smoke" in prefer or not prefer else prefer[0]
    command = f"lmcourse bench {spec}" + (f" --runs-dir {runs_dir}" if given_runs_dir else "")
    looked = ", ".join(f"{name}/results.csv" for name in prefer) or "nothing"
    where = f"{runs_dir} or {shipped_root}" if shipped else str(runs_dir)
    raise LmcourseError(f"no benchmark results under {where} (looked for {looked}); "
                        f"run `{command}` first to make some")


def is_shipped(path: str | os.PathLike, shipped_dir: str | os.PathLike | None = None) -> bool:
    """Whether a results.csv (or folder) is one of the project's shipped results rather than your runs."""
    root = Path(shipped_dir or SHIPPED_RESULTS_DIR).resolve()
    path = Path(path).resolve()
    return path == root or root in path.parents


def load_reference_entries(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The raw ``models`` mapping of ``data/references/glue_dev.yaml``: model id -> ``{source, tasks}``.

    ``tasks`` maps a task to the metric values its source gives (``accuracy``, ``f1``, ... or ``score``),
    as written in the file; :func:`load_references` turns them into one task score each.
    """
    path = Path(path or REFERENCES_FILE)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(data.get("models") or {})


def load_references(path: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """Published dev-set task scores: model -> task -> score (two-metric tasks averaged, as GLUE does).

    A value stored as ``score`` (a source that gives one number without naming the metric) is used as
    the task score; MNLI matched and mismatched are averaged into one ``mnli`` score. Models are keyed by
    the id in the file and by every lmcourse short name that resolves to it.
    """
    from lmcourse.metrics import mnli_average, task_score
    from lmcourse.models import KNOWN_MODELS

    out: dict[str, dict[str, float]] = {}
    for model, entry in load_reference_entries(path).items():
        tasks: dict[str, float] = {}
        for task, values in (entry.get("tasks") or {}).items():
            try:
                values = {k: float(v) for k, v in values.items()}
                tasks[task] = values["score"] if "score" in values else task_score(task, values)
            except (LmcourseError, TypeError, ValueError, AttributeError):
                continue
        if "mnli" in tasks and "mnli_mismatched" in tasks:
            tasks["mnli"] = mnli_average(tasks["mnli"], tasks.pop("mnli_mismatched"))
        out[str(model)] = tasks
    for short, known in KNOWN_MODELS.items():
        target = REFERENCE_ALIASES.get(short)
        if target is None and known.source == "Hub":
            target = known.locate()
        if target in out:
            out.setdefault(short, out[target])
    return out
