"""lmcourse.objectives: FLOPs budgets that the training loop's own meter confirms, MLM batches from a stream,
one readout (lmcourse.readout) for three model kinds, and fine-tuning whose selection never reads the dev labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from lmcourse import objectives as OB
from lmcourse import pretraining as PT
from lmcourse import seq2seq as S2
from lmcourse.context import resolve_context
from lmcourse.errors import ArgumentError
from lmcourse.finetuning import task_metrics as ft_metrics
from lmcourse.models.gpt import GPT, GPTConfig
from lmcourse.models.t5 import T5, T5Config
from lmcourse.readout import PooledClassifier, hidden_size, mean_pool, sequence_hidden

V, D, BLOCK = 300, 32, 24  # V: the byte-level tokenizer below has 256 + 11 special tokens + merges


@pytest.fixture(scope="module")
def ctx():
    return resolve_context("smoke", seed=3)


@pytest.fixture(scope="module")
def models(ctx):
    with ctx.seeded():
        gpt = GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=D))
        bert = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=4 * D, max_position_embeddings=BLOCK, pad_token_id=0,
                                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        t5 = T5(T5Config(vocab_size=V, d_model=D, d_kv=16, d_ff=4 * D, num_layers=2, num_heads=2,
                         feed_forward_proj="gated-gelu", dropout_rate=0.0))
    return {"clm": gpt.eval(), "mlm": bert.eval(), "span": t5.eval()}


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"the {w} sat on the {v} and looked at the {u} ." for w in ("cat", "dog", "bird", "fox")
             for v in ("mat", "hat", "log") for u in ("sun", "moon", "rain")] * 3
    tok = S2.t5_tokenizer(texts, vocab_size=V, n_sentinels=8, min_frequency=1)
    assert len(tok) == V
    return tok


def _stream(n: int = 2000, seed: int = 0) -> torch.Tensor:
    return torch.randint(12, V, (n,), generator=torch.Generator().manual_seed(seed))


def _batches(objective, ctx, tokenizer, batch=4):
    data = _stream()
    if objective == "clm":
        return PT.StreamBatches(data, BLOCK, batch, ctx)
    if objective == "mlm":
        tok = OB.masking_tokenizer(tokenizer, "<extra_id_0>")
        return OB.MaskedStreamBatches(data, BLOCK, batch, PT.mlm_collator(tok), ctx)
    return S2.SpanCorruptionBatches(data, BLOCK, batch, list(range(3, 11)), 1, ctx)


def _step_outputs(objective):
    return {"clm": PT.clm_step_outputs, "mlm": PT.gathered_mlm_step_outputs, "span": S2.seq2seq_step_outputs}[objective]


@pytest.mark.parametrize("objective", OB.OBJECTIVES)
def test_step_flops_is_what_the_training_loop_counts(objective, models, ctx, tokenizer):
    """The budget formula and the loop's throughput meter are two codings of the same count; for MLM the
    per-step masked share varies, so the meter's count over the run is within a few per cent of 15 %."""
    import copy

    model = copy.deepcopy(models[objective]).train()
    steps = 6
    cfg = PT.TrainConfig(max_steps=steps, lr=1e-3, warmup_steps=1, eval_every=10**9, bf16=False)
    res = PT.train(model, _batches(objective, ctx, tokenizer), _step_outputs(objective), cfg, ctx,
                   progress=False, tensorboard=None)
    predicted = steps * OB.step_flops(objective, model, 4, BLOCK)
    rel = 0.04 if objective == "mlm" else 1e-9
    assert res.perf["train_flops"] == pytest.approx(predicted, rel=rel)


def test_step_flops_errors(models):
    with pytest.raises(ArgumentError, match="unknown objective"):
        OB.step_flops("nsp", models["clm"], 4, BLOCK)
    with pytest.raises(ArgumentError, match=">= 1"):
        OB.step_flops("clm", models["clm"], 0, BLOCK)


def test_steps_for_budget():
    assert OB.steps_for_budget(1000.0, 300.0) == 3
    assert OB.steps_for_budget(1000.0, 190.0) == 5
    assert OB.steps_for_budget(10.0, 300.0) == 1
    with pytest.raises(ArgumentError, match="positive"):
        OB.steps_for_budget(0.0, 3.0)


def test_masked_stream_batches(ctx, tokenizer):
    tok = OB.masking_tokenizer(tokenizer, "<extra_id_0>")
    mask_id = tok.convert_tokens_to_ids("<extra_id_0>")
    data = _stream(5000)
    get = OB.MaskedStreamBatches(data, BLOCK, 64, PT.mlm_collator(tok), ctx)
    plain = PT.StreamBatches(data, BLOCK, 64, ctx)(5)["input_ids"]
    b = get(5)
    again = get(5)
    assert torch.equal(b["input_ids"], again["input_ids"]) and torch.equal(b["labels"], again["labels"])
    same_text = OB.MaskedStreamBatches(torch.full((500,), 20), BLOCK, 64, PT.mlm_collator(tok), ctx)
    assert not torch.equal(same_text(6)["labels"] != -100, same_text(5)["labels"] != -100)  # masks drawn per step
    masked = b["labels"] != -100
    assert torch.equal(b["labels"][masked], plain[masked])  # targets are the original tokens
    assert torch.equal(b["input_ids"][~masked], plain[~masked])  # everything else is untouched
    assert 0.12 < masked.float().mean() < 0.18
    share_mask_token = (b["input_ids"][masked] == mask_id).float().mean()
    assert 0.7 < share_mask_token < 0.9  # 80 % of the chosen tokens become the mask token
    assert tok.mask_token == "<extra_id_0>" and tokenizer.mask_token is None  # the original is not changed
    with pytest.raises(ArgumentError, match="not in the tokenizer"):
        OB.masking_tokenizer(tokenizer, "[MASK]")


def test_heldout_loss_weights_batches_by_their_targets(models, ctx, tokenizer):
    model = models["mlm"]
    get = _batches("mlm", ctx, tokenizer)
    evaluate = OB.heldout_loss_evaluator(get, PT.mlm_step_outputs, 3, ctx)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(3):
            b = get(i)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            sel = b["labels"] != -100
            total += float(torch.nn.functional.cross_entropy(logits[sel], b["labels"][sel], reduction="sum"))
            count += int(sel.sum())
    assert evaluate(model)["loss"] == pytest.approx(total / count, rel=1e-5)


def test_prediction_targets(ctx, tokenizer):
    get = _batches("clm", ctx, tokenizer)
    t = OB.prediction_targets(get, [0, 1])
    assert torch.equal(t, torch.cat([get(0)["targets"].view(-1), get(1)["targets"].view(-1)]))
    get = _batches("mlm", ctx, tokenizer)
    assert OB.prediction_targets(get, [0]).numel() == int((get(0)["labels"] != -100).sum())


@pytest.mark.parametrize("objective", OB.OBJECTIVES)
def test_pooled_readout_ignores_right_padding(objective, models):
    """Padding a sentence on the right does not change its pooled vector, for all three bodies (GPT by
    causality, BERT and T5 by their attention masks)."""
    model = models[objective]
    ids = torch.randint(12, V, (1, 9), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = mean_pool(sequence_hidden(model, ids, torch.ones_like(ids)), torch.ones_like(ids))
        long = mean_pool(sequence_hidden(model, padded, mask), mask)
    torch.testing.assert_close(long, short, atol=1e-5, rtol=1e-5)
    assert hidden_size(model) == D


@pytest.mark.parametrize("objective", OB.OBJECTIVES)
def test_pooled_classifier_reads_all_three_bodies(objective, models):
    """notebook 10's readout is lmcourse.readout's PooledClassifier: the linear layer on the mean over the
    real tokens of each body's final hidden states, one example at a time by hand."""
    model = models[objective]
    torch.manual_seed(0)
    head = PooledClassifier(model, 2).eval()
    ids = torch.randint(12, V, (2, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    with torch.no_grad():
        out = head(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1]))
        rows = [head.classifier(sequence_hidden(model, ids[i:i + 1, :n], torch.ones(1, n, dtype=torch.long))[0].mean(0))
                for i, n in enumerate([8, 5])]
    torch.testing.assert_close(out.logits, torch.stack(rows), atol=1e-5, rtol=1e-5)
    assert out.loss is not None and head.body is model


def _toy_task(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = [("the cat sat on the mat ." if y else "the dog looked at the rain .")
             + " the fox" * int(rng.integers(0, 3)) for y in labels]
    return texts, labels.tolist()


def test_finetune_pooled_learns_and_never_selects_on_dev(models, ctx, tokenizer):
    train_x, train_y = _toy_task(160, 0)
    dev_x, dev_y = _toy_task(60, 1)
    kw = dict(steps=40, lr=3e-3, batch_size=16, max_length=BLOCK, evals=4)
    run = OB.finetune_pooled(models["clm"], tokenizer, "sst2", train_x, train_y, dev_x, dev_y, ctx, **kw)
    assert run["score"] > 0.9 and run["selection_score"] > 0.9  # a separable task is learned
    flipped = OB.finetune_pooled(models["clm"], tokenizer, "sst2", train_x, train_y, dev_x, [1 - y for y in dev_y],
                                 ctx, **kw)
    assert flipped["best_step"] == run["best_step"] and flipped["selection_score"] == run["selection_score"]
    assert flipped["score"] == pytest.approx(1 - run["score"])  # same model, scored against the flipped labels
    noisy_dev = [1 - y if i % 3 == 0 else y for i, y in enumerate(dev_y)]  # imperfect, so F1 != accuracy
    pair_task = OB.finetune_pooled(models["clm"], tokenizer, "mrpc", train_x, train_y, dev_x, noisy_dev, ctx, **kw)
    by_metric = ft_metrics("mrpc", pair_task["dev_predictions"], np.asarray(noisy_dev))
    assert abs(by_metric["accuracy"] - by_metric["f1"]) > 0.01
    assert pair_task["score"] == pytest.approx((by_metric["accuracy"] + by_metric["f1"]) / 2)  # GLUE's MRPC score
    with pytest.raises(ArgumentError, match="regression"):
        OB.finetune_pooled(models["clm"], tokenizer, "stsb", train_x, train_y, dev_x, dev_y, ctx, **kw)
    with pytest.raises(ArgumentError, match="only 20 training examples"):
        OB.finetune_pooled(models["clm"], tokenizer, "sst2", train_x[:20], train_y[:20], dev_x, dev_y, ctx, **kw)
