"""Metric recording (what `lmcourse run` collects) and the reproducibility helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmcourse import tracking
from lmcourse.runtime import choose_device, hardware_info, library_versions, seed_everything, set_cpu_threads


@pytest.fixture(autouse=True)
def _clean():
    tracking.reset()
    yield
    tracking.reset()


def test_record_writes_plain_json_to_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.RUN_DIR_ENV, str(tmp_path))
    tracking.record_metrics({"accuracy": np.float32(0.5), "steps": torch.tensor(3), "bad": float("nan")},
                            prefix="sst2")
    tracking.record("note", "ok")
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data == {"metrics": {"sst2/accuracy": 0.5, "sst2/steps": 3, "sst2/bad": None, "note": "ok"}}
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_record_without_run_dir_keeps_values_in_memory(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.RUN_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.record("x", 1.5) == {"x": 1.5}
    assert tracking.recorded() == {"x": 1.5}
    assert not (tmp_path / "metrics.json").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    tracking.write_json_atomic(path, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        tracking.write_json_atomic(path, {"a": Boom()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_seed_everything_fixes_torch_and_numpy():
    seed_everything(7)
    a = (torch.randn(3), np.random.rand(3))
    seed_everything(7)
    b = (torch.randn(3), np.random.rand(3))
    torch.testing.assert_close(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_device_and_threads(monkeypatch):
    monkeypatch.setenv("LMCOURSE_DEVICE", "cpu")
    assert choose_device() == "cpu"
    monkeypatch.delenv("LMCOURSE_DEVICE")
    assert choose_device() == ("cuda" if torch.cuda.is_available() else choose_device())
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1
        monkeypatch.setenv("LMCOURSE_THREADS", "2")
        assert set_cpu_threads() == 2
    finally:
        torch.set_num_threads(before)
    info = hardware_info()
    assert {"cpu_model", "cpu_cores", "torch_threads", "device", "gpu"} <= set(info)
    versions = library_versions()
    assert versions["torch"].startswith("2.13") and versions["lmcourse"] != "not installed"
