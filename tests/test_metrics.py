"""The shipped GLUE metric against sklearn/scipy on random inputs, for every config."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lmcourse.errors import LmcourseError, UnknownNameError
from lmcourse.evaluate_modules.glue.glue import glue_scores
from lmcourse.metrics import GLUE_METRIC_CONFIGS, compute_glue_metric, glue_score, load_glue_metric, task_score

# Result keys of the Hub's `glue` metric (evaluate-metric/glue, glue.py), per config.
HUB_KEYS = {
    "cola": {"matthews_correlation"},
    "stsb": {"pearson", "spearmanr"},
    "mrpc": {"accuracy", "f1"},
    "qqp": {"accuracy", "f1"},
    **{c: {"accuracy"} for c in ("sst2", "mnli", "mnli_mismatched", "mnli_matched", "qnli", "rte", "wnli", "hans")},
}


def _random_inputs(config: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    if config == "stsb":
        refs = rng.uniform(0, 5, n)
        preds = refs + rng.normal(0, 1.5, n)
        return preds.astype(np.float32), refs.astype(np.float32)
    k = 3 if config.startswith("mnli") else 2
    refs = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.7, refs, rng.integers(0, k, n))
    return preds, refs


def _expected(config: str, preds, refs) -> dict[str, float]:
    if config == "cola":
        return {"matthews_correlation": matthews_corrcoef(refs, preds)}
    if config == "stsb":
        p = pearsonr(preds.astype(np.float64), refs.astype(np.float64))[0]
        s = spearmanr(preds, refs)[0]
        return {"pearson": p, "spearmanr": s, "combined_score": (p + s) / 2}
    acc = accuracy_score(refs, preds)
    if config in ("mrpc", "qqp"):
        f1 = f1_score(refs, preds)
        return {"accuracy": acc, "f1": f1, "combined_score": (acc + f1) / 2}
    return {"accuracy": acc}


def test_configs_match_the_hub_metric():
    assert set(GLUE_METRIC_CONFIGS) == set(HUB_KEYS)


@pytest.mark.parametrize("config", sorted(HUB_KEYS))
@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_module_equals_sklearn_scipy(config, seed):
    preds, refs = _random_inputs(config, 257 + 31 * seed, seed)
    metric = load_glue_metric(config)
    result = metric.compute(predictions=preds, references=refs)
    expected = _expected(config, preds, refs)
    assert set(result) == set(expected)
    assert HUB_KEYS[config] <= set(result)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
        assert -1.0 <= result[key] <= 1.0  # fractions, not percentages


def test_incremental_batches_equal_one_shot():
    preds, refs = _random_inputs("mrpc", 300, 3)
    metric = load_glue_metric("mrpc")
    for i in range(0, 300, 64):
        metric.add_batch(predictions=preds[i:i + 64], references=refs[i:i + 64])
    assert metric.compute() == pytest.approx(glue_scores("mrpc", preds, refs))


def test_task_names_map_to_configs():
    preds, refs = _random_inputs("mnli", 100, 4)
    assert compute_glue_metric("ax", preds, refs) == pytest.approx({"accuracy": accuracy_score(refs, preds)})


def test_unknown_config_and_length_mismatch():
    with pytest.raises(UnknownNameError, match=r"unknown GLUE metric config 'sst3'.*cola"):
        load_glue_metric("sst3")
    with pytest.raises(LmcourseError, match="3 predictions but 2 references"):
        compute_glue_metric("sst2", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="predictions but"):
        glue_scores("cola", [0, 1, 1], [0, 1])
    with pytest.raises(KeyError, match="unknown GLUE metric config"):
        glue_scores("nope", [0], [0])


def test_task_score_and_glue_score():
    per_task = {
        "cola": {"matthews_correlation": 0.5},
        "mrpc": {"accuracy": 0.8, "f1": 0.9, "combined_score": 0.85},
        "sst2": {"accuracy": 0.9},
    }
    assert task_score("mrpc", per_task["mrpc"]) == pytest.approx(0.85)
    assert task_score("stsb", {"pearson": 0.8, "spearmanr": 0.6}) == pytest.approx(0.7)
    assert glue_score(per_task) == pytest.approx((0.5 + 0.85 + 0.9) / 3)
    with pytest.raises(LmcourseError):
        glue_score({})
    with pytest.raises(LmcourseError, match="no score"):
        task_score("x", {"loss": 1.0})


def test_glue_score_reproduces_bert_large_leaderboard_score():
    """BERT-large on the GLUE test server: 80.5 (Devlin et al. 2019, abstract; per-task numbers from the
    GLUE leaderboard entry "BERT: 24-layers, 16-heads, 1024-hidden"). MNLI m/mm count as one task."""
    per_task = {
        "cola": {"matthews_correlation": 0.605}, "sst2": {"accuracy": 0.949},
        "mrpc": {"f1": 0.893, "accuracy": 0.854}, "stsb": {"pearson": 0.876, "spearmanr": 0.865},
        "qqp": {"f1": 0.721, "accuracy": 0.893}, "mnli_matched": {"accuracy": 0.867},
        "mnli_mismatched": {"accuracy": 0.859}, "qnli": {"accuracy": 0.927}, "rte": {"accuracy": 0.701},
        "wnli": {"accuracy": 0.651}, "ax": {"matthews_correlation": 0.396},
    }
    assert round(glue_score(per_task), 3) == 0.805
    with pytest.raises(LmcourseError, match="either as 'mnli'"):
        glue_score({**per_task, "mnli": {"accuracy": 0.8}})
