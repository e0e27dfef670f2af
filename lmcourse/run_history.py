"""Where each notebook has run: the last complete run of every notebook in every profile, from the run folders
under ``runs/`` and the shipped results in ``data/results/`` (``lmcourse runs --profiles``; its ``--markdown``
is the README's profile-table column)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmcourse.paths import default_runs_dir
from lmcourse.runner import list_notebooks
from lmcourse.tracking import METRICS_FILE


def machine_label(hardware: dict[str, Any]) -> str:
    """``cpu: <model> (<n> cores)`` or ``cuda: <GPU name> (<n> cores)``, as the shipped manifests write it."""
    if not hardware:
        return "unknown machine"
    device = str(hardware.get("device") or "?").split(":")[0]
    return f"{device}: {hardware.get('gpu') or hardware.get('cpu_model') or '?'} ({hardware.get('cpu_cores')} cores)"


def _commit(value: Any) -> str:
    text = str(value or "")
    return (text[:7] + ("-dirty" if text.endswith("-dirty") else "")) if text else "unknown commit"


def complete_runs(runs_dir: str | os.PathLike | None = None, shipped_dir: str | os.PathLike | None = None, *,
                  local: bool = True) -> list[dict[str, Any]]:
    """Every completed run of a course notebook that is on record: the run folders under ``runs_dir`` (default
    :func:`default_runs_dir`; ``local=False`` leaves them out) and the rows of the shipped results
    (``data/results/*/results.csv``). Each: notebook, profile, started (ISO, UTC), commit, machine, wall time,
    the parameters other than profile and seed, and where it is recorded."""
    from lmcourse.bench.report import SHIPPED_RESULTS_DIR
    from lmcourse.bench.shipped import load_shipped

    rows: list[dict[str, Any]] = []
    if local:
        root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        for path in sorted(root.rglob(METRICS_FILE)) if root.is_dir() else []:
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if data.get("status") != "completed" or not data.get("notebook") or not data.get("started_at"):
                continue
            rows.append({"notebook": data["notebook"], "profile": data.get("profile"),
                         "started": str(data["started_at"]), "commit": data.get("git_commit"),
                         "machine": machine_label(data.get("hardware") or {}), "wall_time_s": data.get("wall_time_s"),
                         "parameters": data.get("parameters") or {},
                         "where": str(path.parent.relative_to(root.parent) if root.parent != root else path.parent)})
    shipped_root = Path(shipped_dir or SHIPPED_RESULTS_DIR)
    for folder in sorted(p for p in shipped_root.iterdir() if p.is_dir()) if shipped_root.is_dir() else []:
        shipped = load_shipped(folder.name, shipped_root)
        for r in shipped.rows if shipped is not None else []:
            if r.get("status") != "completed" or not r.get("started_at"):
                continue
            params = r.get("parameters")
            rows.append({"notebook": r["notebook"], "profile": r.get("profile"), "started": str(r["started_at"]),
                         "commit": r.get("git_commit"), "machine": machine_label(r),
                         "wall_time_s": r.get("wall_time_s"),
                         "parameters": json.loads(params) if isinstance(params, str) and params else {},
                         "where": f"shipped bench {folder.name}"})
    return rows


def last_complete_runs(rows: list[dict[str, Any]], notebooks: list[str] | None = None,
                       profiles: list[str] | None = None) -> list[dict[str, Any]]:
    """For each notebook (default: the course's) and profile (default: every profile), the latest of ``rows``
    (:func:`complete_runs`) by start time, or ``None`` under ``run`` when it has never run."""
    from lmcourse.profiles import PROFILES

    notebooks = notebooks or [p.name for p in list_notebooks()]
    profiles = profiles or list(PROFILES)
    out = []
    for nb in notebooks:
        for profile in profiles:
            mine = [r for r in rows if r["notebook"] == nb and r["profile"] == profile]
            out.append({"notebook": nb, "profile": profile,
                        "run": max(mine, key=lambda r: r["started"]) if mine else None,
                        "runs": len(mine)})
    return out


def describe_run(run: dict[str, Any] | None) -> str:
    """``2026-12-02 00:02 UTC, commit 5f5226c, cpu: ... (2 cores), 191 s, shipped bench smoke (task=mrpc ...)``."""
    if run is None:
        return "never run"
    wall = run.get("wall_time_s")
    extra = {k: v for k, v in (run.get("parameters") or {}).items() if k not in ("profile", "seed")}
    params = " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    return (f"{run['started'][:16].replace('T', ' ')} UTC, commit {_commit(run.get('commit'))}, {run['machine']}, "
            f"{f'{wall:.0f} s' if isinstance(wall, int | float) else 'wall time unknown'}, {run['where']}"
            + (f" ({params})" if params else ""))


def _prefixes(names: list[str]) -> str:
    """Notebook numbers with runs of consecutive ones joined: ``00–06, 08–14``."""
    numbers = sorted(int(n[:2]) for n in names)
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a:02d}" if a == b else f"{a:02d}–{b:02d}" for a, b in spans)


def profile_run_cells(last: list[dict[str, Any]]) -> dict[str, str]:
    """The README's "last complete run" column: per profile, the notebooks that ran (their last run) and the
    notebooks that never ran, from :func:`last_complete_runs`."""
    cells: dict[str, str] = {}
    for profile in dict.fromkeys(r["profile"] for r in last):
        mine = [r for r in last if r["profile"] == profile]
        ran = [f"`{r['notebook'][:2]}`: {describe_run(r['run'])}" for r in mine if r["run"] is not None]
        never = [r["notebook"] for r in mine if r["run"] is None]
        cells[profile] = "; ".join(ran + ([f"never run: {_prefixes(never)}"] if never else []))
    return cells

