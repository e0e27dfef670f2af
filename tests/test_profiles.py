"""Profiles: three named size sets, the environment default, and clear errors."""

from __future__ import annotations

import pytest

from lmcourse.errors import UnknownNameError
from lmcourse.profiles import DEFAULT_PROFILE, PROFILE_ENV, PROFILES, get_profile, resolve_profile_name


def test_three_profiles_grow_from_smoke_to_gpu():
    assert set(PROFILES) == {"smoke", "cpu", "gpu"}
    smoke, cpu, gpu = PROFILES["smoke"], PROFILES["cpu"], PROFILES["gpu"]
    for field in ("hidden_size", "num_layers", "block_size", "max_steps", "max_length"):
        assert getattr(smoke, field) <= getattr(cpu, field) <= getattr(gpu, field), field
    for section, key in [("embeddings", "dim"), ("tokenizers", "wordpiece_vocab"), ("tokenizers", "bpe_vocab")]:
        values = [getattr(p, section)[key] for p in (smoke, cpu, gpu)]
        assert values == sorted(values), (section, key)
    assert max(smoke.attention_cost["seq_lens"]) <= max(cpu.attention_cost["seq_lens"]) \
        <= max(gpu.attention_cost["seq_lens"])
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


def test_every_profile_has_every_chapter_section():
    from lmcourse.profiles import SECTIONS

    for p in PROFILES.values():
        for name in SECTIONS:
            section = p.section(name)
            assert section, (p.name, name)
            assert section == getattr(p, name) and section is not getattr(p, name)  # a copy
        assert {"dim", "epochs", "wikitext_splits", "glue_tasks"} <= set(p.embeddings)
        assert {"seq_lens", "batch", "heads", "head_dim", "repeats"} == set(p.attention_cost)
        assert {"wordpiece_vocab", "bpe_vocab", "min_frequency"} == set(p.tokenizers)
    for gone in ("embedding_dim", "embedding_epochs"):
        assert not hasattr(PROFILES["cpu"], gone)
    with pytest.raises(UnknownNameError, match="unknown profile section"):
        PROFILES["cpu"].section("embedding")


def test_transfer_sections_keep_the_study_design():
    """Notebook 14: the issue's design (5 probe seeds, the label-efficiency sizes, a learning-rate grid per
    initialisation, fine-tuning until converged, replicated and gated pretraining) in the cpu and gpu profiles,
    and a ckpt_n that section 4 can compare at (fine-tuned and probed)."""
    from lmcourse import transfer as TR

    for p in PROFILES.values():
        t = p.transfer
        assert t["ckpt_n"] in t["ft_sizes"], p.name  # continued MLM is compared with MiniLM there
        assert t["lr_n"] in t["ft_sizes"], p.name  # the sweep's seed-0 run is reused, not repeated
        assert t["minilm_ft"] or not t["variant_ft"], p.name  # continued MLM is fine-tuned at MiniLM's chosen rate
    for p in (PROFILES["cpu"], PROFILES["gpu"]):
        t = p.transfer
        assert len(t["probe_seeds"]) >= 5 and len(t["ft_seeds"]) >= 3, p.name
        assert tuple(t["probe_sizes"]) == (100, 300, 1000, 3000, None), p.name
        assert len(t["minilm_lrs"]) >= 2 and len(t["random_lrs"]) >= 2 and len(t["scratch_lrs"]) >= 2, p.name
        # a readout that can learn for every arm: epochs with early stopping, random init and scratch up to 3e-3
        assert t["ft_epochs"] >= 10 and 1 <= t["ft_patience"] < t["ft_epochs"], p.name
        assert max(t["random_lrs"]) >= 3e-3 and max(t["scratch_lrs"]) >= 3e-3, p.name
        # the pretraining is replicated (the unit of replication) and gated on beating the unigram baseline
        assert len(t["pretrain_seeds"]) >= 3 and t["gate_margin"] > 0, p.name
        assert t["distill"]["random_teacher"], p.name  # distillation's control: a teacher that learned nothing
        assert t["model"]["hidden_dropout_prob"] == 0 and t["model"]["attention_probs_dropout_prob"] == 0, p.name
        # the crossing is fitted through >= 4 checkpoints over >= 1 decade of compute
        assert TR.crossing_supported([f * t["pretrain_steps"] for f in t["checkpoints"] if f > 0]), p.name
        assert t["assert_n"] is None or t["assert_n"] in t["ft_sizes"], p.name
    assert PROFILES["cpu"].transfer["assert_n"] is not None  # the profile that was run asserts what it measured


def test_transfer_checks_have_intervals():
    """Notebook 14's checks assert a paired 95 % CI (lmcourse.spread.compare): at least 2 seeds on each side, and
    the distilled student's probe at ckpt_n on subsets smaller than the pool (the whole pool is one fit per
    encoder, no interval, so the notebook makes no comparison there)."""
    for p in PROFILES.values():
        t = p.transfer
        if t["assert_n"] is not None:
            assert len(t["ft_seeds"]) >= 2 and t["assert_margin"] > 0, p.name
        if t["assert_distill"] is not None:
            a = t["assert_distill"]
            assert len(t["probe_seeds"]) >= 2 and a["margin"] > 0, p.name
            assert a["task"] in t["probe_tasks"], p.name
            pool = t["probe_pool"][a["task"]]
            assert pool is None or t["ckpt_n"] < pool, p.name
