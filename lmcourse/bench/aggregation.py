"""After a sweep: its ``results.csv`` (the previous one kept in ``history/``), ``leaderboard.md`` with the
comparison against the shipped results, and ``leaderboard.json``.

Above :mod:`~lmcourse.bench.results` (the table and the leaderboard) and :mod:`~lmcourse.bench.shipped` (the
comparison), which import neither this module nor each other's way back."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from lmcourse.bench.report import load_references
from lmcourse.bench.results import RESULT_COLUMNS, collect_results, leaderboard, leaderboard_markdown, read_csv_rows
from lmcourse.bench.shipped import compare_with_shipped, comparison_markdown, load_shipped
from lmcourse.bench.spec import BenchSpec
from lmcourse.errors import LmcourseError
from lmcourse.tracking import write_json_atomic


def aggregate(spec: BenchSpec, runs_dir: str | os.PathLike,
              shipped_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``leaderboard.md`` for the spec; keep the previous results in history/.

    When the project ships results of the same spec (``data/results/<bench>/``, or ``shipped_dir``), the
    leaderboard gets a section comparing them (:func:`lmcourse.bench.shipped.compare_with_shipped`)."""
    import pandas as pd

    folder = Path(runs_dir) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    rows = collect_results(spec, runs_dir)
    results_path, board_path = folder / "results.csv", folder / "leaderboard.md"
    previous = None
    if results_path.is_file():
        previous = read_csv_rows(results_path)
        history = folder / "history"
        history.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        results_path.replace(history / f"results-{stamp}.csv")
    else:
        older = sorted((folder / "history").glob("results-*.csv")) if (folder / "history").is_dir() else []
        previous = read_csv_rows(older[-1]) if older else None
    table = leaderboard(rows, load_references(), previous, spec.tolerance)
    tmp = results_path.with_suffix(".csv.tmp")
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(tmp, index=False)
    os.replace(tmp, results_path)
    markdown, against = leaderboard_markdown(spec.name, table, rows), None
    try:
        shipped = load_shipped(spec.name, shipped_dir)
    except LmcourseError as exc:  # the sweep is done: say why there is no comparison rather than fail it
        markdown += f"\n## Against the shipped results\n\nNot compared: {exc}\n"
    else:
        if shipped is not None:
            against = compare_with_shipped(rows, shipped)
            markdown += comparison_markdown(against, shipped)
    tmp_md = board_path.with_suffix(".md.tmp")
    tmp_md.write_text(markdown, encoding="utf-8")
    os.replace(tmp_md, board_path)
    write_json_atomic(folder / "leaderboard.json", {
        "spec": spec.name, "generated": time.time(), "rows": table.to_dict("records"),
        "against_shipped": None if against is None else against.to_dict("records")})
    return results_path, board_path
