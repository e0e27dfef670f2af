"""Text to text and span-corruption training for the T5 of notebook 10 (lmcourse.seq2seq)."""

from __future__ import annotations

import pytest
import torch

from lmcourse import pretraining as PT
from lmcourse import seq2seq as S2
from lmcourse.context import resolve_context
from lmcourse.errors import ArgumentError
from lmcourse.measurement import seq2seq_training_flops
from lmcourse.models.t5 import T5

TEXTS = ["the cat sat on the mat .", "a dog ran in the park and the cat ran too .", "it is a charming film ."] * 30


@pytest.fixture(scope="module")
def tok():
    return S2.t5_tokenizer(TEXTS, vocab_size=300, n_sentinels=8, min_frequency=1)


def test_tokenizer_is_laid_out_like_t5(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("the cat <extra_id_0> mat .")["input_ids"]
    assert ids[-1] == 1 and PT.sentinel_ids(tok, 8)[0] in ids  # EOS appended, the sentinel is one token
    assert PT.sentinel_ids(tok) == list(range(3, 11))
    assert tok.decode(tok("the cat sat .")["input_ids"], skip_special_tokens=True).strip() == "the cat sat ."
    with pytest.raises(ArgumentError):
        PT.sentinel_ids(tok, 9)


def test_glue_as_text_and_scoring():
    ex = {"sentence": "a charming film", "label": 1, "idx": 0}
    assert S2.glue_as_text("sst2", ex) == ("sst2 sentence: a charming film", "positive")
    pair = {"sentence1": "A", "sentence2": "B", "label": 0, "idx": 3}
    assert S2.glue_as_text("mrpc", pair) == ("mrpc sentence1: A sentence2: B", "not_equivalent")
    assert S2.label_of_text("sst2", " negative ") == 0 and S2.label_of_text("sst2", "positiv") == -1
    labels = [1, 0, 1, 1]
    res = S2.text_to_text_scores("sst2", ["positive", "negative", "positiv", ""], labels)
    assert res["accuracy"] == 0.5 and res["invalid_rate"] == 0.5  # non-labels count as wrong
    res = S2.text_to_text_scores("mrpc", ["equivalent", "not_equivalent", "nonsense", "equivalent"], labels)
    assert res["accuracy"] == 0.75 and res["invalid_rate"] == 0.25 and "f1" in res
    with pytest.raises(ArgumentError):
        S2.glue_as_text("stsb", pair)


def test_generation_scores_use_the_libraries():
    import sacrebleu

    refs = ["the cat sat on the mat .", "a dog ran in the park ."]
    perfect = S2.generation_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(1.0)
    outs = ["the cat sat on a mat .", "dogs ran in a park"]
    got = S2.generation_scores(outs, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outs, [refs]).score)
    assert 0 < got["rouge1"] < 1 and got["rouge2"] < got["rouge1"]
    assert S2.copy_baseline(["paraphrase: abc", "xyz"]) == ["abc", "xyz"]
    with pytest.raises(ArgumentError):
        S2.generation_scores([], [])


def test_batches_and_a_short_training_run(tok):
    ctx = resolve_context("smoke", seed=0, device="cpu")
    data = S2.token_stream(tok, TEXTS)
    assert data.numel() == sum(len(r) - 1 for r in tok(TEXTS)["input_ids"])  # without the EOS of each line
    sent = PT.sentinel_ids(tok)
    batches = S2.SpanCorruptionBatches(data, 20, 4, sent, tok.eos_token_id, ctx)
    b0 = batches(0)
    assert torch.equal(b0["input_ids"], batches(0)["input_ids"]) and not torch.equal(b0["labels"], batches(1)["labels"])
    assert (b0["input_ids"].shape[1], b0["labels"].shape[1]) == batches.lengths
    src, tgt = zip(*[S2.glue_as_text("sst2", {"sentence": t, "label": i % 2}) for i, t in enumerate(TEXTS)])
    ft = S2.Seq2SeqBatches(tok, src, tgt, 8, ctx)
    b = ft(3)
    assert b["input_ids"].shape[0] == 8 and bool(((b["input_ids"] == 0) == (b["attention_mask"] == 0)).all())
    assert bool((b["labels"][b["labels"] != -100] >= 0).all()) and bool((b["labels"] == -100).any())  # padded
    cfg = S2.t5_config_for(tok, {"d_model": 32, "d_kv": 8, "d_ff": 48, "layers": 1, "heads": 2})
    with ctx.seeded():
        model = T5(cfg)
    evaluate = S2.seq2seq_evaluator(S2.SpanCorruptionBatches(data, 20, 4, sent, 1, ctx, seed_offset=9), 2, ctx)
    before = evaluate(model)["loss"]
    res = PT.train(model, batches, S2.seq2seq_step_outputs, PT.TrainConfig(max_steps=25, lr=3e-3, warmup_steps=2),
                   ctx, progress=False, tensorboard=None)
    assert evaluate(model)["loss"] < before  # it learns
    n_in, n_out = batches.lengths  # every step: 4 examples of n_in input and n_out target tokens
    assert res.perf["train_flops"] == pytest.approx(25 * 4 * seq2seq_training_flops(cfg, n_in, n_out))
    outs = S2.generate_texts(model, tok, list(src[:5]), ctx, batch_size=2, max_new_tokens=3)
    assert len(outs) == 5 and all(isinstance(o, str) for o in outs)


def test_evaluator_runs_without_dropout_and_gives_the_mode_back(tok):
    ctx = resolve_context("smoke", seed=0, device="cpu")
    data = S2.token_stream(tok, TEXTS)
    cfg = S2.t5_config_for(tok, {"d_model": 32, "d_kv": 8, "d_ff": 48, "layers": 1, "heads": 2})
    cfg.dropout_rate = 0.5  # dropout that would change every evaluation in training mode
    with ctx.seeded():
        model = T5(cfg)
    evaluate = S2.seq2seq_evaluator(S2.SpanCorruptionBatches(data, 20, 4, PT.sentinel_ids(tok), 1, ctx), 2, ctx)
    model.train()
    first, second = evaluate(model)["loss"], evaluate(model)["loss"]
    assert first == second and model.training  # deterministic (eval mode inside), training mode given back
    model.eval()
    assert evaluate(model)["loss"] == first and not model.training


def test_a_hub_checkpoint_not_in_the_cache_is_none_without_a_download():
    assert S2.local_hub_t5("lmcourse-tests/no-such-t5-checkpoint") is None
