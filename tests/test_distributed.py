"""Data-parallel training: one process with batch B·k equals k processes with batch B (gloo, CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from lmcourse import distributed as dist
from lmcourse.cli import main as run
from lmcourse.errors import ArgumentError

TINY = ["--steps", "6", "--global-batch", "8", "--block-size", "32", "--n-layer", "2", "--n-head", "2",
        "--n-embd", "32", "--threads", "1", "--seed", "3"]


def _losses(folder):
    data = json.loads((folder / "history.json").read_text())
    return data, [row["loss"] for row in data["history"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_arithmetic_and_sharding():
    assert dist.global_batch_size(4, 2, 3) == 24
    assert dist.per_device_batch_size(24, 2, 3) == 4
    with pytest.raises(ArgumentError, match="not divisible"):
        dist.per_device_batch_size(10, 2, 2)
    batch = {"input_ids": torch.arange(24).reshape(8, 3), "targets": torch.arange(8)}
    shards = [dist.shard_batch(batch, r, 2) for r in range(2)]
    torch.testing.assert_close(torch.cat([s["input_ids"] for s in shards]), batch["input_ids"])
    micro = dist.micro_batches(shards[1], 2)
    assert [m["targets"].tolist() for m in micro] == [[4, 5], [6, 7]]
    with pytest.raises(ArgumentError, match="cannot be split evenly"):
        dist.shard_batch(batch, 0, 3)
    assert dist.world_size() == 1 and dist.is_main_process()
    assert dist.reduce_stats({"loss": 2.0}) == {"loss": 2.0}


def test_two_processes_and_accumulation_follow_the_single_process_curve(tmp_path):
    threads = torch.get_num_threads()
    try:
        assert run(["pretrain", *TINY, "--out", str(tmp_path / "one")]) == 0
        assert run(["pretrain", *TINY, "--grad-accum", "2", "--out", str(tmp_path / "accum")]) == 0
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "lmcourse", "pretrain", *TINY, "--save", "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, loss_one = _losses(tmp_path / "one")
    two, loss_two = _losses(tmp_path / "two")
    accum, loss_accum = _losses(tmp_path / "accum")
    assert (one["world_size"], two["world_size"], accum["world_size"]) == (1, 2, 1)
    assert (one["per_device_batch"], two["per_device_batch"], accum["per_device_batch"]) == (8, 4, 4)
    assert len(loss_one) == 6 and loss_one[-1] < loss_one[0]
    # Same examples per step, gradients averaged: equal up to float rounding of the reductions.
    torch.testing.assert_close(torch.tensor(loss_two), torch.tensor(loss_one), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(loss_accum), torch.tensor(loss_one), rtol=0, atol=1e-5)
    # only the main process wrote: one checkpoint folder, one history
    assert [p.name for p in (tmp_path / "two" / "checkpoints").iterdir()] == ["checkpoint-6"]
    assert proc.stdout.count("pretrain: 6 steps on 2 process(es)") == 1


def test_notebook_launcher_trains_like_torchrun(tmp_path):
    """From a notebook: accelerate's notebook_launcher forks 2 processes that train like the single one.

    Run in a fresh interpreter (as a notebook kernel would be): forking the test process itself, with
    its thread pools already started, is not what a user does."""
    assert run(["pretrain", *TINY, "--out", str(tmp_path / "one")]) == 0
    script = (
        "from lmcourse.distributed import launch_in_notebook\n"
        "from lmcourse.cli import main as run\n"
        f"launch_in_notebook(run, (['pretrain', *{TINY!r}, '--out', {str(tmp_path / 'two')!r}],), num_processes=2)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, loss_one = _losses(tmp_path / "one")
    two, loss_two = _losses(tmp_path / "two")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    torch.testing.assert_close(torch.tensor(loss_two), torch.tensor(loss_one), rtol=0, atol=1e-5)
