"""Where each profile has run (issue #42): `lmcourse runs --profiles` and the README's generated column."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmcourse.cli import PROFILE_RUNS_HEADER
from lmcourse.cli import main as cli_main
from lmcourse.run_history import complete_runs, describe_run, last_complete_runs, profile_run_cells

REPO = Path(__file__).resolve().parent.parent


def _readme_profile_table() -> dict[str, list[str]]:
    """The README's profile table: header and rows (by profile) as lists of cells."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| profile | for |"))
    table = {"header": [c.strip() for c in lines[start].strip("|").split(" | ")]}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        table[cells[0].strip("`")] = cells
    return table


def test_readme_column_is_what_the_generator_prints(capsys):
    """Not typed by hand: the README's column equals `lmcourse runs --profiles --markdown` on the shipped results
    (regenerate it with that command after shipping results)."""
    assert cli_main(["runs", "--profiles", "--markdown"]) == 0
    generated = {}
    for line in capsys.readouterr().out.splitlines()[2:]:
        profile, cell = re.fullmatch(r"\| `(\w+)` \| (.*) \|", line).groups()
        generated[profile] = cell
    table = _readme_profile_table()
    assert table["header"][-1] == PROFILE_RUNS_HEADER
    assert {p: table[p][-1] for p in generated} == generated
    assert set(table) - {"header"} == set(generated)
    assert generated["gpu"] == "never run: 00–14"  # nothing shipped has run on a GPU yet: the reader sees it


def _metrics(root: Path, name: str, **data) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    base = {"notebook": "01_word_embeddings.ipynb", "profile": "smoke", "status": "completed",
            "started_at": "2026-12-01T10:00:00+00:00", "git_commit": "0123456789abcdef-dirty", "wall_time_s": 42.4,
            "parameters": {"profile": "smoke", "seed": 0},
            "hardware": {"cpu_model": "Test CPU", "cpu_cores": 2, "gpu": None, "device": "cpu"}}
    (folder / "metrics.json").write_text(json.dumps({**base, **data}))


def test_last_complete_run_per_notebook_and_profile(tmp_path, capsys):
    runs, shipped = tmp_path / "runs", tmp_path / "shipped"
    shipped.mkdir()
    _metrics(runs, "01_word_embeddings/a")
    _metrics(runs, "01_word_embeddings/b", started_at="2026-12-03T09:30:00+00:00", wall_time_s=40.0)
    _metrics(runs, "01_word_embeddings/c", started_at="2026-12-04T09:30:00+00:00", status="failed")
    _metrics(runs, "01_word_embeddings/d", profile="gpu", started_at="2026-12-02T08:00:00+00:00",
             hardware={"cpu_model": "Host", "cpu_cores": 16, "gpu": "NVIDIA H100", "device": "cuda:0"},
             parameters={"profile": "gpu", "seed": 1, "run_wikitext": False})
    rows = complete_runs(runs, shipped)
    assert len(rows) == 3  # the failed run is not a complete run
    last = {(r["notebook"], r["profile"]): r for r in last_complete_runs(rows)}
    assert last["01_word_embeddings.ipynb", "smoke"]["runs"] == 2
    assert describe_run(last["01_word_embeddings.ipynb", "smoke"]["run"]) == (
        "2026-12-03 09:30 UTC, commit 0123456-dirty, cpu: Test CPU (2 cores), 40 s, runs/01_word_embeddings/b")
    assert describe_run(last["01_word_embeddings.ipynb", "gpu"]["run"]).startswith(
        "2026-12-02 08:00 UTC, commit 0123456-dirty, cuda: NVIDIA H100 (16 cores), 42 s, runs/01_word_embeddings/d")
    assert describe_run(last["01_word_embeddings.ipynb", "gpu"]["run"]).endswith("(run_wikitext=False)")
    assert last["00_getting_started.ipynb", "cpu"]["run"] is None
    cells = profile_run_cells(last_complete_runs(rows))
    assert cells["cpu"] == "never run: 00–14"
    assert cells["smoke"].startswith("`01`: 2026-12-03 09:30 UTC") and cells["smoke"].endswith(
        "never run: 00, 02–14")
    assert cli_main(["runs", "--profiles", "--runs-dir", str(runs), "--shipped-dir", str(shipped)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"01_word_embeddings.ipynb +smoke +2 +2026-12-03 09:30 UTC", out), out
    assert re.search(r"14_does_pretraining_help.ipynb +gpu +0 +never run", out), out


def test_shipped_results_count_as_runs():
    rows = complete_runs(local=False)
    assert rows and {r["where"] for r in rows} >= {"shipped bench smoke", "shipped bench cpu"}
    assert all(r["machine"].startswith("cpu: ") for r in rows)


def test_markdown_needs_profiles(capsys):
    assert cli_main(["runs", "--markdown"]) == 2
    assert "--markdown only applies to --profiles" in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_has_a_cell(profile):
    assert profile in profile_run_cells(last_complete_runs([]))
