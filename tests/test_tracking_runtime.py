"""Metric recording (what `lmcourse run` collects) and the reproducibility helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmcourse import runtime, tracking
from lmcourse.runtime import cpu_flags, cpu_model, cpuinfo, hardware_info, library_versions, seed_everything


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


def test_hardware_info_reports_the_given_device(monkeypatch):
    info = hardware_info(torch.device("cpu"))
    assert {"cpu_model", "cpu_cores", "torch_threads", "device", "gpu", "platform"} <= set(info)
    assert info["device"] == "cpu" and info["cpu_model"] == cpu_model()
    assert hardware_info("meta")["device"] == "meta"
    monkeypatch.setenv("LMCOURSE_DEVICE", "cpu")
    assert hardware_info()["device"] == "cpu"  # default: lmcourse.runtime.resolve_device()
    versions = library_versions()
    assert versions["torch"].startswith("2.13") and versions["lmcourse"] != "not installed"
    assert not hasattr(runtime, "choose_device") and not hasattr(runtime, "set_cpu_threads")


def test_cpuinfo_is_parsed_once_for_model_and_flags(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU @ 2GHz\nflags\t\t: fpu avx2 amx_bf16\n\n"
                    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    info = cpuinfo(str(fake))
    assert info["model name"] == "Test CPU @ 2GHz" and info["flags"].split() == ["fpu", "avx2", "amx_bf16"]
    assert cpuinfo(str(tmp_path / "missing")) == {}
    assert isinstance(cpu_model(), str) and cpu_model()
    flags = cpu_flags()
    assert isinstance(flags, set)
    if cpuinfo():  # Linux: the flags of this machine's CPU
        assert flags == set(cpuinfo()["flags"].split()) and cpu_model() == cpuinfo()["model name"]
