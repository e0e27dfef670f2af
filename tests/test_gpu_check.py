"""`python3 tasks.py gpu-check` / `lmcourse gpu-check` (issue #42): stops at once without CUDA (exit code 2,
nothing written); the runner and its report, exercised on the CPU (the CUDA run itself needs a GPU)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
import torch

from lmcourse import runner
from lmcourse.cli import _gpu_check_report
from lmcourse.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tasks(monkeypatch):
    spec = importlib.util.spec_from_file_location("lmcourse_tasks", REPO / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "setup", lambda: calls.append("setup"))
    monkeypatch.setattr(module, "_run", lambda cmd, env=None: calls.append([str(c) for c in cmd]) or 0)
    module.calls = calls
    return module


def test_tasks_gpu_check_stops_at_once_without_a_driver(tasks, monkeypatch, capsys):
    monkeypatch.setattr(tasks, "cuda_driver_present", lambda: False)
    assert tasks.main(["gpu-check"]) == 2
    assert "gpu-check needs an NVIDIA GPU" in capsys.readouterr().err
    assert tasks.calls == []  # no venv setup, nothing run


def test_tasks_gpu_check_runs_the_lmcourse_command_with_a_driver(tasks, monkeypatch):
    monkeypatch.setattr(tasks, "cuda_driver_present", lambda: True)
    assert tasks.main(["gpu-check", "--only", "02"]) == 0
    assert tasks.calls[0] == "setup"
    assert tasks.calls[1][0].endswith("lmcourse") and tasks.calls[1][1:] == ["gpu-check", "--only", "02"]
    assert "gpu-check" in tasks.__doc__


def test_lmcourse_gpu_check_refuses_without_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_main(["gpu-check", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device here" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    assert cli_main(["gpu-check", "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "runs on 'cuda' or 'cuda:N'" in capsys.readouterr().err


def test_lmcourse_gpu_check_report_with_cuda_faked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    seen = {}

    def fake(notebooks, device, runs_dir=None, run_id=None, progress=False):
        seen.update(notebooks=[nb.name for nb in notebooks], device=device)
        return [{"notebook": nb.name, "status": "completed", "seconds": 1.0, "device": device,
                 "dtype": "bf16 autocast", "peak memory MiB": "12", "error": "", "run_dir": tmp_path / nb.stem}
                for nb in notebooks]

    monkeypatch.setattr(runner, "gpu_check", fake)
    assert cli_main(["gpu-check", "--only", "02_", "04_", "--device", "cuda:0"]) == 0
    out = capsys.readouterr().out
    assert seen == {"notebooks": ["02_attention_math.ipynb", "04_tokenization.ipynb"], "device": "cuda:0"}
    assert out.startswith("gpu-check: Fake GPU, torch ") and "bf16 supported; 2 notebooks, smoke profile" in out
    assert "total 2 s (budget 480 s); 2 passed, 0 failed" in out


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = None\nseed = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_gpu_check_runner_on_the_cpu(tmp_path, capsys):
    """What the runner does is device-independent: the notebooks see the device, the epilogue records device,
    dtype and peak memory (none on the CPU), a failure is a FAIL row. On a GPU the same runs take CUDA."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    good = _notebook(folder / "01_good.ipynb", "import os\nassert os.environ['LMCOURSE_DEVICE'] == 'cpu'\n"
                                              "assert profile == 'smoke'")
    _notebook(folder / "02_bad.ipynb", "raise RuntimeError('needs the GPU path')")
    before = os.environ.get("LMCOURSE_DEVICE")
    rows = runner.gpu_check(runner.list_notebooks(folder), "cpu", runs_dir=tmp_path / "runs", run_id="g")
    assert os.environ.get("LMCOURSE_DEVICE") == before
    assert [(r["notebook"], r["status"]) for r in rows] == [("01_good.ipynb", "completed"), ("02_bad.ipynb", "failed")]
    assert rows[0]["device"] == "cpu" and rows[0]["dtype"] in ("bf16 autocast", "fp32")
    assert rows[0]["peak memory MiB"] == "" and "needs the GPU path" in rows[1]["error"]
    run_dir = tmp_path / "runs" / "gpu-check" / "g" / "01_good"
    executed = nbformat.read(run_dir / "01_good.ipynb", as_version=4)
    assert "epilogue" in executed.cells[-1].metadata["tags"] and "max_memory_allocated" in executed.cells[-1].source
    assert len(nbformat.read(good, as_version=4).cells) == 2  # the notebook itself is unchanged
    assert not list(run_dir.glob(".input-*"))
    assert _gpu_check_report(rows, 480) == 1
    out = capsys.readouterr().out
    assert "01_good.ipynb  pass" in out and "02_bad.ipynb   FAIL" in out and "1 passed, 1 failed: 02_bad.ipynb" in out
