"""The run context: arguments beat environment defaults, clear errors, seeding without side effects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lmcourse import runtime
from lmcourse.context import DEVICE_ENV, THREADS_ENV, RunContext, resolve_context, resolve_device, resolve_threads
from lmcourse.errors import ArgumentError, UnknownNameError
from lmcourse.profiles import PROFILE_ENV, PROFILES
from lmcourse.tracking import RUN_DIR_ENV


@pytest.fixture
def clean_env(monkeypatch):
    for name in (PROFILE_ENV, DEVICE_ENV, THREADS_ENV, RUN_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_arguments_beat_the_environment_defaults(clean_env, tmp_path):
    clean_env.setenv(PROFILE_ENV, "gpu")
    clean_env.setenv(DEVICE_ENV, "meta")  # a device every machine has (tensors without data)
    clean_env.setenv(THREADS_ENV, "3")
    clean_env.setenv(RUN_DIR_ENV, str(tmp_path / "from-env"))
    from_env = resolve_context()
    assert from_env.profile is PROFILES["gpu"] and from_env.device == torch.device("meta")
    assert from_env.threads == 3 and from_env.run_dir == tmp_path / "from-env" and from_env.seed == 0
    assert from_env.bf16 is False  # bf16=None: only where the device supports it
    explicit = resolve_context("smoke", seed=7, device="cpu", bf16=False, threads=1, run_dir=tmp_path / "arg")
    assert explicit.profile is PROFILES["smoke"] and explicit.device == torch.device("cpu")
    assert (explicit.seed, explicit.threads, explicit.bf16) == (7, 1, False)
    assert explicit.run_dir == tmp_path / "arg"
    assert resolve_context(PROFILES["cpu"], device="cpu").profile is PROFILES["cpu"]
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_threads(2) == 2 and resolve_threads() == 3


def test_defaults_without_environment(clean_env):
    ctx = resolve_context(device="cpu")
    assert ctx.profile.name == "cpu" and ctx.run_dir is None and ctx.threads >= 1
    auto = resolve_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert auto.type in {"cuda", "mps", "cpu"}


def test_clear_errors(clean_env):
    with pytest.raises(ArgumentError, match="unknown device 'tpu'"):
        resolve_context(device="tpu")
    clean_env.setenv(DEVICE_ENV, "gpu0")
    with pytest.raises(ArgumentError, match="unknown device 'gpu0'"):
        resolve_context()
    with pytest.raises(UnknownNameError, match="unknown profile 'laptop'"):
        resolve_context("laptop", device="cpu")
    for bad in ("1", 1.0, True, None):
        with pytest.raises(ArgumentError, match="seed must be an integer"):
            resolve_context("smoke", seed=bad, device="cpu")
    with pytest.raises(ArgumentError, match="threads must be >= 1"):
        resolve_context("smoke", device="cpu", threads=-2)


def test_cuda_without_a_gpu_is_an_error(clean_env):
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    for asked in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ArgumentError, match="no CUDA GPU"):
            resolve_context("smoke", device=asked)
    clean_env.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ArgumentError, match="no CUDA GPU"):
        resolve_context("smoke")
    assert resolve_context("smoke", device="cpu").device == torch.device("cpu")  # the argument wins


def test_bf16_policy(clean_env):
    # resolve_context looks bf16_supported up on lmcourse.runtime when it runs, so patching it there is seen
    clean_env.setattr(runtime, "bf16_supported", lambda device: False)
    with pytest.raises(ArgumentError, match="bf16=True"):
        resolve_context("smoke", device="cpu", bf16=True)
    off = resolve_context("smoke", device="cpu")
    assert off.bf16 is False and off.dtype == torch.float32
    clean_env.setattr(runtime, "bf16_supported", lambda device: True)
    on = resolve_context("smoke", device="cpu")
    assert on.bf16 is True and on.dtype == torch.bfloat16
    assert resolve_context("smoke", device="cpu", bf16=True).bf16 is True
    assert resolve_context("smoke", device="cpu", bf16=False).bf16 is False  # an explicit "no" is kept
    with on.autocast():
        assert torch.is_autocast_enabled("cpu")
    with on.autocast(enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    with off.autocast():
        assert not torch.is_autocast_enabled("cpu")


def _ctx(seed: int = 0) -> RunContext:
    return resolve_context("smoke", seed=seed, device="cpu", bf16=False, threads=1)


def test_seeded_gives_the_seeds_numbers_and_restores_the_global_rng():
    torch.manual_seed(99)
    state = torch.get_rng_state()
    with _ctx(5).seeded():
        a = torch.randn(4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream continues untouched
    with _ctx(5).seeded():
        b = torch.randn(4)
    with _ctx(5).seeded(offset=1):
        c = torch.randn(4)
    with _ctx(6).seeded():
        d = torch.randn(4)
    torch.manual_seed(5)
    assert torch.equal(a, b) and torch.equal(a, torch.randn(4))  # = torch.manual_seed(seed)
    assert not torch.equal(a, c) and torch.equal(c, d)  # offset k is seed + k
    torch.manual_seed(99)
    expected = torch.randn(3)
    torch.manual_seed(99)
    with _ctx(1).seeded():
        torch.randn(1000)
    assert torch.equal(torch.randn(3), expected)


def test_generator_is_a_seeded_cpu_generator():
    g1, g2 = _ctx(3).generator(), _ctx(3).generator()
    assert g1.device == torch.device("cpu")
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    assert not torch.equal(torch.rand(5, generator=_ctx(3).generator(1)), torch.rand(5, generator=_ctx(3).generator()))
    assert torch.equal(torch.rand(5, generator=_ctx(3).generator(2)),
                       torch.rand(5, generator=torch.Generator().manual_seed(5)))


def test_with_changes_copies_and_converts():
    ctx = _ctx()
    other = ctx.with_changes(profile="gpu", device="meta", seed=4, threads=2)
    assert other.profile is PROFILES["gpu"] and other.device == torch.device("meta")
    assert (other.seed, other.threads) == (4, 2)
    assert ctx.profile is PROFILES["smoke"] and ctx.device == torch.device("cpu") and ctx.seed == 0  # unchanged
    assert ctx.with_changes(profile=PROFILES["cpu"]).profile is PROFILES["cpu"]
    with pytest.raises(UnknownNameError):
        ctx.with_changes(profile="laptop")
    with pytest.raises(TypeError):
        ctx.with_changes(sed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 3  # type: ignore[misc]
    assert ctx.to_dict() == {"profile": "smoke", "seed": 0, "device": "cpu", "bf16": False, "threads": 1,
                             "run_dir": None}
    assert "profile=smoke" in ctx.describe() and "seed=0" in ctx.describe()


def test_apply_seeds_everything_and_sets_threads():
    before = torch.get_num_threads()
    try:
        ctx = _ctx(11).with_changes(threads=1)
        assert ctx.apply() is ctx and torch.get_num_threads() == 1
        a = (torch.randn(2), np.random.rand(2))
        ctx.apply()
        b = (torch.randn(2), np.random.rand(2))
        assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    finally:
        torch.set_num_threads(before)
