"""`lmcourse bench --backend ray`: a local Ray cluster with two workers gives the local backend's results."""

from __future__ import annotations

import json
import os

import pytest
import ray  # the optional `cluster` extra; pinned in requirements.txt so CI always tests it

from conftest import GOOD_SPEC, write_spec
from lmcourse.bench import FORWARDED_ENV, load_results, make_executor, run_spec
from lmcourse.errors import ArgumentError, UnknownNameError


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with two worker CPUs, started (and stopped) by the test."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def _metrics_by_run(runs_dir, bench):
    out = {}
    for path in sorted((runs_dir / bench).glob("*/metrics.json")):
        data = json.loads(path.read_text())
        out[path.parent.name] = (data["status"], data["metrics"], data["parameters"])
    return out


def test_fake_spec_same_results_skip_and_failure(ray_cluster, bench_dir):
    spec = write_spec(bench_dir, GOOD_SPEC)
    local = run_spec(spec, runs_dir=bench_dir / "local", progress=False)
    remote = run_spec(spec, runs_dir=bench_dir / "ray", progress=False, executor=make_executor("ray"))
    assert sorted(remote.completed) == sorted(local.completed) and remote.failed == local.failed
    assert len(remote.failed) == 1
    assert _metrics_by_run(bench_dir / "ray", "fake") == _metrics_by_run(bench_dir / "local", "fake")
    failed_dir = bench_dir / "ray" / "fake" / remote.failed[0]
    assert (failed_dir / "50_fake.ipynb").is_file()  # the output notebook came back from the worker
    # rerun: completed runs are skipped, only the failed one goes to the cluster again
    again = run_spec(spec, runs_dir=bench_dir / "ray", progress=False, executor=make_executor("ray"))
    assert sorted(again.skipped) == sorted(local.completed) and again.failed == remote.failed
    assert len(load_results(bench_dir / "ray" / "fake" / "results.csv")) == 5


def test_smoke_spec_on_ray_equals_local(ray_cluster, smoke_bench_local, tmp_path):
    # one real notebook run on the cluster (the sentence-pair task, which has the most metrics); the fake spec
    # above covers several runs, skipping and failure on Ray, and the local fixture runs both smoke tasks
    remote = run_spec("smoke", runs_dir=tmp_path, progress=False, executor=make_executor("ray"), only="mrpc")
    assert remote.failed == [] and len(remote.completed) == 1
    assert set(remote.completed) < set(smoke_bench_local.completed)
    local_rows = {r["run_id"]: r for r in load_results(smoke_bench_local.results_file)}
    for row in load_results(remote.results_file):
        ref = local_rows[row["run_id"]]
        for key in ("accuracy", "f1", "combined_score", "score", "trainable_params"):
            if ref[key] is None:
                assert row[key] is None
            else:
                assert row[key] == pytest.approx(ref[key], abs=1e-9), (row["run_id"], key)


def test_backend_errors():
    with pytest.raises(UnknownNameError, match="unknown backend 'slurm'"):
        make_executor("slurm")
    with pytest.raises(ArgumentError, match="--address only applies"):
        make_executor("local", address="auto")
