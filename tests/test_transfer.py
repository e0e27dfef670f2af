"""lmcourse.transfer: the mean-pooling head against hand computations, the probe and baseline curves, the
crossing fit on lines with a known answer, and the fine-tuning helpers end to end on a tiny random BERT.
Pooling, features, the probe protocol and the TF-IDF baseline are lmcourse.readout's (tests/test_readout.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lmcourse.context import resolve_context
from lmcourse.data import load_glue
from lmcourse.errors import ArgumentError
from lmcourse.transfer import (
    MeanPoolingClassifier,
    baseline_curve,
    choose_learning_rate,
    crossing_point,
    crossing_supported,
    encoder_features,
    finetune_curve,
    fresh_word_embeddings,
    linear_probe,
    mean_pooling_head,
    nested_subset,
    paired_scores,
    probe_curve,
    slope_sign,
    until_converged,
)

SMOKE = resolve_context("smoke", seed=0, device="cpu", bf16=False)


def _tiny_config(**kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, **kw)


def test_mean_pooling_head_is_mean_pool_then_linear():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    net = BertForSequenceClassification(_tiny_config(num_labels=3)).eval()
    head = mean_pooling_head(net).eval()
    assert isinstance(head, MeanPoolingClassifier) and head.encoder.pooler is None
    assert not any(name.startswith("encoder.pooler") for name, _ in head.named_parameters())
    ids = torch.randint(5, 120, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    labels = torch.tensor([0, 2, 1, 2])
    out = head(input_ids=ids, attention_mask=mask, labels=labels)
    # by hand: each example alone, unpadded, through the same encoder
    rows = []
    for i in range(4):
        n = int(mask[i].sum())
        h = net.bert(input_ids=ids[i:i + 1, :n]).last_hidden_state[0]
        rows.append(head.classifier(h.mean(0)))
    expected = torch.stack(rows)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels), atol=1e-5, rtol=1e-5)


def test_mean_pooling_head_regression_uses_mse():
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    net = BertForSequenceClassification(_tiny_config(num_labels=1, problem_type="regression")).eval()
    head = mean_pooling_head(net).eval()
    ids = torch.randint(5, 120, (2, 7))
    y = torch.tensor([0.5, 3.0])
    out = head(input_ids=ids, attention_mask=torch.ones_like(ids), labels=y)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), y))


def test_fresh_word_embeddings_replaces_only_the_table():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    net = BertForSequenceClassification(_tiny_config(num_labels=2, initializer_range=0.05))
    with torch.no_grad():
        net.bert.embeddings.word_embeddings.weight.mul_(0).add_(1.0)  # a "trained" table: all ones
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = fresh_word_embeddings(7)(net)
    table = out.bert.embeddings.word_embeddings.weight
    assert out is net
    assert table[1:].std().item() == pytest.approx(0.05, rel=0.1) and abs(table[1:].mean().item()) < 0.01
    assert torch.count_nonzero(table[net.config.pad_token_id]) == 0
    for k, v in net.state_dict().items():
        if k != "bert.embeddings.word_embeddings.weight":
            assert torch.equal(v, before[k]), k
    other = BertForSequenceClassification(_tiny_config(num_labels=2, initializer_range=0.05))
    torch.testing.assert_close(fresh_word_embeddings(7)(other).bert.embeddings.word_embeddings.weight, table)
    assert isinstance(fresh_word_embeddings(7, then=mean_pooling_head)(other), MeanPoolingClassifier)


def test_nested_subset_is_nested_and_seeded():
    a, b = nested_subset(100, 10, 3), nested_subset(100, 30, 3)
    assert list(b[:10]) == list(a) and len(set(b)) == 30 and b.max() < 100
    assert list(nested_subset(100, 10, 3)) == list(a) and list(nested_subset(100, 10, 4)) != list(a)
    for bad in [0, 101]:
        with pytest.raises(ArgumentError, match="cannot draw"):
            nested_subset(100, bad, 0)


def test_probe_curve_rows_follow_sizes_and_seeds():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] > 0).astype(int)
    rows = probe_curve(x[:200], y[:200], x[200:], y[200:], "sst2", sizes=[20, 80, 500], seeds=[0, 1], label="f")
    # the whole pool (500 is capped at 200) runs once: every seed would fit the same examples
    assert [(r["n"], r["seed"]) for r in rows] == [(20, 0), (80, 0), (200, 0), (20, 1), (80, 1)]
    assert all(r["init"] == "f" and r["task"] == "sst2" for r in rows)
    assert rows[0]["score"] != rows[3]["score"] or rows[1]["score"] != rows[4]["score"]  # other draws


def test_baseline_curve_majority_is_the_subset_majority_on_eval():
    train = load_glue("sst2", "train").select(range(300))
    evaluation = load_glue("sst2", "validation").select(range(100))
    rows = baseline_curve("sst2", train, evaluation, sizes=[15, 60, 300], seeds=[0, 1])
    assert [(r["n"], r["seed"]) for r in rows if r["init"] == "majority class"] == [(15, 0), (60, 0), (300, 0),
                                                                                  (15, 1), (60, 1)]
    majority = [r for r in rows if r["init"] == "majority class"]
    idx = nested_subset(300, 15, 0)
    top = np.bincount(np.asarray(train.select(idx.tolist())["label"])).argmax()
    assert majority[0]["score"] == pytest.approx(float(np.mean(np.asarray(evaluation["label"]) == top)))
    tfidf = [r["score"] for r in rows if r["init"] == "TF-IDF + LR"]
    assert len(tfidf) == 5 and all(0.0 <= s <= 1.0 for s in tfidf)


def test_probes_and_baselines_score_accuracy_unless_asked():
    # MRPC's GLUE metric is F1 of "paraphrase", which a constant "paraphrase" scores highly: probes use accuracy
    train = load_glue("mrpc", "train").select(range(200))
    evaluation = load_glue("mrpc", "validation").select(range(120))
    labels = np.asarray(evaluation["label"])
    rows = baseline_curve("mrpc", train, evaluation, sizes=[200], seeds=[0])
    majority = next(r["score"] for r in rows if r["init"] == "majority class")
    assert majority == pytest.approx(float(np.mean(labels == 1)))  # the subset's majority is "paraphrase"
    f1 = next(r["score"] for r in baseline_curve("mrpc", train, evaluation, sizes=[200], seeds=[0], metric="f1")
              if r["init"] == "majority class")
    assert f1 == pytest.approx(2 * majority / (1 + majority)) and f1 > majority
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 4))
    y = (x[:, 0] + rng.normal(size=320) > 0).astype(int)  # noisy labels: accuracy and F1 differ
    acc = linear_probe(x[:200], y[:200], x[200:], y[200:], "mrpc")
    assert acc == pytest.approx(linear_probe(x[:200], y[:200], x[200:], y[200:], "mrpc", metric="accuracy"))
    assert acc != pytest.approx(linear_probe(x[:200], y[:200], x[200:], y[200:], "mrpc", metric="f1"))
    assert linear_probe(x[:200], y[:200], x[200:], y[200:], "cola") == pytest.approx(acc)  # MCC-only task
    with pytest.raises(ArgumentError, match="no metric"):
        linear_probe(x[:200], y[:200], x[200:], y[200:], "mrpc", metric="pearson")


def test_crossing_point_on_known_lines():
    flops = [1e12, 1e13, 1e14]
    # score = 0.5 + 0.02 * (log10 F - 12), three seeds with symmetric noise: the fit recovers it exactly
    scores = [[0.5 + 0.02 * k + d for d in (-0.01, 0.0, 0.01)] for k in range(3)]
    c = crossing_point(flops, scores, reference=[0.58, 0.58, 0.58], n_boot=200)
    assert c.slope == pytest.approx(0.02) and c.log10_flops == pytest.approx(16.0)
    assert c.interval is not None and c.interval[0] <= 16.0 <= c.interval[1] and not c.already_above
    assert c.positive_share == 1.0 and "at 10^16.0 FLOPs, beyond the last checkpoint's 10^14.0" in c.describe()
    falling = crossing_point(flops, [[0.6], [0.55], [0.5]], reference=[0.7])
    assert falling.log10_flops is None and falling.interval is None and "no crossing" in falling.describe()
    above = crossing_point(flops, scores, reference=[0.5])
    assert above.already_above and above.log10_flops == pytest.approx(12.0)
    assert "within the checkpoints' compute" in above.describe()
    before = crossing_point(flops, scores, reference=[0.49])  # the fit meets it half a decade before 1e12
    assert "at 10^11.5 FLOPs, before the first checkpoint's 10^12.0" in before.describe()
    for bad in [dict(flops=[0.0, 1e12], scores=[[0.5], [0.6]]), dict(flops=[1e12], scores=[[0.5]]),
                dict(flops=[1e12, 1e12], scores=[[0.5], [0.6]])]:
        with pytest.raises(ArgumentError):
            crossing_point(bad["flops"], bad["scores"], reference=[0.5])


FAST = {"max_eval_samples": 40, "num_epochs": 1, "batch_size": 16, "max_length": 32, "bf16": False}


def test_finetune_curve_with_mean_pooling_on_a_tiny_bert(tiny_bert):
    rows = finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[32, 48], seeds=[0, 1], label="tiny", **FAST)
    assert [(r["n"], r["seed"]) for r in rows] == [(32, 0), (48, 0), (32, 1), (48, 1)]
    assert all(0.0 <= r["score"] <= 1.0 and r["selection_score"] is not None for r in rows)
    again = finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[32], seeds=[1], label="tiny", **FAST)
    assert again[0]["score"] == rows[2]["score"]  # a seed fixes the run


def test_until_converged_trains_epochs_and_stops_early(tiny_bert):
    """The readout that can learn: one held-out evaluation per epoch, early stopping after ``patience`` epochs
    without a better held-out score, the best epoch's weights kept and reported in the row."""
    from lmcourse.finetuning import task_settings

    settings = until_converged(epochs=6, patience=1, batch_size=16, max_length=32, max_eval_samples=40)
    assert task_settings("smoke", "sst2", **settings)["early_stopping_patience"] == 1  # every key is finetune's
    # at a learning rate of 0 the held-out score never improves: the first evaluation is best, one more stops it
    frozen, = finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[48], seeds=[0], label="tiny", learning_rate=0.0,
                             **{**settings, "bf16": False})
    assert frozen["epochs"] == 2.0 and frozen["best_epoch"] == 1.0
    # a learning model trains on while it improves, up to the epochs allowed
    moving, = finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[48], seeds=[0], label="tiny", learning_rate=1e-3,
                             **{**settings, "bf16": False})
    assert 2.0 <= moving["epochs"] <= 6.0 and 1.0 <= moving["best_epoch"] <= moving["epochs"]
    with pytest.raises(ArgumentError, match="patience"):
        until_converged(epochs=3, patience=3, batch_size=16, max_length=32)
    with pytest.raises(ArgumentError, match="epochs >= 1"):
        until_converged(epochs=0, patience=1, batch_size=16, max_length=32)


def test_choose_learning_rate_picks_the_best_selection_score(tiny_bert):
    lr, rows = choose_learning_rate("sst2", tiny_bert, [1e-5, 1e-3], ctx=SMOKE, n=64, label="tiny", **FAST)
    assert [r["learning_rate"] for r in rows] == [1e-5, 1e-3]
    best = max(rows, key=lambda r: (r["selection_score"], -r["learning_rate"]))
    assert lr == best["learning_rate"]
    with pytest.raises(ArgumentError, match="held-out"):
        choose_learning_rate("sst2", tiny_bert, [1e-4], ctx=SMOKE, n=64, label="t", selection_fraction=0, **FAST)
    with pytest.raises(ArgumentError, match="at least one"):
        choose_learning_rate("sst2", tiny_bert, [], ctx=SMOKE, n=64, label="t")


def test_choose_learning_rate_ignores_the_dev_score(monkeypatch):
    import lmcourse.transfer as tr

    def fake_curve(task, model, *, learning_rate, **_):  # dev score and selection score disagree on purpose
        return [{"learning_rate": learning_rate, "selection_score": {1e-4: 0.9, 1e-3: 0.6}[learning_rate],
                 "score": {1e-4: 0.5, 1e-3: 0.99}[learning_rate]}]

    monkeypatch.setattr(tr, "finetune_curve", fake_curve)
    lr, rows = tr.choose_learning_rate("sst2", "m", [1e-4, 1e-3], ctx=SMOKE, n=64, label="x")
    assert lr == 1e-4 and len(rows) == 2


def test_finetune_curve_reuses_runs_already_made(tiny_bert, monkeypatch):
    import lmcourse.finetuning as lf

    made = finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[32], seeds=[0], label="tiny", learning_rate=1e-4,
                          **FAST)
    monkeypatch.setattr(lf, "finetune", lambda *a, **k: pytest.fail("a reused run was repeated"))
    again = finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[32], seeds=[0], label="tiny", learning_rate=1e-4,
                           reuse=made, **FAST)
    assert again == made
    with pytest.raises(pytest.fail.Exception, match="repeated"):  # another rate is a new run
        finetune_curve("sst2", tiny_bert, ctx=SMOKE, sizes=[32], seeds=[0], label="tiny", learning_rate=3e-4,
                       reuse=made, **FAST)


def test_crossing_point_flat_and_far_lines_predict_nothing():
    flops = [1e12, 1e13, 1e14]
    flat = crossing_point(flops, [[0.5, 0.5]] * 3, reference=[0.5, 0.5], n_boot=50)
    assert flat.log10_flops is None and "no crossing" in flat.describe()
    far = crossing_point(flops, [[0.5], [0.5001], [0.5002]], reference=[0.9], n_boot=50)
    assert far.log10_flops > 14 + 10 and "no prediction" in far.describe()


def test_crossing_confidence_set_holds_the_point_estimate_when_the_slope_is_uncertain():
    # checkpoints barely above random init with a slope of either sign: a percentile interval of the bootstrap
    # crossings (a ratio over a slope near zero) gave 10^9.35-10^11.0 here and left out its own estimate, 10^9.2
    flops = [1e11, 10**11.3]
    reference = [0.684, 0.666, 0.679, 0.683, 0.684]
    scores = [[0.688, 0.666, 0.702, 0.686, 0.702], [0.715, 0.684, 0.674, 0.695, 0.684]]
    c = crossing_point(flops, scores, reference, n_boot=500)
    assert c.log10_flops == pytest.approx(9.2, abs=0.05) and 0.3 < c.positive_share < 0.7
    assert c.interval is not None and c.interval[0] <= c.log10_flops <= c.interval[1]
    # the slope's sign is open, so the set is two rays: below the data and above them, nothing bounds it
    assert len(c.confidence_set) == 2 and c.confidence_set[0][0] == -math.inf and c.confidence_set[1][1] == math.inf
    assert "below 10^" in c.describe() and "without bound" in c.describe()
    # a line known well: a bounded set around the true crossing, 16.0 (one decade of noise-free rise is 0.02)
    tight = crossing_point([1e12, 1e13, 1e14], [[0.5 + 0.02 * k + d for d in (-0.002, 0.0, 0.002)] for k in range(3)],
                           reference=[0.579, 0.58, 0.581], n_boot=300)
    (lo, hi), = tight.confidence_set
    assert 15.5 < lo < 16.0 < hi < 16.5
    with pytest.raises(ArgumentError, match="bootstrap draw"):
        crossing_point([1e12, 1e13], [[0.5], [0.6]], reference=[0.5], n_boot=0)


def test_unlabelled_text_is_the_training_sentences_of_each_task():
    from lmcourse.transfer import unlabelled_text

    lines = unlabelled_text(["mrpc", "sst2"], split="train[:20]")
    train = load_glue("mrpc", "train[:20]")
    assert lines[:20] == [t.strip() for t in train["sentence1"]]
    assert lines[20:40] == [t.strip() for t in train["sentence2"]]
    assert lines[40:] == [t.strip() for t in load_glue("sst2", "train[:20]")["sentence"]]
    with pytest.raises(ArgumentError, match="training text only"):
        unlabelled_text(["sst2"], split="validation")


# ------------------------------------------------------------------------------------------ other pretraining
def test_continued_mlm_model_keeps_the_encoder_and_draws_a_seeded_head(tiny_bert):
    from transformers import AutoModel

    from lmcourse.transfer import continued_mlm_model

    base = AutoModel.from_pretrained(tiny_bert)
    a = continued_mlm_model(tiny_bert, SMOKE)
    b = continued_mlm_model(tiny_bert, SMOKE)
    c = continued_mlm_model(tiny_bert, SMOKE.with_changes(seed=1))
    for name, p in base.named_parameters():
        if not name.startswith("pooler"):
            torch.testing.assert_close(a.bert.get_parameter(name), p, rtol=0, atol=0)
    head = "cls.predictions.transform.dense.weight"
    torch.testing.assert_close(a.get_parameter(head), b.get_parameter(head), rtol=0, atol=0)
    assert not torch.equal(a.get_parameter(head), c.get_parameter(head))
    assert a.cls.predictions.decoder.weight.data_ptr() == a.bert.embeddings.word_embeddings.weight.data_ptr()
    ids = torch.randint(5, 100, (2, 8))
    assert torch.isfinite(a(input_ids=ids, labels=ids).loss)


def test_continued_mlm_model_refuses_a_non_bert_model(tmp_path):
    from transformers import GPT2Config

    from lmcourse.transfer import continued_mlm_model

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ArgumentError, match="BERT-architecture"):
        continued_mlm_model(str(tmp_path), SMOKE)


def _teacher_and_student(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    teacher = BertModel(BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                   intermediate_size=96, max_position_embeddings=64), add_pooling_layer=False)
    student = BertModel(_tiny_config(), add_pooling_layer=False)
    return teacher, student


@pytest.mark.parametrize("pairs", [None, [(1, 2), (2, 3), (0, 0)]])
def test_hidden_state_distillation_equals_the_formula_over_real_tokens(pairs):
    from lmcourse.transfer import HiddenStateDistillation

    teacher, student = _teacher_and_student()
    distiller = HiddenStateDistillation(student, teacher, layer_pairs=pairs).eval()
    ids = torch.randint(5, 120, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 7:] = 0
    loss = distiller(input_ids=ids, attention_mask=mask)
    # by hand: each example alone and unpadded; the squared error over every (token, dim), averaged per pair
    expected = []
    for m, n in pairs or [(2, 3)]:
        errors = []
        for i in range(3):
            k = int(mask[i].sum())
            hs = student(input_ids=ids[i:i + 1, :k], output_hidden_states=True).hidden_states[m][0]
            ht = teacher(input_ids=ids[i:i + 1, :k], output_hidden_states=True).hidden_states[n][0]
            errors.append((distiller.projection(hs) - ht) ** 2)
        expected.append(torch.cat(errors).mean())
    torch.testing.assert_close(loss, torch.stack(expected).mean(), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert distiller.projection.weight.grad is not None and student.embeddings.word_embeddings.weight.grad is not None
    assert not any(n.startswith("_teacher") or "teacher" in n for n, _ in distiller.named_parameters())


def test_hidden_state_distillation_refuses_mismatched_models():
    from transformers import BertConfig, BertModel

    from lmcourse.transfer import HiddenStateDistillation

    teacher, student = _teacher_and_student()
    other = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64))
    with pytest.raises(ArgumentError, match="share the tokenizer"):
        HiddenStateDistillation(other, teacher)
    with pytest.raises(ArgumentError, match="layer pair"):
        HiddenStateDistillation(student, teacher, layer_pairs=[(3, 1)])


def test_distillation_pretraining_moves_the_student_towards_the_teacher():
    from transformers import DataCollatorWithPadding

    from lmcourse import pretraining as PT
    from lmcourse.transfer import HiddenStateDistillation, distillation_step_outputs

    class Tok:  # the few fields DataCollatorWithPadding reads
        pad_token_id, padding_side, model_input_names = 0, "right", ["input_ids", "attention_mask"]

        def pad(self, features, **kw):
            width = max(len(f["input_ids"]) for f in features)
            ids = [f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]
            att = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att)}

    teacher, student = _teacher_and_student()
    distiller = HiddenStateDistillation(student, teacher)
    g = torch.Generator().manual_seed(0)
    feats = [{"input_ids": torch.randint(5, 120, (int(torch.randint(4, 12, (1,), generator=g)),),
                                         generator=g).tolist()} for _ in range(64)]
    batches = PT.BlockBatches(feats, 16, DataCollatorWithPadding(Tok()), SMOKE)
    held_out = batches(1000)
    with torch.no_grad():
        before = float(distiller.eval()(**held_out))
    cfg = PT.TrainConfig(max_steps=40, lr=3e-3, warmup_steps=2, bf16=False)
    result = PT.train(distiller, batches, distillation_step_outputs, cfg, SMOKE, progress=False, tensorboard=None)
    with torch.no_grad():
        after = float(distiller.eval()(**held_out))
    assert after < 0.5 * before, (before, after)
    assert result.series("hidden_mse")[1][-1] < result.series("hidden_mse")[1][0]
    with pytest.raises(ArgumentError, match="HiddenStateDistillation"):
        distillation_step_outputs(student, held_out)


def test_probe_curves_probe_every_task_on_its_own_features(tiny_bert):
    from lmcourse.transfer import load_encoder, probe_curves

    tok, encoder = load_encoder(tiny_bert)
    data = {t: (load_glue(t, "train").select(range(40)), load_glue(t, "validation").select(range(24)))
            for t in ("sst2", "mrpc")}
    sizes = {"sst2": [20, 40], "mrpc": [30]}
    rows = probe_curves(encoder, tok, data, SMOKE, sizes=sizes, seeds=[0, 1], max_length=32, label="tiny")
    for task, (pool, dev) in data.items():
        fx = encoder_features(encoder, tok, pool, task, SMOKE, max_length=32)
        fd = encoder_features(encoder, tok, dev, task, SMOKE, max_length=32)
        expected = probe_curve(fx, pool["label"], fd, dev["label"], task, sizes=sizes[task], seeds=[0, 1],
                               label="tiny")
        assert [r for r in rows if r["task"] == task] == expected
    assert {r["task"] for r in rows} == {"sst2", "mrpc"} and len({r["score"] for r in rows}) > 1


def test_distillation_flops_count_the_student_and_projection_not_the_table_or_teacher():
    from lmcourse.measurement import matmul_params, model_flops_per_token
    from lmcourse.transfer import HiddenStateDistillation

    teacher, student = _teacher_and_student()
    distiller = HiddenStateDistillation(student, teacher)
    table = student.get_input_embeddings().weight
    body = matmul_params(student, exclude=(table,))
    projection = sum(p.numel() for p in distiller.projection.parameters())
    assert model_flops_per_token(distiller, 10) == pytest.approx(
        model_flops_per_token(student, 10) + 6 * projection)
    assert body + projection < matmul_params(distiller)  # the table would be counted without the look-up rule
    assert distiller.teacher_flops_per_token(10) == pytest.approx(model_flops_per_token(teacher, 10) / 3)


# WikiText-103's training split: 103,227,021 tokens (Merity et al. 2016, "Pointer Sentinel Mixture Models",
# Table 1). Its tokens are words and punctuation split on spaces; WordPiece cuts each into one piece or more, so
# the corpus gives at least this many WordPiece tokens, and a run's passes over it are at most the bound below.
WIKITEXT_103_TRAIN_TOKENS = 103_227_021


def test_every_profiles_pretraining_runs_stay_within_max_passes():
    """Notebook 14's runs in every profile, counted before any of them runs: the task text is here (the offline
    GLUE mirror, each run's own tokenizer and block); WikiText-103 (the gpu corpus) through its published size.
    TAPT is capped by ``steps_within_passes``; the others must fit as the profile sizes them."""
    from lmcourse import pretraining as PT
    from lmcourse.profiles import PROFILES
    from lmcourse.transfer import load_encoder, unlabelled_text

    text = unlabelled_text(("sst2", "mrpc"))
    blocks: dict[tuple[str, int], int] = {}

    def task_blocks(model: str, block: int) -> int:
        if (model, block) not in blocks:
            blocks[model, block] = len(PT.bert_blocks(load_encoder(model)[0], text, block))
        return blocks[model, block]

    counted = 0
    for p in PROFILES.values():
        S = p.transfer
        assert tuple(S["probe_tasks"]) == ("sst2", "mrpc"), p.name  # the text counted here
        D = S["continued_mlm"]
        PT.corpus_passes(D["steps"], D["batch"], task_blocks(D["model"], D["block"]) - D["eval_blocks"],
                         what=f"{p.name}: continued MLM")
        G = S["distill"]
        if G["corpus"] == "task":
            PT.corpus_passes(G["steps"], G["batch"], task_blocks(G["teacher"], G["block"]), what=f"{p.name}: distil")
        corpora = {name for name, _ in S["corpus"]}
        if corpora == {"wikitext-103-raw"}:
            at_least = WIKITEXT_103_TRAIN_TOKENS // (p.block_size - 2)
            PT.corpus_passes(S["pretrain_steps"], S["pretrain_batch"], at_least, what=f"{p.name}: MLM")
            if G["corpus"] == "pretraining":
                PT.corpus_passes(G["steps"], G["batch"], WIKITEXT_103_TRAIN_TOKENS // (G["block"] - 2),
                                 what=f"{p.name}: distil")
            counted += 1
    assert counted == 1  # the gpu profile's corpus was bounded, not passed over


def test_crossing_needs_four_checkpoints_over_a_decade():
    assert crossing_supported([1e12, 2e12, 5e12, 1e13])
    assert not crossing_supported([1e12, 2e12, 5e12, 9e12])  # under a decade
    assert not crossing_supported([1e12, 1e13, 1e14])  # three checkpoints
    assert not crossing_supported([0.0, 1e12, 1e13, 1e14])  # step 0 is the reference, not a checkpoint
    rising = slope_sign([1e12, 2e12], [[0.60, 0.62], [0.64, 0.66]], reference=[0.5, 0.52])
    assert "rises" in rising and "+0.1329 per decade" in rising  # 0.04 over log10(2) = 0.301 decades
    assert "does not rise" in slope_sign([1e12, 2e12], [[0.6], [0.6]], reference=[0.5])
    one = slope_sign([1e12], [[0.6, 0.62]], reference=[0.5, 0.52])
    assert one.startswith("one checkpoint, +0.1000") and "above" in one
    with pytest.raises(ArgumentError, match="one non-empty list"):
        slope_sign([1e12, 2e12], [[0.6], []], reference=[0.5])


def test_paired_scores_match_seeds():
    rows = [{"init": lab, "task": "sst2", "n": 100, "seed": seed, "score": score}
            for lab, seed, score in [("a", 2, 0.7), ("a", 0, 0.6), ("a", 1, 0.65), ("b", 0, 0.5), ("b", 1, 0.55),
                                     ("b", 3, 0.9)]]
    rows.append({"init": "a", "task": "mrpc", "n": 100, "seed": 3, "score": 0.0})  # another task: not a pair
    assert paired_scores(rows, "a", "b", "sst2", 100) == ([0.6, 0.65], [0.5, 0.55])
    assert paired_scores(rows, "b", "a", "sst2", 100) == ([0.5, 0.55], [0.6, 0.65])
    assert paired_scores(rows, "a", "b", "sst2", 300) == ([], [])


def test_remove_top_components_is_all_but_the_top_against_sklearn_pca():
    from sklearn.decomposition import PCA

    from lmcourse.transfer import remove_top_components

    gen = torch.Generator().manual_seed(0)
    # a cone: a shared offset and one dominant direction on top of isotropic noise
    direction = torch.randn(16, generator=gen)
    table = torch.randn(200, 16, generator=gen) + 3.0 + torch.randn(200, 1, generator=gen) * direction * 4
    table[0] = 0.0  # a padding row: skipped, returned as it was
    out = remove_top_components(table, 2, skip_rows=[0])
    rows = table[1:].double().numpy()
    pca = PCA(n_components=2).fit(rows)
    expected = rows - rows.mean(0) - (rows - rows.mean(0)) @ pca.components_.T @ pca.components_
    np.testing.assert_allclose(out[1:].double().numpy(), expected, atol=1e-5)
    assert torch.equal(out[0], table[0]) and out.dtype == table.dtype
    assert out[1:].mean(0).abs().max() < 1e-5  # the common mean is gone
    # the cone is gone: the mean cosine between rows falls from near 1 to near 0
    def mean_cos(x):
        x = F.normalize(x.double(), dim=1)
        return float((x @ x.T).fill_diagonal_(0).sum() / (len(x) * (len(x) - 1)))
    assert mean_cos(table[1:]) > 0.5 and abs(mean_cos(out[1:])) < 0.05
    assert torch.equal(remove_top_components(table, 0, skip_rows=[0])[1:].float(),
                       (table[1:].double() - table[1:].double().mean(0)).float())  # 0 components: the mean only
    with pytest.raises(ArgumentError, match="components"):
        remove_top_components(table, 16)
