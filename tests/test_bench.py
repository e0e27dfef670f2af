"""The benchmark suite with small real notebooks: spec validation, sweep, resume, failures, aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import GOOD_SPEC, write_fake_notebook
from conftest import write_spec as _spec
from lmcourse.bench import (
    RESULT_COLUMNS,
    SHIPPED_RESULTS_DIR,
    ShippedResults,
    compare_with_shipped,
    comparison_markdown,
    comparison_summary,
    find_results,
    find_spec,
    is_shipped,
    leaderboard,
    load_reference_entries,
    load_references,
    load_results,
    load_shipped,
    load_spec,
    make_run_id,
    result_row,
    run_spec,
    select_runs,
    ship_results,
    validate_results,
)
from lmcourse.cli import main as cli_main
from lmcourse.errors import ArgumentError, LmcourseError, SpecError
from lmcourse.spread import NO_DIFFERENCE


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
    if load_shipped("smoke") is not None:  # one seed each side: compared, no conclusion
        assert "## Against the shipped results" in board and "from a single run, no interval: not measured" in board


# ------------------------------------------------------------------- models the matrix needs: prepare steps
# A stand-in for notebook 05 (same name, so it may produce scratch-bert-*): publishes a tiny BERT, fails, or
# completes without publishing anything, as asked.
FAKE_PRETRAIN = """
from lmcourse.tracking import record_metrics
if mode == "fail":
    raise RuntimeError("deliberate pretraining failure")
if mode == "publish":
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM
    from lmcourse.models import publish_scratch_bert, resolve
    tok = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    net = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64))
    print("published", publish_scratch_bert(net, tok, profile))
record_metrics({"05/steps": 1})
"""

NEEDS_SCRATCH = """name: needs
notebook: 50_fake.ipynb
matrix:
  task: [sst2]
  model: [minilm-l6, scratch-bert-smoke]
  seed: [0]
  profile: [smoke]
"""
PREPARE_SMOKE = """prepare:
  - notebook: 05_pretraining_mlm
    profile: smoke
    parameters: {seed: 1}
    produces: scratch-bert-smoke
"""


@pytest.fixture
def checkpoints(tmp_path, monkeypatch) -> Path:
    """An empty checkpoints folder for this test (``$LMCOURSE_CHECKPOINTS_DIR``; kernels inherit it)."""
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv("LMCOURSE_CHECKPOINTS_DIR", str(folder))
    return folder


@pytest.fixture
def fake_pretrain(bench_dir) -> Path:
    """``05_pretraining_mlm.ipynb`` beside the specs of ``bench_dir``: the fake above."""
    return write_fake_notebook(bench_dir / "05_pretraining_mlm.ipynb",
                               'profile = None\nseed = 0\nmode = "publish"', FAKE_PRETRAIN)


def test_a_model_that_is_not_there_and_no_step_makes_is_rejected_with_its_line(bench_dir, checkpoints):
    path = _spec(bench_dir, NEEDS_SCRATCH)
    with pytest.raises(SpecError) as err:
        run_spec(path, runs_dir=bench_dir / "runs", progress=False)
    message = str(err.value)
    assert message.startswith(f"{path}:5: model 'scratch-bert-smoke'")
    assert str(checkpoints / "bert-mlm-smoke") in message
    assert "`lmcourse run notebooks/05_pretraining_mlm.ipynb --profile smoke`" in message
    assert "prepare: [{notebook: 05_pretraining_mlm, profile: smoke, produces: scratch-bert-smoke}]" in message
    assert not (bench_dir / "runs").exists()
    # a run added with include: is pointed at by its own line
    extra = NEEDS_SCRATCH.replace("scratch-bert-smoke", "minilm-l6") + "include:\n  - {model: scratch-bert}\n"
    with pytest.raises(SpecError, match=r":9: model 'scratch-bert' .*--profile cpu"):
        load_spec(_spec(bench_dir, extra))


def test_a_prepare_step_that_makes_the_model_makes_the_spec_valid(bench_dir, checkpoints, capsys):
    path = _spec(bench_dir, NEEDS_SCRATCH + PREPARE_SMOKE)
    spec = load_spec(path)
    assert len(spec.runs) == 2 and len(spec.prepare) == 1
    step = spec.prepare[0]
    assert (step.run_id, Path(step.notebook).name, step.produces) == ("prepare-1", "05_pretraining_mlm.ipynb",
                                                                      "scratch-bert-smoke")
    assert step.parameters == {"seed": 1, "profile": "smoke"} and not step.ready()
    assert step.folder(bench_dir / "runs") == bench_dir / "runs" / "needs" / "prepare-1"
    dry = run_spec(spec, runs_dir=bench_dir / "runs", dry_run=True, progress=False)
    assert dry.prepare == [step] and dry.prepare_skipped == [] and dry.prepared == []
    assert dry.prepare_lines() == ['  [todo] prepare-1  05_pretraining_mlm.ipynb  produces scratch-bert-smoke  '
                                   '{"seed": 1, "profile": "smoke"}']
    assert not (bench_dir / "runs").exists() and not checkpoints.exists()
    # --only without the product's runs: the step is not needed
    assert run_spec(spec, runs_dir=bench_dir / "runs", only="*minilm*", dry_run=True, progress=False).prepare == []
    shipped = load_spec("cpu")
    assert [(s.produces, Path(s.notebook).stem, s.parameters) for s in shipped.prepare] == [
        ("scratch-bert", "05_pretraining_mlm", {"profile": "cpu"})]


@pytest.mark.parametrize(("step", "message"), [
    ("  - {notebook: 05_pretraining_mlm, profile: smoke, produces: scratch-bert-smoke, seed: 1}",
     r":9: prepare step 1: unknown key 'seed'"),
    ("  - {notebook: 05_pretraining_mlm, profile: smoke, produces: minilm-l6}",
     r":9: prepare step 1: 'produces' must name a model a notebook makes, one of scratch-bert, scratch-bert-gpu"),
    ("  - {notebook: 05_pretraining_mlm, profile: smoke, produces: scratch-bert}",
     r":9: prepare step 1: 'scratch-bert' is made by notebook 05_pretraining_mlm in the cpu profile, not by "
     r"05_pretraining_mlm in the smoke profile"),
    ("  - {notebook: 07_finetuning_glue, profile: smoke, produces: scratch-bert-smoke}",
     r":9: prepare step 1: 'scratch-bert-smoke' is made by notebook 05_pretraining_mlm .* not by 07_finetuning_glue"),
    ("  - {notebook: 05_pretraining_mlm, profile: laptop, produces: scratch-bert-smoke}",
     r":9: prepare step 1: unknown profile 'laptop'"),
    ("  - notebook: 05_pretraining_mlm\n    profile: smoke\n    produces: scratch-bert-smoke\n    parameters:\n"
     "      lr: 0.1", r":13: prepare step 1: 05_pretraining_mlm.ipynb has no parameter 'lr'"),
    ("  - {notebook: 05_pretraining_mlm, profile: smoke, parameters: {profile: cpu}, produces: scratch-bert-smoke}",
     r":9: prepare step 1: give the profile as the step's 'profile:' key"),
    ("  - {notebook: 99_missing, profile: smoke, produces: scratch-bert-smoke}",
     r":9: notebook '99_missing' not found"),
    ("  - {notebook: 05_pretraining_mlm, profile: smoke}", r":9: prepare step 1: 'produces' is required"),
    ("  - {notebook: 05_pretraining_mlm, profile: smoke, produces: scratch-bert-smoke}\n"
     "  - {notebook: 05_pretraining_mlm, profile: smoke, produces: scratch-bert-smoke}",
     r":10: prepare step 2: another prepare step already produces 'scratch-bert-smoke'"),
    ("  notebook: 05_pretraining_mlm", r":8: 'prepare' must be a list of mappings"),
])
def test_malformed_prepare_steps_fail_before_anything_runs(bench_dir, checkpoints, step, message):
    path = _spec(bench_dir, NEEDS_SCRATCH + "prepare:\n" + step + "\n")
    with pytest.raises(SpecError, match=message) as err:  # (a dry run: a check that let one through runs nothing)
        run_spec(path, runs_dir=bench_dir / "runs", dry_run=True, progress=False)
    assert str(err.value).startswith(f"{path}:")
    assert not (bench_dir / "runs").exists() and not checkpoints.exists()


def test_prepare_steps_run_once_before_the_matrix_and_fail_it_clearly(bench_dir, checkpoints, fake_pretrain):
    runs = bench_dir / "runs"
    prepare = PREPARE_SMOKE.replace("05_pretraining_mlm\n", "05_pretraining_mlm.ipynb\n")  # the fake beside it
    failing = _spec(bench_dir, NEEDS_SCRATCH + prepare.replace("{seed: 1}", "{mode: fail}"), "f.yaml")
    with pytest.raises(LmcourseError, match=r"prepare-1 of 'needs' \(05_pretraining_mlm.ipynb, profile smoke, makes "
                                            r"'scratch-bert-smoke'\) failed: RuntimeError: deliberate pretraining "
                                            r"failure; its output notebook is .*The matrix was not started"):
        run_spec(failing, runs_dir=runs, progress=False)
    assert sorted(p.name for p in (runs / "needs").iterdir()) == ["prepare-1"]  # no run of the matrix started
    silent = _spec(bench_dir, NEEDS_SCRATCH + prepare.replace("{seed: 1}", "{mode: nothing}"), "s.yaml")
    with pytest.raises(LmcourseError, match=r"completed but did not publish the model: model 'scratch-bert-smoke' "
                                            r".*publish_scratch_bert"):
        run_spec(silent, runs_dir=runs, progress=False)
    assert sorted(p.name for p in (runs / "needs").iterdir()) == ["prepare-1"]

    good = _spec(bench_dir, NEEDS_SCRATCH + prepare)
    sweep = run_spec(good, runs_dir=runs, progress=False)
    assert sweep.prepared == ["prepare-1"] and sweep.ok and len(sweep.completed) == 2
    assert (checkpoints / "bert-mlm-smoke" / "model.safetensors").is_file()
    assert json.loads((runs / "needs" / "prepare-1" / "metrics.json").read_text())["status"] == "completed"
    assert len(load_results(sweep.results_file)) == 2  # the prepare step is not a row of the results
    # a product that is there is not made again, unless forced
    more = _spec(bench_dir, NEEDS_SCRATCH.replace("seed: [0]", "seed: [0, 1]") + prepare, "more.yaml")
    again = run_spec(more, runs_dir=runs, progress=False)
    assert again.prepare_skipped == ["prepare-1"] and again.prepared == [] and len(again.completed) == 2
    stamp = (checkpoints / "bert-mlm-smoke" / "config.json").stat().st_mtime_ns
    forced = run_spec(good, runs_dir=runs, progress=False, force_prepare=True)
    assert forced.prepared == ["prepare-1"] and forced.completed == [] and len(forced.skipped) == 2
    assert (checkpoints / "bert-mlm-smoke" / "config.json").stat().st_mtime_ns > stamp


def test_pretrain_finetune_report_end_to_end(tmp_path, checkpoints):
    """The cpu benchmark's path at smoke sizes: notebook 05 makes the scratch BERT in a prepare step, notebook
    07 fine-tunes it in the matrix, notebook 09 reports on the results."""
    from lmcourse.runner import run_notebook

    spec_path = _spec(tmp_path, """name: pretrain-finetune
notebook: 07_finetuning_glue
parameters: {analysis: false}
prepare:
  - {notebook: 05_pretraining_mlm, profile: smoke, produces: scratch-bert-smoke}
matrix: {model: [scratch-bert-smoke], task: [sst2], seed: [0], profile: [smoke]}
""")
    runs = tmp_path / "runs"
    sweep = run_spec(spec_path, runs_dir=runs, progress=False)
    product = checkpoints / "bert-mlm-smoke"
    assert sweep.prepared == ["prepare-1"] and (product / "model.safetensors").is_file()
    assert (product / "config.json").is_file() and (product / "tokenizer_config.json").is_file()
    rows = load_results(sweep.results_file)
    assert [(r["model"], r["task"], r["status"]) for r in rows] == [("scratch-bert-smoke", "sst2", "completed")], \
        [r["error"] for r in rows]
    assert 0.0 < rows[0]["score"] <= 1.0 and sweep.ok
    report = run_notebook("09_benchmark_report", {"results": str(sweep.results_file)}, profile="smoke",
                          runs_dir=runs, progress=False)
    assert report.ok, report.error


# ------------------------------------------------------------------- shipped results and a rerun against them
def _rows(model: str, task: str, scores: list[float], bench: str = "b") -> list[dict]:
    """Synthetic completed results rows, one per seed."""
    base = {c: None for c in RESULT_COLUMNS}
    return [{**base, "bench": bench, "run_id": f"{model}-{task}-s{i}", "status": "completed", "notebook": "n",
             "profile": "cpu", "wall_time_s": 1.0, "model": model, "task": task, "seed": i, "score": s,
             "accuracy": s} for i, s in enumerate(scores)]


def test_a_rerun_inside_the_interval_matches_and_one_beyond_it_regresses():
    from scipy import stats

    shipped = _rows("m", "sst2", [0.80, 0.82, 0.78]) + _rows("m", "rte", [0.60, 0.63, 0.57]) + \
        _rows("m", "cola", [0.30, 0.31])
    ours = (_rows("m", "sst2", [0.77, 0.79, 0.75])  # 3 points lower, but std 2 and 2: 95 % CI [-6.7, +0.7]
            + _rows("m", "rte", [0.50, 0.52, 0.48])  # 10 points lower, std 3 and 2: 95 % CI [-14.2, -5.8]
            + _rows("m", "cola", [0.35])  # one seed: no spread, no conclusion
            + _rows("other", "sst2", [0.9, 0.9]))  # not shipped: not compared
    validate_results(shipped + ours)
    table = compare_with_shipped(ours, shipped)
    by_task = {r["task"]: r for r in table.to_dict("records")}
    assert sorted(by_task) == ["cola", "rte", "sst2"] and set(table["model"]) == {"m"}
    sst2, rte, cola = by_task["sst2"], by_task["rte"], by_task["cola"]
    assert sst2["status"] == "inside the interval" and not sst2["regression"] and NO_DIFFERENCE in sst2["verdict"]
    welch = stats.ttest_ind([77, 79, 75], [80, 82, 78], equal_var=False).confidence_interval(0.95)
    assert sst2["difference"] == pytest.approx(-3.0)
    assert (sst2["ci_low"], sst2["ci_high"]) == pytest.approx((welch.low, welch.high))
    assert sst2["this run"] == "77.0 ± 2.0 (n=3)" and sst2["shipped"] == "80.0 ± 2.0 (n=3)"
    assert rte["status"] == "lower" and rte["regression"]
    assert rte["verdict"].startswith("this run is lower than shipped: -10.000, 95 % CI [-1")
    assert rte["verdict"].endswith("Welch t, 3 vs 3 runs") and rte["ci_high"] < 0
    assert cola["status"] == "single seed" and not cola["regression"] and "not measured" in cola["verdict"]
    # the leaderboard section flags only the regression
    fake = ShippedResults("b", Path("/x/data/results/b"), shipped, {"git_commits": ["abc"], "complete": True})
    section = comparison_markdown(table, fake)
    flagged = [line for line in section.splitlines() if "⚠" in line]
    assert len(flagged) == 1 and flagged[0].startswith("| m | cpu | rte |")
    line = comparison_summary(table, fake)
    assert "1 inside the interval, 1 lower, 1 with a single seed (not measured)" in line
    assert "m · rte (-10.0 points)" in line


SHIFT_NOTEBOOK = """
from lmcourse.tracking import record_metrics
if fail:
    raise RuntimeError("deliberate failure")
record_metrics({f"{task}/accuracy": 0.70 + 0.01 * seed + shift, f"{task}/train_seconds": 1.0})
"""
SHIFT_SPEC = """name: shifty
notebook: 51_shift.ipynb
parameters: {shift: SHIFT}
matrix: {model: [minilm-l6], task: [sst2], seed: [0, 1], profile: [smoke]}
"""


def test_ship_a_finished_sweep_and_compare_reruns_with_it(tmp_path, capsys):
    write_fake_notebook(tmp_path / "51_shift.ipynb", 'profile = None\nseed = 0\nmodel = "minilm-l6"\n'
                        'task = "sst2"\nshift = 0.0\nfail = False', SHIFT_NOTEBOOK)
    runs, shipped_dir = tmp_path / "runs", tmp_path / "shipped"
    failing = _spec(tmp_path, SHIFT_SPEC.replace("SHIFT", "0.0")
                    + "include:\n  - {model: minilm-l6, task: sst2, seed: 2, profile: smoke, fail: true}\n")
    spec_path = _spec(tmp_path, SHIFT_SPEC.replace("SHIFT", "0.0"), "shifty.yaml")
    assert run_spec(failing, runs_dir=runs, progress=False).failed  # seeds 0, 1 complete; the include fails

    # an incomplete sweep is refused, with one clear error, and nothing is written
    with pytest.raises(LmcourseError, match=r"will not ship an incomplete sweep of 'shifty': 2 of 3 runs "
                                            r"completed, 1 failed \(51-minilm-l6-sst2-smoke-s2-"):
        ship_results(failing, runs_dir=runs, shipped_dir=shipped_dir)
    assert not shipped_dir.exists()
    assert cli_main(["bench", str(failing), "--ship", "--runs-dir", str(runs), "--shipped-dir", str(shipped_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmcourse: error: will not ship an incomplete sweep")
    assert "--allow-incomplete" in err[0] and not shipped_dir.exists()
    with pytest.raises(LmcourseError, match="nothing to ship"):
        ship_results(failing, runs_dir=tmp_path / "empty", shipped_dir=shipped_dir)
    # unless told explicitly; the manifest says so
    loose = ship_results(failing, runs_dir=runs, shipped_dir=tmp_path / "loose", allow_incomplete=True)
    manifest = yaml.safe_load((loose / "manifest.yaml").read_text())
    assert manifest["complete"] is False and manifest["runs"] == {"completed": 2, "failed": 1, "stale": 0,
                                                                  "missing": 0}
    assert len(load_results(loose / "results.csv")) == 3

    # the spec without the failing run is a finished sweep: it ships
    assert cli_main(["bench", str(spec_path), "--ship", "--runs-dir", str(runs), "--shipped-dir",
                     str(shipped_dir)]) == 0
    assert "shipped " in capsys.readouterr().out
    shipped = load_shipped("shifty", shipped_dir)
    assert [r["seed"] for r in shipped.rows] == [0, 1] and shipped.manifest["complete"] is True
    m = shipped.manifest
    assert m["spec"] == str(spec_path.resolve()) and m["planned_runs"] == 2 and m["rows"] == 2
    assert m["hardware"][0]["device"] and m["versions"][0]["torch"] and "git_commits" in m
    assert m["regenerate"] == [f"lmcourse bench {m['spec']}", f"lmcourse bench {m['spec']} --ship"]
    assert "shipped results" in (shipped_dir / "shifty" / "leaderboard.md").read_text()
    assert is_shipped(shipped.results_file, shipped_dir) and not is_shipped(runs / "shifty", shipped_dir)

    # a rerun within the interval: no measurable difference, printed and in the leaderboard
    _spec(tmp_path, SHIFT_SPEC.replace("SHIFT", "0.004"), "shifty.yaml")
    assert cli_main(["bench", str(spec_path), "--runs-dir", str(tmp_path / "again"), "--shipped-dir",
                     str(shipped_dir), "-q"]) == 0
    out = capsys.readouterr().out
    assert "against the shipped results" in out and "1 inside the interval" in out and "⚠" not in out
    assert NO_DIFFERENCE in (tmp_path / "again" / "shifty" / "leaderboard.md").read_text()
    # a rerun five points lower with a spread of about one (95 % CI [-8.0, -2.0]): a regression, flagged
    _spec(tmp_path, SHIFT_SPEC.replace("SHIFT", "-0.05"), "shifty.yaml")
    assert cli_main(["bench", str(spec_path), "--runs-dir", str(tmp_path / "worse"), "--shipped-dir",
                     str(shipped_dir), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 lower; ⚠ lower beyond the interval: minilm-l6 · sst2 (-5.0 points)" in out
    board = (tmp_path / "worse" / "shifty" / "leaderboard.md").read_text()
    assert "this run is lower than shipped: -5.000, 95 % CI [" in board and "⚠ lower than shipped" in board

    # shipped files edited by hand are refused when read
    csv = shipped_dir / "shifty" / "results.csv"
    csv.write_text(csv.read_text().replace("0.71", "0.91"))
    with pytest.raises(LmcourseError, match=r"results.csv is not the file manifest.yaml describes"):
        load_shipped("shifty", shipped_dir)
    assert load_shipped("nothing-here", shipped_dir) is None


def test_find_results_falls_back_to_the_shipped_results(tmp_path):
    runs, shipped_dir = tmp_path / "runs", tmp_path / "shipped"
    (shipped_dir / "cpu").mkdir(parents=True)
    (shipped_dir / "cpu" / "results.csv").write_text("bench\n")
    with pytest.raises(LmcourseError, match="no benchmark results under"):
        find_results(runs_dir=runs, shipped_dir=shipped_dir)  # only with shipped=True
    assert find_results(runs_dir=runs, shipped=True, shipped_dir=shipped_dir) == shipped_dir / "cpu" / "results.csv"
    assert find_results("cpu", runs_dir=runs, shipped=True, shipped_dir=shipped_dir) == \
        shipped_dir / "cpu" / "results.csv"
    (runs / "smoke").mkdir(parents=True)
    (runs / "smoke" / "results.csv").write_text("bench\n")
    assert find_results(runs_dir=runs, shipped=True, shipped_dir=shipped_dir) == runs / "smoke" / "results.csv"


def test_shipped_results_of_the_project_are_valid():
    folders = sorted(p for p in SHIPPED_RESULTS_DIR.iterdir() if p.is_dir()) if SHIPPED_RESULTS_DIR.is_dir() else []
    for folder in folders:
        shipped = load_shipped(folder.name)
        assert shipped is not None and shipped.rows, folder
        spec = load_spec(folder.name)
        planned = {r.run_id for r in spec.runs}
        assert {r["run_id"] for r in shipped.rows} <= planned, f"{folder}: runs the spec no longer plans"
        m = shipped.manifest
        assert m["complete"] or m["not_completed"], f"{folder}: an incomplete sweep must say what is missing"
        assert m["hardware"] and m["versions"] and m["git_commits"] and m["regenerate"]


def test_a_sweep_finished_in_two_sittings_ships_as_one_with_keep_shipped(tmp_path, capsys):
    write_fake_notebook(tmp_path / "51_shift.ipynb", 'profile = None\nseed = 0\nmodel = "minilm-l6"\n'
                        'task = "sst2"\nshift = 0.0\nfail = False', SHIFT_NOTEBOOK)
    spec = _spec(tmp_path, SHIFT_SPEC.replace("SHIFT", "0.0").replace("seed: [0, 1]", "seed: [0, 1, 2]"),
                 "shifty.yaml")
    shipped_dir = tmp_path / "shipped"
    with pytest.raises(LmcourseError, match="no shipped results of 'shifty'"):
        ship_results(spec, runs_dir=tmp_path / "first", shipped_dir=shipped_dir, keep_shipped=True)
    # first sitting: seeds 0 and 1, shipped as an incomplete sweep
    assert run_spec(spec, runs_dir=tmp_path / "first", only="*-s[01]-*", progress=False).ok
    ship_results(spec, runs_dir=tmp_path / "first", shipped_dir=shipped_dir, allow_incomplete=True)
    first = load_shipped("shifty", shipped_dir)
    assert first.manifest["complete"] is False and [r["seed"] for r in first.rows] == [0, 1]
    # second sitting, another runs folder: only seed 2. Alone it is incomplete ...
    assert run_spec(spec, runs_dir=tmp_path / "second", only="-s2-", progress=False).ok
    with pytest.raises(LmcourseError, match="1 of 3 runs completed, 2 missing"):
        ship_results(spec, runs_dir=tmp_path / "second", shipped_dir=shipped_dir)
    # ... with the shipped rows of seeds 0 and 1 kept, the sweep is complete
    assert cli_main(["bench", str(spec), "--ship", "--keep-shipped", "--runs-dir", str(tmp_path / "second"),
                     "--shipped-dir", str(shipped_dir)]) == 0
    both = load_shipped("shifty", shipped_dir)
    m = both.manifest
    assert m["complete"] is True and m["runs"] == {"completed": 3, "failed": 0, "stale": 0, "missing": 0}
    assert [r["seed"] for r in both.rows] == [0, 1, 2]
    assert m["kept_from_shipped"] == [r["run_id"] for r in first.rows]
    kept = {r["run_id"]: r for r in both.rows}
    for r in first.rows:  # kept rows are the shipped ones, unchanged (their own start time and commit)
        assert kept[r["run_id"]]["started_at"] == r["started_at"] and kept[r["run_id"]]["score"] == r["score"]
    # the third row is the second sitting's own run (timestamps have one-second resolution, so the second
    # sitting may start in the same second as the first one ended: not earlier, and not a kept row)
    assert both.rows[2]["run_id"] not in m["kept_from_shipped"]
    assert kept[both.rows[2]["run_id"]]["started_at"] >= first.rows[-1]["started_at"]
    capsys.readouterr()
    assert cli_main(["bench", str(spec), "--keep-shipped", "--runs-dir", str(tmp_path / "second")]) == 2
    assert "--keep-shipped only applies to --ship" in capsys.readouterr().err
