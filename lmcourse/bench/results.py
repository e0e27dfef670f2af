"""Benchmark results as data: the results-table schema, one row a run, the leaderboard
(:mod:`~lmcourse.bench.aggregation` writes a sweep's files)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lmcourse.bench.spec import BenchSpec
from lmcourse.errors import LmcourseError
from lmcourse.tracking import METRICS_FILE

# Per-task numbers a fine-tuning notebook records as ``<task>/<name>``; the benchmark reads exactly these.
METRIC_NAMES = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "combined_score")
PERF_NAMES = ("train_tokens_per_s", "mfu", "peak_memory_bytes", "train_seconds", "trainable_params", "train_flops")

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
    from lmcourse.metrics import mnli_average, task_score

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
        score = mnli_average(score, values["mnli_mismatched_accuracy"])  # GLUE counts MNLI as m/mm averaged
    hw, versions = summary.get("hardware") or {}, summary.get("versions") or {}
    return {
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


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.1f}"


def leaderboard_markdown(spec_name: str, table, rows: list[dict[str, Any]]) -> str:
    """The leaderboard as Markdown: one line per model × task, scores in percent."""
    lines = [f"# Benchmark `{spec_name}`", "",
             f"{sum(r['status'] == 'completed' for r in rows)} completed, "
             f"{sum(r['status'] != 'completed' for r in rows)} failed runs. Scores are dev-set task scores in "
             "percent (two-metric tasks averaged, as GLUE does), mean ± std over seeds; `published` is the "
             "reference in data/references/glue_dev.yaml, `previous` the last aggregate of this spec.", "",
             "| model | profile | task | runs | score | published | previous | |", "|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        std = "" if r["std"] is None or (isinstance(r["std"], float) and math.isnan(r["std"])) or r["runs"] < 2 \
            else f" ± {100 * r['std']:.1f}"  # one run has no spread
        flag = "⚠ regression" if r.get("regression") else ""
        lines.append(f"| {r['model']} | {r['profile']} | {r['task']} | {r['runs']} | {_fmt(r['mean'])}{std} | "
                     f"{_fmt(r.get('published'))} | {_fmt(r.get('previous'))} | {flag} |")
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- `{r['run_id']}`: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results.csv as dicts, empty cells as ``None`` (no validation: :func:`load_results`)."""
    import pandas as pd

    df = pd.read_csv(path)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
            for rec in df.to_dict("records")]


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate a results.csv (for the report notebook)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise LmcourseError(f"no benchmark results at {path}; run `lmcourse bench <spec>` first")
    rows = read_csv_rows(path)
    for row in rows:
        for col, typ in RESULT_COLUMNS.items():
            if typ is str and row.get(col) is not None:
                row[col] = str(row[col])
            if typ is int and row.get(col) is not None:
                row[col] = int(row[col])
    validate_results(rows)
    return rows
