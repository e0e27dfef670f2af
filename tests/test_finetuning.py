"""finetune() end to end on a tiny random BERT (single sentence, pair, regression), its errors, the
throughput callback's token counts and FGM's perturbation norm and exact restore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmcourse.context import resolve_context
from lmcourse.data import get_task, load_glue
from lmcourse.errors import ArgumentError, DataUnavailableError, UnknownNameError
from lmcourse.finetuning import (
    FGM,
    ThroughputCallback,
    finetune,
    majority_baseline,
    metric_record,
    split_selection,
    task_settings,
    tfidf_baseline,
)
from lmcourse.metrics import compute_glue_metric

SMOKE = resolve_context("smoke", seed=0, device="cpu", bf16=False)


FAST = {"max_train_samples": 48, "max_eval_samples": 40, "num_epochs": 1, "batch_size": 16, "max_length": 32,
        "progress": False, "bf16": False}


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb"])
def test_finetune_tiny(task, tiny_bert, tmp_path):
    spec = get_task(task)
    res = finetune(task, tiny_bert, ctx=SMOKE, output_dir=tmp_path, **FAST)
    assert list(res.metrics) == list(spec.eval_splits)
    m = res.metrics["validation"]
    preds = res.predictions["validation"]
    assert preds.logits.shape == (40, spec.num_labels)
    assert preds.labels.shape == (40,)
    # metrics are exactly the GLUE metric of the returned logits, plus combined_score
    expected = compute_glue_metric(task, preds.predictions, preds.labels)
    assert set(m) == set(expected) | {"combined_score"}
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, abs=1e-6)
    assert res.main_metric in m
    # the checkpoint is safetensors and reloads to the same predictions
    best = Path(res.best_checkpoint)
    assert (best / "model.safetensors").is_file() and not list(best.glob("pytorch_model*.bin"))
    assert not list(Path(tmp_path).glob("checkpoint-*"))
    # throughput: non-padding tokens = tokenised lengths of the 48 training examples (1 epoch)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    raw, held_out = split_selection(load_glue(task, "train").shuffle(seed=0).select(range(48)), 0.1, None, 0)
    enc = tok(*[list(raw[c]) for c in spec.input_columns], truncation=True, max_length=32)
    assert res.throughput["train_tokens"] == sum(len(x) for x in enc["input_ids"])
    assert res.throughput["train_examples"] == 48 - 8 == len(raw)  # 8 held out to select the checkpoint
    # selection used the held-out part of train, never the reported dev set
    assert res.selection["examples"] == 8 and res.selection["idx"] == list(held_out["idx"])
    assert not set(res.selection["idx"]) & set(raw["idx"])
    assert list(res.train_examples["idx"]) == list(raw["idx"])  # what a baseline trains on
    if task == "stsb":  # a correlation: on another set of sentence pairs it would not come out the same
        net = _reload(best, task).eval()
        with torch.no_grad():
            sel = np.concatenate([net(**tok(*[[ex[c]] for c in spec.input_columns], truncation=True, max_length=32,
                                           return_tensors="pt")).logits.numpy() for ex in held_out])
        expected = compute_glue_metric(task, sel.reshape(-1), np.asarray(held_out["label"]))[res.main_metric]
        assert res.selection["best_score"] == pytest.approx(expected, abs=1e-4)
        assert res.selection["best_score"] != pytest.approx(m[res.main_metric], abs=1e-4)
    assert res.throughput["train_padded_tokens"] >= res.throughput["train_tokens"]
    assert res.train_tokens_per_s > 0 and 0 < res.mfu < 1
    assert res.trainable_params == sum(p.numel() for p in torch.nn.Module.parameters(_reload(best, task)))
    rec = metric_record(res)
    assert f"{task}/{res.main_metric}" in rec and f"{task}/train_tokens_per_s" in rec and f"{task}/mfu" in rec
    # training FLOPs are recorded: FLOPs per token of the encoder times the padded tokens it computed
    fpt = res.throughput["flops_per_token"]
    assert rec[f"{task}/train_flops"] == pytest.approx(fpt * res.throughput["train_padded_tokens"]) and fpt > 0
    # predictions line up with the examples they belong to (group_by_length must not reorder eval):
    # rerun the saved model on each eval example alone, in dataset order
    assert np.array_equal(preds.labels, np.asarray(preds.examples["label"], dtype=preds.labels.dtype))
    net = _reload(best, task).eval()
    with torch.no_grad():
        one_by_one = np.concatenate([
            net(**tok(*[[ex[c]] for c in spec.input_columns], truncation=True, max_length=32,
                      return_tensors="pt")).logits.numpy() for ex in preds.examples])
    np.testing.assert_allclose(preds.logits, one_by_one, atol=1e-4, rtol=1e-4)


def test_finetune_without_saving(tiny_bert, tmp_path):
    """save_model=False keeps nothing of the run on disk (notebooks run many fine-tunings)."""
    fresh = tmp_path / "run"
    res = finetune("sst2", tiny_bert, ctx=SMOKE, output_dir=fresh, save_model=False, **FAST)
    assert res.best_checkpoint is None and not fresh.exists()
    assert 0 <= res.metrics["validation"]["accuracy"] <= 1


def _reload(path, task):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path)


def test_errors(tiny_bert):
    with pytest.raises(UnknownNameError, match="known tasks"):
        finetune("sst3", tiny_bert)
    with pytest.raises(UnknownNameError, match="profile"):
        finetune("sst2", tiny_bert, ctx=resolve_context("huge"))
    with pytest.raises(UnknownNameError, match="unknown model"):
        finetune("sst2", "no-such-model", ctx=SMOKE)
    with pytest.raises(ArgumentError, match="hyperparameter"):
        finetune("sst2", tiny_bert, ctx=SMOKE, learning_rat=1e-3)
    with pytest.raises(DataUnavailableError, match="qnli/train"):  # the mirror has no QNLI train split
        finetune("qnli", tiny_bert, ctx=SMOKE)
    with pytest.raises(ArgumentError, match="device"):  # a device the run context names but the Trainer can't use
        finetune("sst2", tiny_bert, ctx=SMOKE.with_changes(device="meta"), **FAST)


def test_finetune_follows_the_context_seed(tiny_bert):
    fast = {**FAST, "max_eval_samples": 16, "save_model": False}
    a = finetune("sst2", tiny_bert, ctx=SMOKE, **fast).predictions["validation"].logits
    b = finetune("sst2", tiny_bert, ctx=SMOKE, **fast).predictions["validation"].logits
    c = finetune("sst2", tiny_bert, ctx=SMOKE.with_changes(seed=1), **fast).predictions["validation"].logits
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # another seed: another training subset, order and head init


def test_split_selection_sizes_and_errors():
    train = load_glue("rte", "train").select(range(100))
    rest, held = split_selection(train, 0.1, None, seed=0)
    assert (len(rest), len(held)) == (90, 10) and not set(rest["idx"]) & set(held["idx"])
    assert list(split_selection(train, 0.1, None, seed=0)[1]["idx"]) == list(held["idx"])  # seeded
    assert list(split_selection(train, 0.1, None, seed=1)[1]["idx"]) != list(held["idx"])
    assert len(split_selection(train, 0.5, 20, seed=0)[1]) == 20 and split_selection(train, 0.0, None, 0)[1] is None
    with pytest.raises(ArgumentError, match="selection_fraction"):
        split_selection(train, 1.0, None, 0)
    with pytest.raises(ArgumentError, match="too few"):
        split_selection(train.select(range(10)), 0.1, None, 0)


def test_task_settings_order():
    s = task_settings("cpu", "sst2", learning_rate=1e-3, max_length=None)
    assert s["learning_rate"] == 1e-3 and s["max_length"] == 64  # None keeps the profile/task value
    assert task_settings("gpu", "rte")["learning_rate"] == 2e-5


def test_throughput_counts_exactly():
    cb = ThroughputCallback()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    cb.count({"input_ids": torch.zeros_like(mask), "attention_mask": mask})
    cb.count({"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)})
    m = cb.meter
    assert (m.tokens, m.padded_tokens, m.examples, m.batches) == (9 + 6, 15 + 6, 5, 2)
    assert m.mean_padded_length == pytest.approx((15 * 5 + 6 * 3) / 21)
    cb.count({"input_ids": torch.zeros(1, 4, dtype=torch.long)}, useful=False)  # FGM's second pass: work only
    assert (m.tokens, m.padded_tokens, m.examples) == (15, 25, 5)


def test_fgm_norm_and_restore():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    ids = torch.randint(0, 100, (4, 7))
    model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    w0 = model.get_input_embeddings().weight.detach().clone()
    fgm = FGM(model, epsilon=0.5)
    r = fgm.attack()
    w1 = model.get_input_embeddings().weight.detach()
    assert torch.linalg.vector_norm(w1 - w0).item() == pytest.approx(0.5, rel=1e-5)
    g = model.get_input_embeddings().weight.grad
    torch.testing.assert_close(r, 0.5 * g / torch.linalg.vector_norm(g))
    fgm.restore()
    assert torch.equal(model.get_input_embeddings().weight.detach(), w0)


def test_tfidf_baseline_learns_words_not_noise():
    train = load_glue("sst2", "train").shuffle(seed=0).select(range(2000))
    dev = load_glue("sst2", "validation")
    majority = majority_baseline("sst2", dev["label"])["accuracy"]
    got = tfidf_baseline("sst2", train, dev)
    assert got["accuracy"] > majority + 0.15, (got, majority)  # bag of words carries sentiment
    shuffled = train.add_column("shuffled", list(np.random.default_rng(0).permutation(train["label"])))
    noise = tfidf_baseline("sst2", shuffled.remove_columns("label").rename_column("shuffled", "label"), dev)
    assert noise["accuracy"] < majority + 0.06, noise  # with labels unrelated to the words: chance
    pairs = tfidf_baseline("stsb", load_glue("stsb", "train").select(range(2000)), load_glue("stsb", "validation"))
    assert 0.1 < pairs["pearson"] < 1 and set(pairs) == {"pearson", "spearmanr", "combined_score"}


def test_majority_baseline():
    labels = np.array([1, 1, 0, 1])
    assert majority_baseline("sst2", labels)["accuracy"] == 0.75
    assert majority_baseline("stsb", np.array([0.0, 1.0, 2.0, 5.0]))["pearson"] == 0.0
    assert majority_baseline("mrpc", np.array([1, 1, 0]))["f1"] == pytest.approx(0.8)


def test_shipped_floors_name_real_tasks_and_metrics():
    """Each floor in data/finetune_floors.yaml is a metric the task's GLUE metric reports, in its range,
    and above what always predicting the majority class scores on that dev set."""
    from lmcourse.finetuning import load_floors
    from lmcourse.profiles import PROFILES

    floors = load_floors()
    assert set(floors) <= set(PROFILES) and floors["cpu"], floors
    for profile, per_task in floors.items():
        for task, metrics in (per_task or {}).items():
            spec = get_task(task)
            labels = np.asarray(load_glue(task, spec.eval_splits[0])["label"])
            reported = compute_glue_metric(task, labels, labels)
            baseline = majority_baseline(task, labels)
            for metric, floor in metrics.items():
                assert metric in reported, (profile, task, metric, sorted(reported))
                assert -1 <= floor <= 1, (profile, task, metric, floor)
                assert floor > baseline.get(metric, 0.0), (profile, task, metric, floor, baseline)


def test_tokenize_glue_caches_per_tokenizer_definition(tiny_bert):
    """A disk-backed split is tokenised into ``datasets``' cache under a fingerprint of the tokenizer's whole
    definition: another tokenizer (or length) gets its own ids, never the cached ids of the first."""
    from transformers import AutoTokenizer

    from lmcourse import tokenization as T
    from lmcourse.finetuning import tokenize_glue

    split = load_glue("mrpc", "validation[:40]")
    assert split.cache_files  # on disk: a stale cache entry would be read back
    minilm = AutoTokenizer.from_pretrained(tiny_bert)
    text = list(split["sentence1"]) + list(split["sentence2"])
    # two tokenizers of one class with the same special tokens, told apart only by their vocabularies
    small, larger = T.train_wordpiece(text, vocab_size=150), T.train_wordpiece(text, vocab_size=300)
    for tok, length in [(minilm, 32), (small, 32), (larger, 32), (minilm, 16), (small, 32)]:
        ds = tokenize_glue(split, tok, "mrpc", length)
        direct = tok(list(split["sentence1"]), list(split["sentence2"]), truncation=True, max_length=length)
        assert ds["input_ids"] == direct["input_ids"], (type(tok).__name__, length)
        assert ds["length"] == [len(x) for x in direct["input_ids"]]
    assert tokenize_glue(split, small, "mrpc", 32)._fingerprint != tokenize_glue(split, minilm, "mrpc", 32)._fingerprint


def test_by_length_sorts_a_split_and_returns_the_order():
    from datasets import Dataset

    from lmcourse.finetuning import by_length

    ds = Dataset.from_dict({"length": [5, 2, 9, 2, 1], "label": [0, 1, 0, 1, 1]})
    ordered, order = by_length(ds)
    assert ordered["length"] == [1, 2, 2, 5, 9] and order.tolist() == [4, 1, 3, 0, 2]
