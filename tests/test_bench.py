"""The benchmark suite with small real notebooks: spec validation, sweep, resume, failures, aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GOOD_SPEC
from conftest import write_spec as _spec
from lmcourse.bench import (
    RESULT_COLUMNS,
    find_results,
    find_spec,
    leaderboard,
    load_reference_entries,
    load_references,
    load_results,
    load_spec,
    make_run_id,
    result_row,
    run_spec,
    select_runs,
    validate_results,
)
from lmcourse.cli import main as cli_main
from lmcourse.errors import ArgumentError, LmcourseError, SpecError


def test_spec_expands_the_matrix(bench_dir):
    spec = load_spec(_spec(bench_dir, GOOD_SPEC))
    assert spec.name == "fake" and len(spec.runs) == 5
    ids = [r.run_id for r in spec.runs]
    assert "50-minilm-l6-sst2-smoke-s0" in ids and len(set(ids)) == 5
    assert spec.runs[-1].parameters["fail"] is True and ids[-1].startswith("50-minilm-l6-rte-smoke-s0-")
    assert make_run_id(Path("07_x.ipynb"), {"model": "org/m", "task": "cola", "seed": 2, "profile": "cpu"}) \
        == "07-org--m-cola-cpu-s2"


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nnotebook: 50_fake.ipynb\nmatrx:\n  task: [sst2]\n", r":3: unknown key 'matrx'"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix:\n  task: [sst3]\n", r":4: unknown GLUE task 'sst3'"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix:\n  task: [sst2]\n  model: [nope]\n", r":5: unknown model 'nope'"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix:\n  task: [sst2]\n  profile: [laptop]\n", r":5: unknown profile"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix:\n  task: []\n", r":4: matrix axis 'task' is empty"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix: {}\n", r":3: 'matrix' must be a non-empty mapping"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix:\n  lr: [0.1]\n", r":4: 50_fake.ipynb has no parameter 'lr'"),
    ("name: x\nnotebook: 50_fake.ipynb\nmatrix:\n  task: [sst2]\nexclude:\n  - {task: sst2}\n", r"has no runs"),
    ("name: x\nnotebook: 99_missing.ipynb\nmatrix:\n  task: [sst2]\n", r"notebook '99_missing.ipynb' not found"),
    ("name: x\nmatrix: [1, 2\n", r"not valid YAML"),
])
def test_malformed_specs_fail_before_any_run(bench_dir, text, message):
    path = _spec(bench_dir, text)
    with pytest.raises(SpecError, match=message) as err:
        run_spec(path, runs_dir=bench_dir / "runs", progress=False)
    assert str(path) in str(err.value)
    assert not (bench_dir / "runs").exists()


def test_sweep_resume_failure_and_aggregation(bench_dir, capsys):
    spec_path = _spec(bench_dir, GOOD_SPEC)
    runs = bench_dir / "runs"
    # dry run lists everything as to-do and runs nothing
    assert cli_main(["bench", str(spec_path), "--dry-run", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.count("[todo]") == 5 and not runs.exists()

    # --only runs a subset
    first = run_spec(spec_path, runs_dir=runs, only="*sst2-smoke-s0", progress=False)
    assert first.completed == ["50-minilm-l6-sst2-smoke-s0"] and first.failed == []

    # the full sweep skips the completed run, records the failure and completes the others
    code = cli_main(["bench", str(spec_path), "--runs-dir", str(runs), "-q"])
    assert code == 1  # one run failed
    out = capsys.readouterr().out
    assert "3 ran, 1 skipped" in out and "1 failed" in out
    failed_dir = next((runs / "fake").glob("50-minilm-l6-rte-*"))
    assert json.loads((failed_dir / "metrics.json").read_text())["status"] == "failed"
    assert (failed_dir / "50_fake.ipynb").is_file()  # output notebook with the error kept

    rows = load_results(runs / "fake" / "results.csv")
    assert len(rows) == 5 and set(rows[0]) == set(RESULT_COLUMNS)
    by_id = {r["run_id"]: r for r in rows}
    mrpc = by_id["50-minilm-l6-mrpc-smoke-s1"]
    assert mrpc["score"] == pytest.approx(mrpc["combined_score"])
    assert mrpc["f1"] == pytest.approx(mrpc["accuracy"] + 0.05)
    assert mrpc["train_tokens_per_s"] == 1001.0 and mrpc["status"] == "completed"
    assert by_id[failed_dir.name]["error"].startswith("RuntimeError: deliberate failure")

    board = (runs / "fake" / "leaderboard.md").read_text()
    assert "| minilm-l6 | smoke | sst2 | 2 |" in board and "GLUE (2 tasks)" in board
    assert "deliberate failure for rte" in board

    # a rerun skips all completed runs and retries only the failed one; nothing regresses
    again = run_spec(spec_path, runs_dir=runs, progress=False)
    assert sorted(again.skipped) == sorted(r for r in by_id if r != failed_dir.name)
    assert again.failed == [failed_dir.name]
    assert len(list((runs / "fake" / "history").glob("results-*.csv"))) == 2
    assert "regression" not in (runs / "fake" / "leaderboard.md").read_text().split("|---|")[-1]


def test_only_matching_nothing_is_an_argument_error_not_a_spec_error(bench_dir, capsys):
    spec_path = _spec(bench_dir, GOOD_SPEC)
    spec = load_spec(spec_path)
    with pytest.raises(ArgumentError, match=r"--only 'qqp' matches none of the 5 runs of 'fake'") as err:
        select_runs(spec, "qqp")
    assert not isinstance(err.value, SpecError)
    with pytest.raises(ArgumentError):
        run_spec(spec, runs_dir=bench_dir / "runs", only="*qqp*", progress=False)
    assert not (bench_dir / "runs").exists()
    assert cli_main(["bench", str(spec_path), "--only", "qqp", "--runs-dir", str(bench_dir / "runs")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("lmcourse: error: --only 'qqp' matches none")
    assert cli_main(["bench", str(spec_path), "--address", "auto", "--dry-run"]) == 2
    assert "--address only applies to --backend ray" in capsys.readouterr().err


def test_find_results_only_finds_and_says_what_to_run(bench_dir):
    runs = bench_dir / "runs"
    with pytest.raises(LmcourseError, match=r"no benchmark results under .*runs.*`lmcourse bench smoke --runs-dir "):
        find_results(runs_dir=runs)
    assert not runs.exists()  # it looked, it ran nothing
    with pytest.raises(LmcourseError, match=r"no benchmark results at 'nope'"):
        find_results("nope", runs_dir=runs)
    for name in ("smoke", "cpu"):
        (runs / name).mkdir(parents=True)
        (runs / name / "results.csv").write_text("bench\n")
    assert find_results(runs_dir=runs) == runs / "cpu" / "results.csv"  # gpu, cpu, smoke: the first that exists
    assert find_results(runs_dir=runs, prefer=("smoke",)) == runs / "smoke" / "results.csv"
    assert find_results("smoke", runs_dir=runs) == runs / "smoke" / "results.csv"
    assert find_results(runs / "smoke") == runs / "smoke" / "results.csv"


def test_mnli_matched_and_mismatched_are_averaged(tmp_path):
    summary = {"bench": "b", "run_id": "r", "status": "completed", "notebook": "07.ipynb", "profile": "cpu",
               "wall_time_s": 1.0, "parameters": {"task": "mnli", "model": "m", "seed": 0},
               "metrics": {"mnli/accuracy": 0.80, "mnli_mismatched/accuracy": 0.70}}
    row = result_row(summary)
    assert row["accuracy"] == 0.80 and row["score"] == pytest.approx(0.75)
    refs = tmp_path / "refs.yaml"
    refs.write_text("models:\n  org/m:\n    source: a paper\n    tasks:\n      mnli: {accuracy: 0.84}\n"
                    "      mnli_mismatched: {accuracy: 0.82}\n      mrpc: {f1: 0.9, accuracy: 0.8}\n")
    assert load_references(refs) == {"org/m": {"mnli": pytest.approx(0.83), "mrpc": pytest.approx(0.85)}}
    entries = load_reference_entries(refs)
    assert entries["org/m"]["source"] == "a paper" and entries["org/m"]["tasks"]["mrpc"] == {"f1": 0.9, "accuracy": 0.8}
    shipped = load_references()
    assert "mnli_mismatched" not in shipped["google-bert/bert-base-cased"]
    assert shipped["minilm-l6"] == shipped["nreimers/MiniLM-L6-H384-uncased"]


def test_regressions_against_previous_results_are_flagged():
    base = {c: None for c in RESULT_COLUMNS}
    row = {**base, "bench": "b", "run_id": "r", "status": "completed", "notebook": "n", "profile": "cpu",
           "wall_time_s": 1.0, "model": "m", "task": "sst2", "seed": 0, "score": 0.80, "accuracy": 0.80}
    prev = {**row, "score": 0.85, "accuracy": 0.85}
    validate_results([row, prev])
    table = leaderboard([row], {"m": {"sst2": 0.9}}, [prev], tolerance=0.02)
    sst2 = table[table["task"] == "sst2"].iloc[0]
    assert bool(sst2["regression"]) and sst2["published"] == 0.9 and sst2["previous"] == 0.85
    assert not leaderboard([row], None, [prev], tolerance=0.1).iloc[0]["regression"]


def test_results_schema_rejects_bad_rows():
    base = {c: None for c in RESULT_COLUMNS}
    good = {**base, "bench": "b", "run_id": "r", "status": "completed", "notebook": "n", "profile": "cpu",
            "wall_time_s": 1.0}
    validate_results([good])
    with pytest.raises(LmcourseError, match="not a fraction"):
        validate_results([{**good, "accuracy": 88.0}])
    with pytest.raises(LmcourseError, match="missing columns"):
        validate_results([{"bench": "b"}])
    with pytest.raises(LmcourseError, match="run_id is required"):
        validate_results([{**good, "run_id": None}])
    with pytest.raises(LmcourseError, match="unknown status"):
        validate_results([{**good, "status": "maybe"}])


def test_unknown_spec_name_lists_shipped_specs():
    with pytest.raises(SpecError, match=r"shipped specs: .*smoke"):
        find_spec("no-such-spec")


def test_shipped_specs_are_valid():
    for name, size in (("smoke", 2), ("cpu", 36), ("gpu", 81)):
        spec = load_spec(name)
        assert spec.name == name and len(spec.runs) == size
        assert all(r.parameters["profile"] == name for r in spec.runs)


def test_smoke_spec_end_to_end(smoke_bench_local):
    """The CI benchmark: real runs of the fine-tuning notebook, aggregated and validated."""
    sweep = smoke_bench_local
    assert sweep.failed == [] and len(sweep.completed) == 2
    rows = load_results(sweep.results_file)
    assert {r["task"] for r in rows} == {"sst2", "mrpc"}
    for r in rows:
        assert r["status"] == "completed" and r["model"] == "minilm-l6" and r["profile"] == "smoke"
        assert 0.0 < r["score"] <= 1.0 and r["train_tokens_per_s"] > 0 and 0.0 < r["mfu"] < 1.0
        assert r["trainable_params"] > 1e6 and r["peak_memory_bytes"] > 0 and r["git_commit"]
    board = sweep.leaderboard_file.read_text()
    assert "GLUE (2 tasks)" in board and "| minilm-l6 | smoke | sst2 | 1 |" in board
