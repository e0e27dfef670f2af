"""The project's own measured results, shipped in ``data/results/<bench>/``, and a rerun compared against them.

A finished sweep (every planned run of the spec completed with the spec's parameters) is shipped with
``lmcourse bench <spec> --ship`` (:func:`ship_results`): its rows, read from the run folders exactly as
``runs/<bench>/results.csv`` holds them, go to ``data/results/<bench>/results.csv`` (the schema of
:data:`~lmcourse.bench.results.RESULT_COLUMNS`: per-row hardware, library versions, git commit and start
time), with ``manifest.yaml`` (what it is: the spec, when, on what hardware with which versions at which
commit, how to regenerate it) and ``leaderboard.md``. An incomplete sweep (failed, missing or stale runs) is
refused unless ``allow_incomplete`` is given; the manifest then says what is missing.

A later ``lmcourse bench <spec>`` compares its results with the shipped ones per model × task × profile
(:func:`compare_with_shipped`): mean ± std over seeds of both, and the verdict of
:func:`lmcourse.spread.compare`: a difference counts only when the
95 % confidence interval of the difference (Welch's t: a rerun and the shipped runs share no seeds' draws)
excludes 0; anything inside is "no measurable difference at this budget".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lmcourse.bench.report import SHIPPED_RESULTS_DIR
from lmcourse.bench.results import RESULT_COLUMNS, collect_results, leaderboard, leaderboard_markdown, load_results
from lmcourse.bench.spec import BenchSpec, load_spec
from lmcourse.errors import LmcourseError
from lmcourse.paths import REPO_ROOT, SHIPPED_DATA_DIR

MANIFEST_FILE = "manifest.yaml"
MANIFEST_HEADER = """\
# Measured results the project ships: one row a run of the benchmark spec below, in the results-table schema
# of lmcourse/bench/results.py (RESULT_COLUMNS). Written by `lmcourse bench <spec> --ship`; do not edit by
# hand (results_sha256 is checked when the results are read). `regenerate` says how to make them again.
"""
KEYS = ("model", "task", "profile")
# The status of a model × task against the shipped results (``status`` of :func:`compare_with_shipped`).
STATUSES = ("inside the interval", "higher", "lower", "single seed")


@dataclass(frozen=True)
class ShippedResults:
    """``data/results/<bench>/``: its validated rows and its manifest."""

    bench: str
    folder: Path
    rows: list[dict[str, Any]]
    manifest: dict[str, Any]

    @property
    def results_file(self) -> Path:
        return self.folder / "results.csv"

    def describe(self) -> str:
        """One line: where, which commit(s), when, on what."""
        m = self.manifest
        hw = "; ".join(h.get("label", "?") for h in m.get("hardware") or []) or "unknown hardware"
        commits = ", ".join(str(c)[:12] for c in m.get("git_commits") or []) or "unknown commit"
        when = m.get("runs_started") or {}
        complete = "" if m.get("complete") else " (INCOMPLETE sweep)"
        return (f"{_display(self.folder)}: {len(self.rows)} runs{complete}, commit {commits}, "
                f"{when.get('first', '?')[:10]} to {when.get('last', '?')[:10]}, {hw}")


def _display(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


def _csv_digest(path: Path) -> str:
    """sha256 of the file with line endings normalised (a checkout with CRLF endings reads the same)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def sweep_state(spec: BenchSpec, runs_dir: str | os.PathLike) -> dict[str, list[str]]:
    """The run ids of the spec by state: ``completed``, ``failed`` (or interrupted), ``stale`` (a folder
    from other parameters) and ``missing`` (never run)."""
    import json

    from lmcourse.tracking import METRICS_FILE

    state: dict[str, list[str]] = {"completed": [], "failed": [], "stale": [], "missing": []}
    for run in spec.runs:
        path = run.folder(runs_dir) / METRICS_FILE
        if not path.is_file():
            state["missing"].append(run.run_id)
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            state["missing"].append(run.run_id)
            continue
        if data.get("parameters") != json.loads(json.dumps(run.parameters, default=str)):
            state["stale"].append(run.run_id)
        elif data.get("status") == "completed":
            state["completed"].append(run.run_id)
        else:
            state["failed"].append(run.run_id)
    return state


def _grouped(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> list[dict[str, Any]]:
    """Distinct values of ``cols`` with the number of rows that have them."""
    counts: dict[tuple, int] = {}
    for r in rows:
        key = tuple(r.get(c) for c in cols)
        counts[key] = counts.get(key, 0) + 1
    return [{**dict(zip(cols, k)), "runs": n} for k, n in counts.items()]


def build_manifest(spec: BenchSpec, rows: list[dict[str, Any]], state: Mapping[str, list[str]],
                   results_file: Path) -> dict[str, Any]:
    """What a shipped folder is: spec, completeness, dates, hardware, versions, commits, how to regenerate."""
    hardware = _grouped(rows, ("cpu_model", "cpu_cores", "gpu", "device"))
    for h in hardware:
        h["label"] = f"{h['device']}: {h['gpu'] or h['cpu_model']} ({h['cpu_cores']} cores)"
    started = sorted(str(r["started_at"]) for r in rows if r.get("started_at"))
    name = spec.name
    shipped_spec = (SHIPPED_DATA_DIR / "bench" / f"{name}.yaml").resolve() == spec.path.resolve()
    arg = name if shipped_spec else _display(spec.path)
    return {
        "bench": name,
        "description": spec.description,
        "spec": _display(spec.path),
        "spec_sha256": hashlib.sha256(spec.path.read_bytes().replace(b"\r\n", b"\n")).hexdigest(),
        "complete": not (state["failed"] or state["stale"] or state["missing"]),
        "planned_runs": len(spec.runs),
        "runs": {k: len(v) for k, v in state.items()},
        "not_completed": {k: list(state[k]) for k in ("failed", "stale", "missing") if state[k]},
        "rows": len(rows),
        "results_sha256": _csv_digest(results_file),
        "profiles": sorted({str(r["profile"]) for r in rows}),
        "runs_started": {"first": started[0] if started else None, "last": started[-1] if started else None},
        "shipped_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "hardware": hardware,
        "versions": _grouped(rows, ("torch", "transformers")),
        "git_commits": sorted({str(r["git_commit"]) for r in rows if r.get("git_commit")}),
        # the sweep (it resumes: only what is not completed runs), then shipping it
        "regenerate": [f"lmcourse bench {arg}", f"lmcourse bench {arg} --ship"],
    }


def ship_results(spec: str | os.PathLike | BenchSpec, runs_dir: str | os.PathLike | None = None,
                 shipped_dir: str | os.PathLike | None = None, allow_incomplete: bool = False,
                 keep_shipped: bool = False) -> Path:
    """Copy a finished sweep's results into ``<shipped_dir>/<bench>/`` (default ``data/results/``).

    The rows are those of ``runs/<bench>/results.csv``, read from the run folders and validated. A sweep
    with a failed, interrupted, missing or stale run (a folder from other parameters) is refused with one
    :class:`~lmcourse.errors.LmcourseError` saying what is missing, unless ``allow_incomplete`` (then the
    manifest says ``complete: false`` and lists them). ``keep_shipped`` completes this sweep with the rows
    already shipped for the runs it lacks (same run id, hence the same parameters; each row keeps its own
    commit, date and hardware, and the manifest lists them under ``kept_from_shipped``): a sweep finished over
    several sittings ships as one. Returns the folder written.
    """
    import pandas as pd

    from lmcourse.bench.report import load_references
    from lmcourse.paths import default_runs_dir

    spec = spec if isinstance(spec, BenchSpec) else load_spec(spec)
    runs_dir = Path(runs_dir or default_runs_dir())
    state = sweep_state(spec, runs_dir)
    n = len(spec.runs)
    kept: list[dict[str, Any]] = []
    if keep_shipped:
        previous = load_shipped(spec.name, shipped_dir)
        if previous is None:
            raise LmcourseError(f"--keep-shipped: there are no shipped results of {spec.name!r} under "
                                f"{_display(Path(shipped_dir or SHIPPED_RESULTS_DIR))} to keep; drop the option")
        lacking = {i for k in ("failed", "stale", "missing") for i in state[k]}
        kept = [dict(r) for r in previous.rows if r["run_id"] in lacking and r.get("status") == "completed"]
        kept_ids = {r["run_id"] for r in kept}
        for k in ("failed", "stale", "missing"):
            state[k] = [i for i in state[k] if i not in kept_ids]
        state["completed"] = [*state["completed"], *sorted(kept_ids)]
    if not state["completed"]:
        raise LmcourseError(f"nothing to ship for {spec.name!r}: none of its {n} runs has completed under "
                            f"{runs_dir / spec.name}; run `lmcourse bench {spec.name}` first")
    problems = [f"{len(state[k])} {k} ({', '.join(state[k][:3])}{', ...' if len(state[k]) > 3 else ''})"
                for k in ("failed", "stale", "missing") if state[k]]
    if problems and not allow_incomplete:
        raise LmcourseError(
            f"will not ship an incomplete sweep of {spec.name!r}: {len(state['completed'])} of {n} runs completed, "
            f"{'; '.join(problems)}. Finish it with `lmcourse bench {spec.name}` (it resumes and retries failed "
            "runs), or pass --allow-incomplete to ship it as it is (the manifest then says so)")
    planned = {r.run_id for r in spec.runs}
    order = {r.run_id: i for i, r in enumerate(spec.runs)}
    kept_ids = {r["run_id"] for r in kept}
    rows = [r for r in collect_results(spec, runs_dir) if r["run_id"] in planned
            and r["run_id"] not in state["stale"] and r["run_id"] not in kept_ids]
    rows = sorted(rows + kept, key=lambda r: order[r["run_id"]])
    state = {**state, "completed": [r["run_id"] for r in rows if r.get("status") == "completed"]}
    folder = Path(shipped_dir or SHIPPED_RESULTS_DIR) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    results_file = folder / "results.csv"
    tmp = results_file.with_suffix(".csv.tmp")
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, results_file)
    reread = load_results(results_file)  # what a reader will see: validated again after the round trip
    manifest = build_manifest(spec, reread, state, results_file)
    if kept:
        manifest["kept_from_shipped"] = sorted(kept_ids, key=order.__getitem__)
    (folder / MANIFEST_FILE).write_text(MANIFEST_HEADER + yaml.safe_dump(manifest, sort_keys=False,
                                                                         allow_unicode=True), encoding="utf-8")
    shipped = ShippedResults(spec.name, folder, reread, manifest)
    board = leaderboard_markdown(spec.name, leaderboard(reread, load_references()), reread)
    board = board.replace(f"# Benchmark `{spec.name}`\n", f"# Benchmark `{spec.name}`: shipped results\n\n"
                          f"{shipped.describe()}. Regenerate: "
                          + " then ".join(f"`{c}`" for c in manifest["regenerate"]) + ".\n", 1)
    (folder / "leaderboard.md").write_text(board, encoding="utf-8")
    return folder


def load_shipped(bench: str, shipped_dir: str | os.PathLike | None = None) -> ShippedResults | None:
    """The shipped results of ``bench`` (``None`` when there are none), checked against their manifest."""
    folder = Path(shipped_dir or SHIPPED_RESULTS_DIR) / str(bench)
    results_file, manifest_file = folder / "results.csv", folder / MANIFEST_FILE
    if not results_file.is_file() and not manifest_file.is_file():
        return None
    where = _display(folder)
    if not results_file.is_file() or not manifest_file.is_file():
        raise LmcourseError(f"{where} needs both results.csv and {MANIFEST_FILE}; ship it again with "
                            f"`lmcourse bench {bench} --ship`")
    manifest = yaml.safe_load(manifest_file.read_text(encoding="utf-8")) or {}
    if manifest.get("results_sha256") != _csv_digest(results_file):
        raise LmcourseError(f"{where}/results.csv is not the file {MANIFEST_FILE} describes (its sha256 "
                            f"differs): it was edited after shipping; ship it again with `lmcourse bench {bench} "
                            "--ship`")
    rows = load_results(results_file)
    if manifest.get("bench") != bench or manifest.get("rows") != len(rows) or \
            {r["bench"] for r in rows} != {bench}:
        raise LmcourseError(f"{where}: {MANIFEST_FILE} says bench {manifest.get('bench')!r} with "
                            f"{manifest.get('rows')} rows; results.csv has {len(rows)} rows of "
                            f"{sorted({r['bench'] for r in rows})}")
    return ShippedResults(str(bench), folder, rows, manifest)


def _scores(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("status") == "completed" and r.get("score") is not None:
            out.setdefault(tuple(r[k] for k in KEYS), []).append(100.0 * float(r["score"]))
    return out


def compare_with_shipped(rows: Sequence[Mapping[str, Any]], shipped: ShippedResults | Sequence[Mapping[str, Any]]):
    """Per model × task × profile present in both: task score (percent) mean ± std over seeds of ``rows`` and of
    the shipped rows, and the verdict of :func:`lmcourse.spread.compare` (a DataFrame).

    ``status`` is ``lower`` / ``higher`` (the 95 % Welch interval of the difference excludes 0), ``inside the
    interval``, or ``single seed`` (one side has one run: no interval, not measured); ``regression`` is
    ``status == "lower"``. A rerun and the shipped runs are separate draws, so the comparison is unpaired."""
    import pandas as pd

    from lmcourse.spread import compare

    theirs = _scores(shipped.rows if isinstance(shipped, ShippedResults) else shipped)
    out = []
    for key, ours in _scores(rows).items():
        if key not in theirs:
            continue
        c = compare(ours, theirs[key], names=("this run", "shipped"))
        if c.a.n < 2 or c.b.n < 2:
            status = "single seed"
        elif not c.significant:
            status = "inside the interval"
        else:
            status = "higher" if c.difference > 0 else "lower"
        out.append({**dict(zip(KEYS, key)), "runs": c.a.n, "mean": c.a.mean, "std": c.a.std,
                    "this run": c.a.format(1), "shipped_runs": c.b.n, "shipped_mean": c.b.mean,
                    "shipped_std": c.b.std, "shipped": c.b.format(1), "difference": c.difference,
                    "ci_low": c.interval[0], "ci_high": c.interval[1], "status": status,
                    "regression": status == "lower", "verdict": c.verdict})
    columns = [*KEYS, "runs", "mean", "std", "this run", "shipped_runs", "shipped_mean", "shipped_std", "shipped",
               "difference", "ci_low", "ci_high", "status", "regression", "verdict"]
    return pd.DataFrame(out, columns=columns)


def comparison_summary(comparison, shipped: ShippedResults) -> str:
    """One line for the printed summary: how many model × task are lower, higher, inside the interval."""
    if comparison.empty:
        return f"against the shipped results {shipped.describe()}: no model × task in common"
    counts = comparison["status"].value_counts().to_dict()
    words = {"single seed": "with a single seed (not measured)"}
    parts = ", ".join(f"{counts[s]} {words.get(s, s)}" for s in STATUSES if counts.get(s))
    lower = comparison[comparison["regression"]]
    worst = "" if lower.empty else "; ⚠ lower beyond the interval: " + ", ".join(
        f"{r['model']} · {r['task']} ({r['difference']:+.1f} points)" for r in lower.to_dict("records"))
    return f"against the shipped results {shipped.describe()}: {parts}{worst}"


def comparison_markdown(comparison, shipped: ShippedResults) -> str:
    """The comparison as a Markdown section of the leaderboard."""
    lines = ["", "## Against the shipped results", "",
             f"{shipped.describe()}. Task scores in percent, mean ± std over seeds; a difference counts only "
             "when its 95 % confidence interval (Welch's t) excludes 0 (lmcourse.spread.compare).", ""]
    if comparison.empty:
        return "\n".join([*lines, "No model × task of this run is in the shipped results.", ""])
    lines += ["| model | profile | task | this run | shipped | verdict | |", "|---|---|---|---|---|---|---|"]
    for r in comparison.to_dict("records"):
        flag = "⚠ lower than shipped" if r["regression"] else ""
        lines.append(f"| {r['model']} | {r['profile']} | {r['task']} | {r['this run']} | {r['shipped']} | "
                     f"{r['verdict']} | {flag} |")
    return "\n".join(lines) + "\n"
