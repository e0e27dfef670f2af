"""`lmcourse run` / `course` / `data` / `env`: real papermill executions of small notebooks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lmcourse.cli import main as cli_main
from lmcourse.errors import ArgumentError, LmcourseError
from lmcourse.runner import find_notebook, list_notebooks, run_notebook

REPO = Path(__file__).resolve().parent.parent


def _notebook(path: Path, body: str, parameters: str | None = "profile = None\nvalue = 1") -> Path:
    cells = []
    if parameters is not None:
        cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells.append(nbformat.v4.new_code_cell(body))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


GOOD = """import os
from lmcourse.tracking import record_metrics
record_metrics({"double": value * 2, "profile_seen": profile, "env_profile": os.environ["LMCOURSE_PROFILE"]})"""


@pytest.fixture(scope="module")
def good_nb(tmp_path_factory) -> Path:
    return _notebook(tmp_path_factory.mktemp("nb") / "10_good.ipynb", GOOD)


def test_run_records_metrics_and_parameters(good_nb, tmp_path):
    result = run_notebook(good_nb, {"value": 21}, profile="smoke", runs_dir=tmp_path, run_id="r1", progress=False)
    assert result.ok and result.error is None
    assert result.run_dir == tmp_path / "10_good" / "r1"
    assert result.output.is_file()
    data = json.loads((result.run_dir / "metrics.json").read_text())
    assert data["status"] == "completed"
    assert data["metrics"] == {"double": 42, "profile_seen": "smoke", "env_profile": "smoke"}
    assert data["parameters"] == {"value": 21, "profile": "smoke"}
    assert data["profile"] == "smoke" and data["wall_time_s"] > 0
    assert data["hardware"]["cpu_cores"] >= 1 and "torch" in data["versions"]
    executed = nbformat.read(result.output, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_failing_notebook_keeps_output_and_exits_nonzero(tmp_path, capsys):
    nb = _notebook(tmp_path / "11_bad.ipynb", "raise ValueError('deliberate failure')")
    code = cli_main(["run", str(nb), "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"),
                     "--run-id", "x", "-q"])
    assert code == 1
    assert "deliberate failure" in capsys.readouterr().err
    run_dir = tmp_path / "runs" / "11_bad" / "x"
    data = json.loads((run_dir / "metrics.json").read_text())
    assert data["status"] == "failed" and "ValueError: deliberate failure" in data["error"]
    executed = nbformat.read(run_dir / "11_bad.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and errors[0]["evalue"] == "deliberate failure"


def test_bad_parameters_fail_before_running(good_nb, tmp_path, capsys):
    with pytest.raises(ArgumentError, match=r"no parameter\(s\) \['valu'\].*'value'"):
        run_notebook(good_nb, {"valu": 1}, runs_dir=tmp_path, progress=False)
    assert not (tmp_path / "10_good").exists()
    assert cli_main(["run", str(good_nb), "--profile", "laptop", "--runs-dir", str(tmp_path), "-q"]) == 2
    assert "unknown profile 'laptop'" in capsys.readouterr().err
    no_params = _notebook(tmp_path / "12_noparams.ipynb", "x = 1", parameters=None)
    with pytest.raises(ArgumentError, match="no 'profile' parameter"):
        run_notebook(no_params, runs_dir=tmp_path, progress=False)
    with pytest.raises(LmcourseError, match="not found; give a path or one of: 00_getting_started"):
        find_notebook("99")


def test_cli_parameters_are_yaml_scalars(good_nb, tmp_path):
    assert cli_main(["run", str(good_nb), "-p", "value", "2.5", "--profile", "smoke", "--runs-dir", str(tmp_path),
                     "--run-id", "y", "-q"]) == 0
    data = json.loads((tmp_path / "10_good" / "y" / "metrics.json").read_text())
    assert data["metrics"]["double"] == 5.0


def test_course_runs_all_in_order_and_reports_failure(tmp_path, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", GOOD)
    _notebook(folder / "02_second.ipynb", "raise RuntimeError('second fails')")
    _notebook(folder / "03_third.ipynb", GOOD)
    assert [p.name for p in list_notebooks(folder)] == ["01_first.ipynb", "02_second.ipynb", "03_third.ipynb"]
    code = cli_main(["course", "--notebooks", str(folder), "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"),
                     "--run-id", "c", "-q"])
    assert code == 1
    out = capsys.readouterr().out
    assert out.index("01_first") < out.index("02_second") < out.index("03_third")
    statuses = {p.parent.parent.name: json.loads(p.read_text())["status"]
                for p in (tmp_path / "runs").glob("*/c/metrics.json")}
    assert statuses == {"01_first": "completed", "02_second": "failed", "03_third": "completed"}


def test_data_and_env_commands(capsys, data_dir):
    assert cli_main(["data"]) == 0
    out = capsys.readouterr().out
    assert "sst2" in out and "LMCOURSE_DATA_DIR" in out and "unavailable" in out
    assert cli_main(["data", "--missing"]) == 0
    missing = capsys.readouterr().out
    assert "qnli" in missing and " cola " not in missing
    assert cli_main(["env"]) == 0
    env_out = capsys.readouterr().out
    assert "torch" in env_out and "2.13" in env_out and str(data_dir) in env_out


def test_getting_started_notebook_via_the_installed_command(tmp_path):
    """The issue's acceptance check: `lmcourse run notebooks/00_getting_started.ipynb --profile smoke`."""
    exe = Path(sys.executable).parent / "lmcourse"
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "lmcourse"]),
           "run", "notebooks/00_getting_started.ipynb", "--profile", "smoke", "--runs-dir", str(tmp_path), "-q"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [metrics_file] = list(tmp_path.glob("00_getting_started/*/metrics.json"))
    data = json.loads(metrics_file.read_text())
    assert data["status"] == "completed" and data["profile"] == "smoke"
    assert 0.4 < data["metrics"]["sst2/majority_accuracy"] < 0.6
    assert (metrics_file.parent / "00_getting_started.ipynb").is_file()


def test_headless_runs_keep_progress_bars_out_of_the_saved_notebook(tmp_path):
    body = ("from tqdm.auto import tqdm\nimport time\n"
            "for _ in tqdm(range(30), mininterval=0, desc='loop'):\n    time.sleep(0.01)\nprint('done')")
    nb = _notebook(tmp_path / "11_bars.ipynb", body)
    before = os.environ.get("TQDM_DISABLE")
    result = run_notebook(nb, {}, profile="smoke", runs_dir=tmp_path / "runs", run_id="r", progress=False)
    assert result.ok, result.error
    assert os.environ.get("TQDM_DISABLE") == before  # this process's environment is restored
    executed = nbformat.read(result.output, as_version=4)
    streams = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    text = "".join(o["text"] for o in streams)
    assert "done" in text and "it/s" not in text and "loop" not in text, text[:500]


PROFILED = """import torch
from torch.profiler import ProfilerActivity, profile
with profile(activities=[ProfilerActivity.CPU]) as prof:
    torch.ones(3) @ torch.ones(3)
print("profiled")"""


def test_course_console_is_one_line_a_notebook_then_the_table(tmp_path, capfd, monkeypatch):
    """No progress bars, no kernel log ("running over TCP without encryption") and no torch profiler lines
    ("USDT: ... profiler_start") on the console (the kernel writes to the runner's file descriptors: capfd)."""
    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_profiled.ipynb", PROFILED)
    _notebook(folder / "02_plain.ipynb", GOOD)
    assert cli_main(["course", "--notebooks", str(folder), "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"),
                     "--run-id", "c"]) == 0
    out, err = capfd.readouterr()
    assert err == "", err
    lines = out.splitlines()
    assert lines[0].startswith("2 notebooks, smoke profile, into ")
    assert re.fullmatch(r"01_profiled\.ipynb  completed in \d+\.\ds", lines[1]), lines
    assert re.fullmatch(r"02_plain\.ipynb     completed in \d+\.\ds", lines[2]), lines
    assert lines[3] == "" and lines[4].split() == ["notebook", "status", "seconds", "output"] and len(lines) == 8
    assert os.environ.get("KINETO_LOG_LEVEL") is None  # this process's environment is restored
    executed = nbformat.read(tmp_path / "runs" / "01_profiled" / "c" / "01_profiled.ipynb", as_version=4)
    assert "profiled" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
