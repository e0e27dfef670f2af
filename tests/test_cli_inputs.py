"""Bad input on the command line: every numeric argument and notebook parameter is checked where it enters, with
one clear error (no traceback), exit code 2 and nothing written (issue #42)."""

from __future__ import annotations

import io

import nbformat
import pytest

from lmcourse.cli import main as cli_main
from lmcourse.errors import ArgumentError
from lmcourse.runner import check_parameters


def _exit_code(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``lmcourse argv``: its exit code (argparse's SystemExit or main's return) and its stderr."""
    try:
        code = cli_main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize("steps", ["-5", "0", "two"])
def test_pretrain_steps_must_be_positive(steps, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _exit_code(["pretrain", "--steps", steps, "--out", str(out), "--profile", "smoke"], capsys)
    assert code == 2
    assert "argument --steps:" in err and "an integer >= 1" in err, err
    assert err == f"lmcourse pretrain: error: argument --steps: {err.split('--steps: ')[1]}"  # one line, no usage
    assert err.count("\n") == 1 and "(see `lmcourse pretrain --help`)" in err
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value", "what"), [
    ("--global-batch", "0", "an integer >= 1"), ("--grad-accum", "-1", "an integer >= 1"),
    ("--block-size", "0", "an integer >= 1"), ("--n-layer", "0", "an integer >= 1"),
    ("--n-head", "0", "an integer >= 1"), ("--n-embd", "0", "an integer >= 1"),
    ("--dropout", "1", "a number >= 0 and < 1"), ("--dropout", "nan", "a number >= 0 and < 1"),
    ("--lr", "0", "a number > 0"), ("--warmup", "-1", "an integer >= 0"),
    ("--seed", "-1", "an integer >= 0 and <= 4.29497e+09"), ("--threads", "0", "an integer >= 1"),
])
def test_pretrain_numeric_arguments(flag, value, what, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _exit_code(["pretrain", flag, value, "--out", str(out), "--profile", "smoke"], capsys)
    assert code == 2 and f"argument {flag}:" in err and what in err, err
    assert not out.exists()


def test_pretrain_heads_must_divide_the_width(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _exit_code(["pretrain", "--n-embd", "30", "--n-head", "4", "--out", str(out)], capsys)
    assert code == 2 and "--n-embd 30 is not divisible by --n-head 4" in err, err
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value"), [("--max-steps", "0"), ("--max-steps", "-3"),
                                             ("--max-train-samples", "0"), ("--batch-size", "0"),
                                             ("--learning-rate", "-1e-5"), ("--seed", "-1")])
def test_finetune_numeric_arguments(flag, value, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _exit_code(["finetune", "--task", "sst2", f"{flag}={value}", "--out", str(out), "--profile", "smoke"],
                           capsys)
    assert code == 2 and f"argument {flag}:" in err and "out of range" in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["bench", "smoke", "--num-cpus", "0", "--dry-run"],
                                  ["exercises", "--chapter", "0"],
                                  ["classify", "model", "--batch-size", "0"],
                                  ["classify", "model", "--threads", "0"]])
def test_other_numeric_arguments(argv, capsys):
    code, err = _exit_code(argv, capsys)
    assert code == 2 and "out of range" in err, err


def test_classify_says_what_is_wrong_with_the_input(tmp_path, capsys, monkeypatch):
    code, err = _exit_code(["classify", str(tmp_path), "/dev/null"], capsys)
    assert code == 2 and "input /dev/null is not a regular file" in err and "does not exist" not in err, err
    code, err = _exit_code(["classify", str(tmp_path), str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err, err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, err = _exit_code(["classify", str(tmp_path), str(empty)], capsys)
    assert code == 2 and f"input file {empty} is empty" in err, err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, err = _exit_code(["classify", str(tmp_path)], capsys)
    assert code == 2 and "standard input is empty" in err, err
    code, err = _exit_code(["classify", str(tmp_path), str(tmp_path / "missing.txt")], capsys)
    assert code == 2 and "does not exist" in err, err


def _seeded_notebook(path):
    cells = [nbformat.v4.new_code_cell("profile = None\nseed = 0\nlearning_rate = None\nanalysis = True",
                                       metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("import numpy as np\nnp.random.default_rng(seed)")]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize(("name", "value", "what"), [
    ("seed", "-1", "a seed: an integer from 0 to 2**32 - 1"), ("seed", "4294967296", "a seed"),
    ("seed", "1.5", "a seed"), ("seed", "true", "a seed"), ("learning_rate", "0", "a positive number"),
    ("learning_rate", "fast", "a positive number"), ("analysis", "maybe", "true or false"),
])
def test_run_checks_notebook_parameters_before_running(name, value, what, tmp_path, capsys):
    nb = _seeded_notebook(tmp_path / "13_seeded.ipynb")
    code, err = _exit_code(["run", str(nb), "-p", name, value, "--profile", "smoke",
                            "--runs-dir", str(tmp_path / "runs"), "-q"], capsys)
    assert code == 2 and f"parameter {name} = " in err and what in err, err
    assert not (tmp_path / "runs").exists()


def test_the_issue_case_fails_at_the_parameter(tmp_path, capsys):
    """``lmcourse run notebooks/13_continual_learning.ipynb -p seed -1``: stopped before the kernel starts."""
    code, err = _exit_code(["run", "notebooks/13_continual_learning.ipynb", "-p", "seed", "-1", "--profile",
                            "smoke", "--runs-dir", str(tmp_path / "runs"), "-q"], capsys)
    assert code == 2 and "13_continual_learning.ipynb: parameter seed = -1 is not a seed" in err, err
    assert not (tmp_path / "runs").exists()


def test_good_parameters_pass():
    check_parameters("x", {"seed": 0, "profile": "smoke", "learning_rate": 2e-5, "batch_size": 8,
                           "analysis": False, "task": "mrpc", "num_epochs": None})
    check_parameters("x", {"seed": 2**32 - 1, "pretrain_seed": 3, "num_epochs": 0.5})
    with pytest.raises(ArgumentError, match=r"batch_size = 2\.5 is not a positive integer"):
        check_parameters("x", {"batch_size": 2.5})
    check_parameters("x", {"task": "rte", "tasks": ["cola", "stsb"]})
    with pytest.raises(ArgumentError, match=r"task = 'sst-2' is not a GLUE task .*sst2.*wnli\), or None"):
        check_parameters("x", {"task": "sst-2"})
    for tasks in ("mrpc", [], ["mrpc", "imdb"], ["ax"]):
        with pytest.raises(ArgumentError, match="is not a list of GLUE tasks"):
            check_parameters("x", {"tasks": tasks})


def test_bench_checks_every_run_parameter_before_running(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ndescription: a seed out of range\nnotebook: 07_finetuning_glue\n"
                    "parameters: {analysis: false}\nmatrix:\n  model: [minilm-l6]\n  task: [sst2]\n  seed: [0, -1]\n"
                    "  profile: [smoke]\ntolerance: 0.05\n")
    code, err = _exit_code(["bench", str(spec), "--runs-dir", str(tmp_path / "runs"), "-q"], capsys)
    assert code == 2 and "bad.yaml: 07_finetuning_glue.ipynb: parameter seed = -1 is not a seed" in err, err
    assert not (tmp_path / "runs").exists()
