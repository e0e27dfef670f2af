"""Profiles: three named size sets, the environment default, and clear errors."""

from __future__ import annotations

import pytest

from lmcourse.errors import UnknownNameError
from lmcourse.profiles import DEFAULT_PROFILE, PROFILE_ENV, PROFILES, get_profile, resolve_profile_name


def test_three_profiles_grow_from_smoke_to_gpu():
    assert set(PROFILES) == {"smoke", "cpu", "gpu"}
    smoke, cpu, gpu = PROFILES["smoke"], PROFILES["cpu"], PROFILES["gpu"]
    for field in ("hidden_size", "num_layers", "block_size", "max_steps", "embedding_dim", "max_length"):
        assert getattr(smoke, field) <= getattr(cpu, field) <= getattr(gpu, field), field
    assert smoke.max_train_samples < cpu.max_train_samples and gpu.max_train_samples is None
    for p in PROFILES.values():
        assert p.hidden_size % p.num_heads == 0
    # the published fine-tuning recipe (BERT paper / run_glue): 3 epochs, lr 2e-5, batch 32, length 128
    assert (gpu.num_epochs, gpu.learning_rate, gpu.batch_size, gpu.max_length) == (3, 2e-5, 32, 128)


def test_environment_default_and_explicit_override(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "gpu")
    assert get_profile().name == "gpu"
    assert get_profile("smoke").name == "smoke"  # a parameter beats the environment
    assert get_profile(PROFILES["cpu"]) is PROFILES["cpu"]
    monkeypatch.delenv(PROFILE_ENV)
    assert resolve_profile_name(None) == DEFAULT_PROFILE
    assert resolve_profile_name(" SMOKE ") == "smoke"


def test_unknown_profile_and_field(monkeypatch):
    with pytest.raises(UnknownNameError, match=r"unknown profile 'laptop'.*cpu.*gpu.*smoke"):
        get_profile("laptop")
    monkeypatch.setenv(PROFILE_ENV, "tpu")
    with pytest.raises(UnknownNameError, match="LMCOURSE_PROFILE"):
        get_profile()
    p = PROFILES["smoke"].with_overrides(batch_size=4)
    assert p.batch_size == 4 and PROFILES["smoke"].batch_size != 4
    with pytest.raises(UnknownNameError, match="unknown profile field"):
        PROFILES["smoke"].with_overrides(batchsize=4)
