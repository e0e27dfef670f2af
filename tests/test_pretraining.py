"""Pretraining data and loop: block packing, 80/10/10 masking, NSP pairs, exact resuming, schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse import pretraining as PT
from lmcourse import tokenization as T
from lmcourse.context import resolve_context
from lmcourse.errors import ArgumentError
from lmcourse.profiles import get_profile

CTX = resolve_context("smoke", seed=0, device="cpu", bf16=False)


@pytest.fixture(scope="module")
def tok():
    return T.train_wordpiece(T.corpus_lines(max_lines=1500), vocab_size=800)


def test_pack_blocks_concatenates_and_cuts():
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    assert PT.pack_blocks(seqs, 4) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert PT.pack_blocks(seqs, 4, drop_last=False) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert PT.pack_blocks(seqs, 3, separator=0) == [[1, 2, 3], [0, 4, 5], [0, 6, 7], [8, 9, 0]]
    blocks = PT.pack_blocks([list(range(i, i + 7)) for i in range(0, 700, 7)], 16)
    flat = [t for b in blocks for t in b]
    assert flat == list(range(len(flat))) and len(blocks) == 700 // 16
    with pytest.raises(ArgumentError):
        PT.pack_blocks(seqs, 0)


def test_bert_blocks(tok):
    blocks = PT.bert_blocks(tok, ["the cat sat on the mat .", "a second line", "and a third one ."] * 20, 16)
    assert all(len(b) == 16 and b[0] == tok.cls_token_id and b[-1] == tok.sep_token_id for b in blocks)
    inner = [t for b in blocks for t in b[1:-1]]
    ref = [t for s in ["the cat sat on the mat .", "a second line", "and a third one ."] * 20
           for t in tok(s, add_special_tokens=False)["input_ids"]]
    assert inner == ref[:len(inner)]


def test_blocks_ignore_a_tokenizer_files_padding_and_truncation():
    from transformers import AutoTokenizer

    from lmcourse.models import resolve

    minilm = AutoTokenizer.from_pretrained(resolve("minilm-l6"))  # its tokenizer.json pads and cuts to 128
    assert minilm.backend_tokenizer.padding is not None and minilm.backend_tokenizer.truncation is not None
    texts = ["a great movie", "bad", " ".join(["long"] * 300)]
    ids = PT.token_ids(minilm, texts)
    blocks = PT.bert_blocks(minilm, texts * 4, 16)
    segments = PT.tokenize_segments(minilm, [["a great movie . bad ."]])
    assert minilm.backend_tokenizer.padding is not None  # the tokenizer passed in is left as it was
    # (calling the tokenizer itself, as below, resets its backend's padding: the bug showed only before that)
    assert ids == [minilm(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [len(i) for i in ids[:2]] == [3, 1] and len(ids[2]) == 300  # no [PAD], nothing cut
    assert len(blocks) == (304 * 4) // 14 and minilm.pad_token_id not in {t for b in blocks for t in b}
    assert segments == [[minilm("a great movie .", add_special_tokens=False)["input_ids"],
                         minilm("bad .", add_special_tokens=False)["input_ids"]]]


def test_masking_is_15_percent_80_10_10(tok):
    blocks = PT.bert_blocks(tok, T.corpus_lines(max_lines=1500), 64)[:400]
    original = torch.tensor(blocks)
    batch = PT.collate_seeded(PT.mlm_collator(tok), [{"input_ids": b} for b in blocks], seed=0)
    st = PT.masking_stats(batch, original, tok.mask_token_id, [tok.cls_token_id, tok.sep_token_id])
    # ~3700 selected tokens of 24800: binomial standard errors ~0.2 % (selection) and <= 0.7 % (80/10/10)
    assert st["selected"] == pytest.approx(0.15, abs=0.01)
    assert st["mask"] == pytest.approx(0.80, abs=0.025)
    assert st["random"] == pytest.approx(0.10, abs=0.02)
    assert st["kept"] == pytest.approx(0.10, abs=0.02)
    assert st["special_selected"] == 0
    sel = batch["labels"] != -100
    assert torch.equal(batch["labels"][sel], original[sel])  # labels are the original tokens
    again = PT.collate_seeded(PT.mlm_collator(tok), [{"input_ids": b} for b in blocks], seed=0)
    assert torch.equal(again["input_ids"], batch["input_ids"])  # seeded masking is reproducible


def _synthetic_docs(n_docs=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    docs = []
    for d in range(n_docs):
        n_seg = int(torch.randint(1, 12, (1,), generator=g))
        # token = doc * 10000 + segment * 100 + position: identifies where every token came from
        docs.append([[d * 10000 + s * 100 + p for p in range(int(torch.randint(2, 9, (1,), generator=g)))]
                     for s in range(n_seg)])
    return docs


def test_nsp_pairs_true_and_random_next():
    docs = _synthetic_docs()
    pairs = PT.build_nsp_pairs(docs, max_tokens=24, seed=1)
    assert len(pairs) > 50
    frac_random = sum(p.label for p in pairs) / len(pairs)
    assert 0.4 < frac_random < 0.75  # 50 % by coin + one-segment chunks that must take a random B
    for p in pairs:
        assert len(p.a) + len(p.b) <= 24 - 3 and p.a and p.b
        doc_a, doc_b = p.a[-1] // 10000, p.b[0] // 10000
        assert all(t // 10000 == doc_a for t in p.a)
        if p.label == 0:  # B continues A: same document, the segment right after A's last one, from its start
            assert doc_b == doc_a and (p.b[0] // 100) % 100 == (p.a[-1] // 100) % 100 + 1 and p.b[0] % 100 == 0
        else:
            assert doc_b != doc_a
    with pytest.raises(ArgumentError):
        PT.build_nsp_pairs(docs[:1], 24)


def test_nsp_features(tok):
    feats = PT.nsp_features(tok, [PT.NspExample([5, 6], [7, 8, 9], 1)])
    f = feats[0]
    assert f["input_ids"] == [tok.cls_token_id, 5, 6, tok.sep_token_id, 7, 8, 9, tok.sep_token_id]
    assert f["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1] and f["next_sentence_label"] == 1
    ids = tok("a b", "c d e")
    assert ids["token_type_ids"] == PT.nsp_features(
        tok, [PT.NspExample(tok("a b", add_special_tokens=False)["input_ids"],
                            tok("c d e", add_special_tokens=False)["input_ids"], 0)])[0]["token_type_ids"]


def _tiny(tok, nsp):
    prof = get_profile("smoke").with_overrides(hidden_size=32, num_layers=2, num_heads=2, block_size=32)
    return PT.bert_for_pretraining(PT.bert_config(prof, tok), nsp=nsp, ctx=CTX)


def _pretraining_features(tok, nsp: bool) -> list[dict]:
    """NSP sentence pairs or packed MLM blocks of 32 tokens from the first 600 corpus lines."""
    lines = T.corpus_lines(max_lines=600)
    if not nsp:
        return [{"input_ids": b} for b in PT.bert_blocks(tok, lines, 32)]
    docs = [[tok(s, add_special_tokens=False)["input_ids"] for s in PT.sentence_segments(d)]
            for d in PT.split_documents(lines)]
    return PT.nsp_features(tok, PT.build_nsp_pairs([d for d in docs if d], 32))


@pytest.mark.parametrize("nsp", [False, True])
def test_resume_continues_the_same_loss_curve(tok, tmp_path, nsp):
    torch.set_num_threads(1)
    feats = _pretraining_features(tok, nsp)
    coll = PT.mlm_collator(tok)
    cfg = PT.TrainConfig(max_steps=8, lr=1e-3, warmup_steps=2, eval_every=4, save_every=4)
    ev = PT.mlm_evaluator(feats[:16], coll, CTX)
    straight = PT.train(_tiny(tok, nsp), PT.BlockBatches(feats, 8, coll, CTX), PT.mlm_step_outputs, cfg, CTX,
                        evaluate=ev, progress=False)
    first = PT.train(_tiny(tok, nsp), PT.BlockBatches(feats, 8, coll, CTX), PT.mlm_step_outputs, cfg, CTX, evaluate=ev,
                     output_dir=tmp_path, progress=False, stop_after=4)
    ck = PT.latest_checkpoint(tmp_path)
    assert ck.name == "checkpoint-4" and (ck / "model.safetensors").is_file() and len(first.history) == 4
    other = _tiny(tok, nsp)
    torch.manual_seed(999)  # the global RNG state must not matter
    resumed = PT.train(other, PT.BlockBatches(feats, 8, coll, CTX), PT.mlm_step_outputs, cfg, CTX, evaluate=ev,
                       resume_from=ck, progress=False)
    a = [r["loss"] for r in straight.history]
    b = [r["loss"] for r in resumed.history]
    assert len(a) == len(b) == 8
    assert a == pytest.approx(b, rel=1e-6, abs=1e-6)
    assert [e["mlm_loss"] for e in straight.evals] == pytest.approx([e["mlm_loss"] for e in resumed.evals], rel=1e-6)
    assert a[-1] < a[0]  # and it learns
    if nsp:
        assert "nsp_loss" in straight.history[0]


def test_lr_schedule():
    cfg = PT.TrainConfig(max_steps=110, warmup_steps=10, lr=1.0)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(60) == pytest.approx(0.5) and cfg.lr_at(110) == pytest.approx(0.0)
    cos = PT.TrainConfig(max_steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert cos.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5) and cos.lr_at(110) == pytest.approx(0.1)
    # the same numbers as transformers' schedulers (LambdaLR evaluated at step+1 after warmup indexing)
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lin = get_linear_schedule_with_warmup(opt, 10, 110)
    for s in range(10, 110, 7):
        assert cfg.lr_at(s) == pytest.approx(lin.lr_lambdas[0](s), abs=1e-9)
    hf_cos = get_cosine_schedule_with_warmup(opt, 10, 110)
    cos0 = PT.TrainConfig(max_steps=110, warmup_steps=10, schedule="cosine")
    for s in range(10, 110, 7):
        assert cos0.lr_at(s) == pytest.approx(hf_cos.lr_lambdas[0](s), abs=1e-9)
    with pytest.raises(ArgumentError):
        PT.TrainConfig(schedule="step").lr_at(50)


def test_stream_batches_and_clm_eval():
    data = torch.arange(1000)
    get = PT.StreamBatches(data, 16, 4, CTX.with_changes(seed=3))
    b = get(5)
    assert torch.equal(b["targets"], b["input_ids"] + 1) and b["input_ids"].shape == (4, 16)
    assert torch.equal(get(5)["input_ids"], b["input_ids"]) and not torch.equal(get(6)["input_ids"], b["input_ids"])
    from lmcourse.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=1000, block_size=16, n_layer=1, n_head=2, n_embd=16))
    ev = PT.clm_evaluator(data, 16, 4, iters=2, ctx=CTX)(model)
    assert ev["loss"] == pytest.approx(math.log(1000), rel=0.05) and ev["ppl"] == pytest.approx(math.exp(ev["loss"]))


def test_flops_use_matmul_params(tok):
    from lmcourse.measurement import matmul_params, model_flops_per_token

    m = _tiny(tok, nsp=False)
    n = matmul_params(m)
    assert model_flops_per_token(m, 32) == 6 * n + 12 * 2 * 2 * 16 * 32
    # the tied MLM decoder is the word embedding: counted once
    emb = m.bert.embeddings.word_embeddings.weight
    assert m.cls.predictions.decoder.weight is emb


def test_train_and_evaluators_follow_the_context_seed(tok):
    feats = [{"input_ids": b} for b in PT.bert_blocks(tok, T.corpus_lines(max_lines=600), 32)]
    coll = PT.mlm_collator(tok)
    cfg = PT.TrainConfig(max_steps=3, lr=1e-3, warmup_steps=1, eval_every=3)
    batches = PT.BlockBatches(feats, 8, coll, CTX)  # the same batches: only the dropout seed differs below

    def losses(ctx):
        return [r["loss"] for r in PT.train(_tiny(tok, False), batches, PT.mlm_step_outputs, cfg, ctx,
                                             progress=False).history]

    assert losses(CTX) == losses(CTX)
    assert losses(CTX) != losses(CTX.with_changes(seed=1))  # dropout of each step follows ctx.seed
    b0, b1 = PT.BlockBatches(feats, 8, coll, CTX)(0), PT.BlockBatches(feats, 8, coll, CTX.with_changes(seed=1))(0)
    assert not torch.equal(b0["input_ids"], b1["input_ids"])
    model = _tiny(tok, False).eval()
    e0 = PT.mlm_evaluator(feats[:16], coll, CTX)(model)
    assert PT.mlm_evaluator(feats[:16], coll, CTX)(model) == e0
    assert PT.mlm_evaluator(feats[:16], coll, CTX.with_changes(seed=1))(model) != e0  # other masks
    data = torch.arange(1000)
    assert not torch.equal(PT.StreamBatches(data, 16, 4, CTX)(0)["input_ids"],
                           PT.StreamBatches(data, 16, 4, CTX.with_changes(seed=1))(0)["input_ids"])
    # model init follows the seed and leaves the global RNG alone
    state = torch.get_rng_state()

    def w(c):
        return PT.bert_for_pretraining(_tiny(tok, False).config, False, c).bert.embeddings.word_embeddings.weight

    assert torch.equal(w(CTX), w(CTX)) and not torch.equal(w(CTX), w(CTX.with_changes(seed=1)))
    assert torch.equal(torch.get_rng_state(), state)


def test_train_and_evaluators_compute_on_the_context_device(tok):
    """No GPU in CI: the ``meta`` device stands in. A helper that ignored ``ctx.device`` would run on the CPU
    and succeed; one that honours it moves model and batches to ``meta``, where reading a number fails."""
    feats = [{"input_ids": b} for b in PT.bert_blocks(tok, T.corpus_lines(max_lines=300), 32)]
    coll = PT.mlm_collator(tok)
    meta = CTX.with_changes(device="meta")
    cfg = PT.TrainConfig(max_steps=1, warmup_steps=1, fused_adamw=False)
    model = _tiny(tok, False)
    with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
        PT.train(model, PT.BlockBatches(feats, 8, coll, CTX), PT.mlm_step_outputs, cfg, meta, progress=False)
    assert next(model.parameters()).device.type == "meta"
    for evaluator in (PT.mlm_evaluator(feats[:8], coll, meta),):
        with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
            evaluator(_tiny(tok, False))
    res = PT.train(_tiny(tok, False), PT.BlockBatches(feats, 8, coll, CTX), PT.mlm_step_outputs, cfg, CTX,
                   progress=False)
    assert res.perf["device"] == "cpu" and res.perf["bf16"] is False


def test_tokenize_segments_matches_the_tokenizer_sentence_by_sentence(tok):
    docs = PT.split_documents(T.corpus_lines(max_lines=200))[:3]
    fast = PT.tokenize_segments(tok, docs)
    slow = [[tok(s, add_special_tokens=False)["input_ids"] for s in PT.sentence_segments(d)] for d in docs]
    assert fast == slow and sum(len(d) for d in fast) > 3


def test_unigram_mlm_baseline_scores_token_frequencies(tok):
    """Its accuracy is the share of masked labels equal to the most frequent token, its loss the unigram
    cross-entropy, both on exactly the masks mlm_evaluator uses for real models."""
    blocks = [{"input_ids": b} for b in PT.bert_blocks(tok, T.corpus_lines(max_lines=300), 32)]
    train, held_out = blocks[4:], blocks[:4]
    coll = PT.mlm_collator(tok)
    base = PT.UnigramMLM(train, len(tok), exclude_ids=tok.all_special_ids)
    got = PT.mlm_evaluator(held_out, coll, CTX, batch_size=2)(base)
    labels = torch.cat([PT.collate_seeded(coll, held_out[i:i + 2], 12345 + i)["labels"].flatten()
                        for i in range(0, 4, 2)])
    labels = labels[labels != -100]
    probs = base.log_probs.exp().double()
    assert got["mlm_acc"] == pytest.approx(float((labels == probs.argmax()).double().mean()))
    assert got["mlm_loss"] == pytest.approx(float(-probs[labels].log().mean()), rel=1e-5)
    assert float(probs[tok.all_special_ids].sum()) == 0.0 and 0 < got["mlm_acc"] < 0.5


def test_unigram_cross_entropy_is_the_loss_of_smoothed_frequencies():
    train, held = torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([0, 1, 3, 2])
    probs = torch.tensor([4.0, 2.0, 3.0, 1.0], dtype=torch.float64) / 10  # counts + 1 over 4 symbols
    expected = F.cross_entropy(probs.log().expand(4, -1), held)
    assert PT.unigram_cross_entropy(train, held, 4) == pytest.approx(float(expected), rel=1e-12)
    assert PT.unigram_cross_entropy(train, train, 4) < math.log(4)  # on text with these frequencies it beats ln V


def test_mean_pairwise_cosine_matches_brute_force():
    torch.manual_seed(0)
    v = torch.randn(37, 16) + 0.3
    n = F.normalize(v.double(), dim=1)
    sim = n @ n.T
    brute = float((sim.sum() - sim.diagonal().sum()) / (37 * 36))
    assert PT.mean_pairwise_cosine(v) == pytest.approx(brute, abs=1e-12)
    assert PT.mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        PT.mean_pairwise_cosine(torch.ones(1, 3))


def test_embedding_cone_bands_by_frequency():
    # ids 0..9: id 0 special; ids 1-4 frequent (pointing the same way), 5-8 rare (random), 9 never seen
    feats = [{"input_ids": [0] * 50 + [1, 2, 3, 4] * 10 + [5, 6, 7, 8]}]
    counts = PT.token_counts(feats, 10)
    assert counts.tolist() == [50, 10, 10, 10, 10, 1, 1, 1, 1, 0]
    torch.manual_seed(0)
    emb = torch.randn(10, 64)
    emb[1:5] = torch.tensor([1.0] * 64) + 0.01 * torch.randn(4, 64)
    cone = PT.embedding_cone(emb, counts, band=4, exclude_ids=[0])
    assert cone["band"] == 4
    assert cone["frequent"] > 0.99
    assert cone["rare"] == pytest.approx(PT.mean_pairwise_cosine(emb[5:9]))
    assert abs(cone["rare"]) < 0.3
    with pytest.raises(ValueError, match="too few"):
        PT.embedding_cone(emb, PT.token_counts([{"input_ids": [1, 2]}], 10), band=4)


@pytest.mark.parametrize("nsp", [False, True])
def test_gathered_mlm_head_gives_the_full_loss_and_gradients(tok, nsp):
    """Projecting only the masked positions to the vocabulary is the same objective as the full head."""
    feats = _pretraining_features(tok, nsp)
    batch = PT.collate_seeded(PT.mlm_collator(tok), feats[:8], seed=3)
    assert (batch["labels"] != -100).float().mean() < 0.5  # most positions are not masked: a real saving
    model = _tiny(tok, nsp).train()  # dropout on: both paths must draw the same masks

    def loss_and_grads(step_outputs):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        loss, stats = step_outputs(model, batch)
        loss.backward()
        return loss.detach(), stats, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full_loss, full_stats, full_grads = loss_and_grads(PT.mlm_step_outputs)
    loss, stats, grads = loss_and_grads(PT.gathered_mlm_step_outputs)
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-6)
    assert stats.keys() == full_stats.keys() and ("nsp_loss" in stats) == nsp
    assert stats["mlm_acc"] == full_stats["mlm_acc"]
    assert grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gathered_mlm_trains_like_the_full_head_and_counts_the_used_flops(tok):
    feats = [{"input_ids": b} for b in PT.bert_blocks(tok, T.corpus_lines(max_lines=400), 32)]
    coll = PT.mlm_collator(tok)
    cfg = PT.TrainConfig(max_steps=6, lr=1e-3, warmup_steps=2, eval_every=100)
    runs = {fn.__name__: PT.train(_tiny(tok, False), PT.BlockBatches(feats, 8, coll, CTX), fn, cfg, CTX,
                                  progress=False) for fn in (PT.mlm_step_outputs, PT.gathered_mlm_step_outputs)}
    full, gathered = runs["mlm_step_outputs"], runs["gathered_mlm_step_outputs"]
    assert [r["loss"] for r in gathered.history] == pytest.approx([r["loss"] for r in full.history], rel=1e-4)
    # MFU counts the head only at the masked positions, in both paths (the FLOPs the loss uses)
    masked = sum(int((PT.BlockBatches(feats, 8, coll, CTX)(s)["labels"] != -100).sum()) for s in range(6))
    m = _tiny(tok, False)
    d, V = m.config.hidden_size, m.config.vocab_size
    n_head = d * d + d + V * d + V  # transform dense (+bias) and the tied decoder (+bias)
    n_all = gathered.perf["train_padded_tokens"]
    from lmcourse.measurement import matmul_params

    n = matmul_params(m) - n_head + n_head * masked / n_all
    assert gathered.perf["flops_per_token"] == pytest.approx(6 * n + 12 * 2 * 2 * 16 * 32, rel=1e-9)
    assert full.perf["flops_per_token"] == pytest.approx(gathered.perf["flops_per_token"], rel=1e-12)


def test_gathered_mlm_refuses_a_model_without_a_bert_mlm_head():
    with pytest.raises(ArgumentError, match="BertForMaskedLM"):
        PT.gathered_mlm_step_outputs(torch.nn.Linear(2, 2), {"labels": torch.zeros(1, 2, dtype=torch.long),
                                                             "input_ids": torch.zeros(1, 2, dtype=torch.long)})


def test_head_fraction_and_head_tokens_are_checked(tok):
    from lmcourse.measurement import Throughput, model_flops_per_token

    m = _tiny(tok, False)
    with pytest.raises(ValueError, match="head_fraction"):
        model_flops_per_token(m, 32, head_fraction=1.5)
    with pytest.raises(ValueError, match="head_tokens"):
        Throughput(model=m).count(torch.zeros(2, 4, dtype=torch.long), head_tokens=9)


def _no_dropout(tok):
    prof = get_profile("smoke").with_overrides(hidden_size=32, num_layers=2, num_heads=2, block_size=32)
    cfg = PT.bert_config(prof, tok, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return PT.bert_for_pretraining(cfg, nsp=False, ctx=CTX)


def test_the_trainer_fed_our_batches_and_schedule_follows_our_loop_step_for_step(tok):
    """Our hand-written loop is the Trainer's computation: same batches, optimiser, schedule -> same losses."""
    feats = [{"input_ids": b} for b in PT.bert_blocks(tok, T.corpus_lines(max_lines=400), 32)]
    batches = PT.BlockBatches(feats, 8, PT.mlm_collator(tok), CTX)
    cfg = PT.TrainConfig(max_steps=8, lr=2e-3, warmup_steps=3, eval_every=100)
    ours = PT.train(_no_dropout(tok), batches, PT.gathered_mlm_step_outputs, cfg, CTX, progress=False)
    theirs = PT.train_with_trainer(_no_dropout(tok), PT.StepBatches(batches, cfg.max_steps), cfg, CTX,
                                   batch_size=8, same_schedule=True)
    assert [r["step"] for r in theirs.history] == list(range(1, 9))
    assert [r["lr"] for r in theirs.history] == pytest.approx([r["lr"] for r in ours.history], rel=1e-6)
    # the Trainer logs the loss rounded to 4 decimals
    assert [r["loss"] for r in theirs.history] == pytest.approx([r["loss"] for r in ours.history], abs=2e-4)
    assert ours.history[-1]["loss"] < ours.history[0]["loss"] - 0.05  # the steps did move the weights


def test_the_library_recipe_runs_with_its_own_masking_and_evaluates_like_ours(tok):
    from datasets import Dataset

    lines = T.corpus_lines(max_lines=400)
    blocks = PT.bert_blocks(tok, lines, 32)
    coll = PT.mlm_collator(tok)
    ev = PT.mlm_evaluator([{"input_ids": b} for b in blocks[:16]], coll, CTX)
    model = _tiny(tok, False)
    before = ev(model.eval())["mlm_loss"]
    cfg = PT.TrainConfig(max_steps=10, lr=2e-3, warmup_steps=2)
    res = PT.train_with_trainer(model, Dataset.from_dict({"input_ids": blocks}), cfg, CTX, batch_size=8,
                                data_collator=coll, evaluate=ev)
    assert len(res.history) == 10 and res.history[0]["lr"] == 0.0  # HF's warmup starts at 0, ours at lr/warmup
    assert res.evals[-1]["step"] == 10 and res.evals[-1]["mlm_loss"] < before - 0.05


def test_corpus_passes_counts_passes_and_refuses_more_than_the_limit():
    assert PT.corpus_passes(80, 16, 7512, what="MLM") == pytest.approx(80 * 16 / 7512)
    assert PT.corpus_passes(10, 10, 10, what="MLM") == 10.0  # exactly at the limit is allowed
    with pytest.raises(ArgumentError, match="at most 10 are allowed"):
        PT.corpus_passes(11, 10, 10, what="MLM")
    with pytest.raises(ArgumentError, match=r"TAPT: 6000 steps x 128 = 413\.8 passes over its 1,856 blocks"):
        PT.corpus_passes(6000, 128, 1856, what="TAPT")
    with pytest.raises(ArgumentError, match="no blocks"):
        PT.corpus_passes(1, 1, 0, what="MLM")
    assert PT.corpus_passes(30, 4, 100, what="x", max_passes=1.2) == 1.2


def test_steps_within_passes_caps_a_step_budget_at_the_limit():
    # an MLM budget of thousands of steps of 128 blocks (the gpu profile's), on 1,856 blocks of task text
    capped = PT.steps_within_passes(6000, 128, 1856)
    assert capped == 145
    assert PT.corpus_passes(capped, 128, 1856, what="TAPT") <= PT.MAX_PASSES
    with pytest.raises(ArgumentError):
        PT.corpus_passes(capped + 1, 128, 1856, what="TAPT")
    assert PT.steps_within_passes(80, 16, 7512) == 80  # a budget inside the limit is kept
    assert PT.steps_within_passes(100, 10, 50, max_passes=2) == 10
    with pytest.raises(ArgumentError):
        PT.steps_within_passes(10, 0, 50)
