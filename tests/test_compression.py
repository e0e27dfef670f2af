"""lmcourse.compression against the libraries: the KD loss vs ``F.kl_div``, per-channel int8 vs torch's quantized
tensors, head importance vs brute-force head masking, head pruning vs the gate, the ONNX round trip, and the
``lmcourse classify`` error paths. Tiny random BERTs; a few seconds in all but the ONNX export."""

from __future__ import annotations

import io
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from lmcourse.cli import main as cli_main
from lmcourse.compression import (
    OnnxClassifier,
    dequantize,
    distillation_loss,
    dynamic_int8,
    export_onnx,
    head_counts,
    head_gates,
    head_importance,
    least_important_heads,
    magnitude_prune,
    masked_head_losses,
    optimized_op_counts,
    prune_heads,
    quantization_error,
    quantize_onnx_int8,
    quantize_per_channel,
    size_on_disk,
    sparsity_of,
    student_from_teacher,
    torch_threads,
    weight_only_int8,
)
from lmcourse.errors import ArgumentError, DataUnavailableError


def _tiny(layers=2, heads=4, hidden=32, seed=0, vocab=120, dtype=torch.float32) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    model = BertForSequenceClassification(cfg).to(dtype).eval()
    with torch.no_grad():  # fresh biases are 0 and LayerNorms (1, 0): randomise so that every path matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _batch(n=4, length=9, vocab=120, seed=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[n // 2, 5:] = 0  # one padded example
    return {"input_ids": torch.randint(1, vocab, (n, length), generator=g), "attention_mask": mask,
            "labels": torch.randint(0, 2, (n,), generator=g)}


# ------------------------------------------------------------------------------------------ distillation
@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (3.0, 0.0), (2.0, 1.0)])
def test_distillation_loss_matches_kl_div_formulation(temperature, alpha):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = 3 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (8,), generator=g)
    ours = distillation_loss(student, teacher, labels, temperature=temperature, alpha=alpha)
    soft = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    reduction="batchmean", log_target=True) * temperature**2
    ref = alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours, student)
    (g_ref,) = torch.autograd.grad(ref, student)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    # soft only, and unlabelled (-100) examples drop out of the hard part only
    torch.testing.assert_close(distillation_loss(student, teacher, None, temperature), soft, rtol=1e-12, atol=1e-12)
    partial = labels.clone()
    partial[:3] = -100
    ref_partial = alpha * soft + (1 - alpha) * F.cross_entropy(student[3:], labels[3:])
    torch.testing.assert_close(distillation_loss(student, teacher, partial, temperature, alpha), ref_partial,
                               rtol=1e-12, atol=1e-12)


def test_distillation_loss_zero_when_student_is_teacher_and_bad_arguments():
    logits = torch.randn(5, 2, dtype=torch.float64)
    assert float(distillation_loss(logits, logits, None)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ArgumentError, match="temperature must be > 0"):
        distillation_loss(logits, logits, None, temperature=0)
    with pytest.raises(ArgumentError, match=r"alpha .* \[0, 1\]"):
        distillation_loss(logits, logits, None, alpha=1.5)


def test_student_from_teacher_takes_every_other_layer():
    teacher = _tiny(layers=4)
    student = student_from_teacher(teacher)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t, s = teacher.state_dict(), student.state_dict()
    for i, j in [(0, 0), (1, 2)]:
        for name in ("attention.self.query.weight", "output.dense.weight", "intermediate.dense.bias"):
            torch.testing.assert_close(s[f"bert.encoder.layer.{i}.{name}"], t[f"bert.encoder.layer.{j}.{name}"],
                                       rtol=0, atol=0)
    for name in ("bert.embeddings.word_embeddings.weight", "classifier.weight", "bert.pooler.dense.weight"):
        torch.testing.assert_close(s[name], t[name], rtol=0, atol=0)
    # all layers: the same function as the teacher; random init: same shape, other weights
    same = student_from_teacher(teacher, layers=[0, 1, 2, 3]).eval()
    batch = _batch()
    torch.testing.assert_close(same(**batch).logits, teacher(**batch).logits, rtol=0, atol=0)
    rand = student_from_teacher(teacher, random_init=True)
    assert {k: v.shape for k, v in rand.state_dict().items()} == {k: v.shape for k, v in s.items()}
    assert not torch.equal(rand.state_dict()["bert.encoder.layer.0.attention.self.query.weight"],
                           s["bert.encoder.layer.0.attention.self.query.weight"])
    with pytest.raises(ArgumentError, match="indices of the teacher's 4 layers"):
        student_from_teacher(teacher, layers=[0, 7])


def test_distill_trains_a_student_with_and_without_the_teacher():
    from transformers import AutoTokenizer

    from lmcourse.compression import distill
    from lmcourse.context import resolve_context
    from lmcourse.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    teacher = _tiny(layers=2, vocab=tokenizer.vocab_size)
    ctx = resolve_context("smoke", seed=0, device="cpu")
    sizes = dict(max_train_samples=48, max_eval_samples=16, num_epochs=1, batch_size=16, max_length=32,
                 progress=False)
    student = student_from_teacher(teacher, layers=[0])
    kd = distill("sst2", teacher, tokenizer, student, ctx=ctx, alpha=0.5,
                 extra_texts=["an unlabelled sentence", "another one"], **sizes)
    # trained under the context's autocast policy (bf16 here), the returned student runs in float32 again: its
    # logits equal a fresh copy's, as timing and ONNX export need
    copy = student_from_teacher(teacher, layers=[0])
    copy.load_state_dict(student.state_dict())
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(**batch).logits, copy.eval()(**batch).logits, rtol=0, atol=1e-6)
    plain = distill("sst2", teacher, tokenizer, student_from_teacher(teacher, layers=[0]), ctx=ctx, alpha=0.0,
                    **sizes)
    assert 0.0 <= kd["accuracy"] <= 1.0 and 0.0 <= plain["accuracy"] <= 1.0
    with pytest.raises(ArgumentError, match="regression"):
        distill("stsb", teacher, tokenizer, teacher, ctx=ctx, **sizes)
    with pytest.raises(ArgumentError, match="sentence pairs"):
        distill("mrpc", teacher, tokenizer, teacher, ctx=ctx, extra_texts=["x"], **sizes)


# ------------------------------------------------------------------------------------------ quantization
def test_per_channel_int8_matches_torch_quantized_tensors():
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 40, generator=g) * torch.rand(48, 1, generator=g) * 3
    w[5] = 0.0  # an all-zero row
    codes, scales = quantize_per_channel(w, bits=8)
    assert codes.dtype == torch.int8 and scales.shape == (48,)
    # the scales are torch's symmetric per-channel observer's (range ±127) ...
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                   quant_min=-127, quant_max=127, eps=1e-30)
    obs(w)
    ref_scales, ref_zero = obs.calculate_qparams()
    nonzero = torch.arange(48) != 5
    torch.testing.assert_close(scales[nonzero], ref_scales[nonzero], rtol=1e-6, atol=0)
    assert int(ref_zero.abs().sum()) == 0
    # ... and with our scales torch's quantized tensor holds the same integers and dequantizes the same
    q = torch.quantize_per_channel(w, scales.double(), torch.zeros(48, dtype=torch.long), 0, torch.qint8)
    torch.testing.assert_close(codes, q.int_repr(), rtol=0, atol=0)
    torch.testing.assert_close(dequantize(codes, scales), q.dequantize(), rtol=1e-6, atol=1e-7)
    # rounding error at most half a step per weight
    assert bool(((w - dequantize(codes, scales)).abs() <= scales[:, None] / 2 + 1e-6).all())


def test_per_channel_codes_round_as_torch_does_on_many_weights():
    # near-ties are rare (about one weight in a million), so compare torch's codes on 4M weights
    g = torch.Generator().manual_seed(1)
    for _ in range(24):
        w = torch.randn(384, 384, generator=g) * 0.05
        codes, scales = quantize_per_channel(w, bits=8)
        q = torch.quantize_per_channel(w, scales.double(), torch.zeros(384, dtype=torch.long), 0, torch.qint8)
        torch.testing.assert_close(codes, q.int_repr(), rtol=0, atol=0)


def test_torch_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target) as n:
        assert n == target and torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(target):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before  # restored after an error too
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ArgumentError, match="threads"), torch_threads(bad):
            pass
    assert torch.get_num_threads() == before


def test_quantization_error_halves_per_bit_and_bad_input():
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    errors = [quantization_error(w, b) for b in (2, 3, 4, 6, 8, 12)]
    assert errors == sorted(errors, reverse=True)
    assert 1.6 < errors[3] / errors[4] < 6  # 6 → 8 bits: about 4× smaller
    codes, _ = quantize_per_channel(w, bits=4)
    assert int(codes.abs().max()) == 7
    with pytest.raises(ArgumentError, match="2-D weight"):
        quantize_per_channel(torch.randn(3, 4, 5))
    with pytest.raises(ArgumentError, match="bits must be between 2 and 16"):
        quantize_per_channel(w, bits=1)


def test_dynamic_and_weight_only_int8_stay_close_to_fp32():
    model = _tiny()
    batch = _batch()
    ref = model(**batch).logits
    dyn = dynamic_int8(model)
    assert any("quantized" in type(m).__module__ for m in dyn.modules())
    torch.testing.assert_close(dyn(**batch).logits, ref, rtol=0, atol=0.05)
    wo = weight_only_int8(model)
    # the same layers as dynamic int8: every Linear, the classifier included
    linear_names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert "classifier" in linear_names
    assert {n for n, m in dyn.named_modules() if "quantized" in type(m).__module__ and type(m).__name__ == "Linear"} \
        == linear_names == {n for n, m in wo.named_modules() if type(m).__name__ == "WeightOnlyInt8Linear"}
    # weight-only is exactly the fp32 model with each weight replaced by its dequantized codes
    manual = _tiny()
    with torch.no_grad():
        for module in manual.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(dequantize(*quantize_per_channel(module.weight)))
    torch.testing.assert_close(wo(**batch).logits, manual(**batch).logits, rtol=1e-6, atol=1e-6)
    assert size_on_disk(wo) < size_on_disk(model)


# ------------------------------------------------------------------------------------------ pruning
def test_magnitude_prune_zeroes_the_globally_smallest_weights():
    model = _tiny()
    pruned = magnitude_prune(model, 0.5)
    assert sparsity_of(pruned) == pytest.approx(0.5, abs=1e-3) and sparsity_of(model) < 0.01
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "classifier" not in n]
    allw = torch.cat([model.get_submodule(n).weight.abs().flatten() for n in names])
    threshold = allw.kthvalue(int(0.5 * allw.numel())).values
    for n in names:
        before, after = model.get_submodule(n).weight, pruned.get_submodule(n).weight
        assert bool((after[before.abs() > threshold] == before[before.abs() > threshold]).all())
        assert bool((after[before.abs() < threshold] == 0).all())
    assert not any("weight_orig" in k for k in pruned.state_dict())  # masks made permanent
    with pytest.raises(ArgumentError, match="sparsity"):
        magnitude_prune(model, 1.0)


def test_head_importance_is_the_gradient_of_brute_force_masking():
    model = _tiny(layers=2, heads=4, dtype=torch.float64)
    eps = 1e-5
    # per example: |dL(x)/dxi| from a finite difference of brute-force masking, one example at a time
    six = _batch(n=6, seed=3)  # one of them padded
    examples = [{k: v[i:i + 1] for k, v in six.items()} for i in range(6)]
    finite = [((masked_head_losses(model, x, 1 + eps) - masked_head_losses(model, x, 1 - eps)) / (2 * eps))
              for x in examples]
    torch.testing.assert_close(head_importance(model, examples[:1], normalize=False), finite[0].abs(),
                               rtol=1e-5, atol=1e-9)
    # the paper's E_x |dL(x)/dxi| over batches of more than one example: the mean of the per-example values
    batches = [{k: v[:4] for k, v in six.items()}, {k: v[4:] for k, v in six.items()}]
    expected = torch.stack([f.abs() for f in finite]).mean(0)
    torch.testing.assert_close(head_importance(model, batches, normalize=False), expected, rtol=1e-5, atol=1e-9)
    # the batch form |d(batch-mean loss)/dxi| is a different number: signs cancel inside a batch
    batch_form = head_importance(model, batches, normalize=False, per_example=False)
    cancelled = (torch.stack(finite[:4]).mean(0).abs() + torch.stack(finite[4:]).mean(0).abs())
    torch.testing.assert_close(batch_form, cancelled, rtol=1e-5, atol=1e-9)
    assert bool((batch_form < 2 * expected - 1e-6).any())  # strictly smaller where the signs differ
    # normalised, each layer has unit L2 norm
    torch.testing.assert_close(head_importance(model, batches).norm(dim=1), torch.ones(2, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
    # the signed first-order estimate of removing a head is minus the gradient of the batch loss
    from lmcourse.compression import first_order_removal

    whole = _batch(n=6, seed=3)
    fd_batch = (masked_head_losses(model, whole, 1 + eps) - masked_head_losses(model, whole, 1 - eps)) / (2 * eps)
    torch.testing.assert_close(first_order_removal(model, whole), -fd_batch, rtol=1e-5, atol=1e-9)
    with pytest.raises(ArgumentError, match="per-example gates"), head_gates(model, torch.ones(3, 2, 4)):
        model(**_batch(n=2))


def test_pruned_heads_equal_gated_heads():
    model = _tiny(layers=2, heads=4)
    batch = _batch()
    gates = torch.ones(2, 4)
    gates[0, 1] = gates[0, 3] = gates[1, 2] = 0.0
    with head_gates(model, gates), torch.no_grad():
        gated = model(**batch).logits
    with torch.no_grad():
        full = model(**batch).logits  # the hooks are gone after the context
    n_before = sum(p.numel() for p in model.parameters())
    prune_heads(model, {0: [1, 3], 1: [2]})
    assert head_counts(model) == [2, 3]
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, gated, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(full, gated)
    assert n_before - sum(p.numel() for p in model.parameters()) == 3 * (3 * (8 * 32 + 8) + 8 * 32)
    with pytest.raises(ArgumentError, match="keep at least one"):
        prune_heads(model, {0: [0, 1]})
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.05, 0.04, 0.8, 0.7]])
    assert least_important_heads(scores, [4, 4], 0.5) == {1: [1, 0], 0: [0, 3]}


# ------------------------------------------------------------------------------------------ ONNX
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from transformers import AutoTokenizer

    from lmcourse.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    model = _tiny(vocab=tokenizer.vocab_size)
    model.config.id2label = {0: "negative", 1: "positive"}
    folder = tmp_path_factory.mktemp("onnx") / "fp32"
    export_onnx(model, tokenizer, folder, max_length=32)
    return model, tokenizer, folder


TEXTS = ["a gripping, beautifully shot film", "dull", "the plot drags on and on with nothing at stake for anyone"]


def test_onnx_round_trip_equals_pytorch(exported, tmp_path):
    model, _, folder = exported
    onnx = OnnxClassifier(folder)
    for texts in (TEXTS, TEXTS[:1], TEXTS * 3):  # dynamic batch and padded sequence length
        inputs = onnx.encode(texts)
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
        torch.testing.assert_close(torch.from_numpy(onnx.run(inputs)), torch.from_numpy(ref), rtol=1e-4, atol=1e-5)
    assert onnx.labels == ["negative", "positive"]
    assert [p["label"] for p in onnx.predict(TEXTS)] == [onnx.labels[i] for i in ref.argmax(-1)[:3]]
    q = quantize_onnx_int8(folder, tmp_path / "int8")
    int8 = OnnxClassifier(q.parent)
    torch.testing.assert_close(torch.from_numpy(int8.logits(TEXTS)), torch.from_numpy(onnx.logits(TEXTS)),
                               rtol=0, atol=0.1)
    assert size_on_disk(q) < size_on_disk(folder / "model.onnx")
    qc = quantize_onnx_int8(folder, tmp_path / "int8-channel", per_channel=True)
    per_channel = OnnxClassifier(qc.parent)
    torch.testing.assert_close(torch.from_numpy(per_channel.logits(TEXTS)), torch.from_numpy(onnx.logits(TEXTS)),
                               rtol=0, atol=0.1)

    def weight_scales(path):  # sizes of the quantization scales of the graph: 1 per tensor, or 1 per row
        import onnx as onnx_lib

        return [math.prod(t.dims) for t in onnx_lib.load(str(path)).graph.initializer if t.name.endswith("_scale")]

    assert max(weight_scales(q)) == 1 and max(weight_scales(qc)) > 1


def test_disabling_an_ort_fusion_changes_the_graph_not_the_logits(exported):
    model, _, folder = exported
    fused = optimized_op_counts(folder)
    unfused = optimized_op_counts(folder, ["SkipLayerNormFusion"])
    assert fused["SkipLayerNormalization"] > 0 and unfused["SkipLayerNormalization"] == 0
    assert unfused["LayerNormalization"] > fused["LayerNormalization"]
    assert optimized_op_counts(folder, ["NoSuchFusion"]) == fused  # ORT ignores unknown names: counts show it
    onnx = OnnxClassifier(folder, disabled_optimizers=["SkipLayerNormFusion"])
    assert onnx.disabled_optimizers == ("SkipLayerNormFusion",)
    inputs = onnx.encode(TEXTS)
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits
    torch.testing.assert_close(torch.from_numpy(onnx.run(inputs)), ref, rtol=1e-4, atol=1e-5)


def test_classify_cli_prints_labels_and_refuses_bad_input(exported, tmp_path, capsys, monkeypatch):
    _, _, folder = exported
    good = tmp_path / "in.txt"
    good.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert cli_main(["classify", str(folder), str(good), "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == TEXTS
    assert all(line.split("\t")[0] in ("negative", "positive") for line in lines)
    monkeypatch.setattr(sys, "stdin", io.StringIO("fine\n"))
    assert cli_main(["classify", str(folder)]) == 0 and capsys.readouterr().out.endswith("\tfine\n")

    def error_of(argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse refuses a bad number where it enters
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err  # one clear line
        return err

    assert "line 2 is empty" in error_of(["classify", str(folder)], "good\n\nalso good\n")
    assert "standard input is empty" in error_of(["classify", str(folder)], "")
    long_text = "word " * 60
    assert "line 1 is 62 tokens long, more than the model's maximum of 32" in error_of(
        ["classify", str(folder)], long_text + "\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(long_text + "\n"))
    assert cli_main(["classify", str(folder), "--truncate"]) == 0
    capsys.readouterr()
    assert "does not exist" in error_of(["classify", str(tmp_path / "nope"), str(good)])
    assert "not an exported lmcourse model folder" in error_of(["classify", str(tmp_path), str(good)])
    assert "input file" in error_of(["classify", str(folder), str(tmp_path / "missing.txt")])
    assert "argument --batch-size: 0 is out of range" in error_of(["classify", str(folder), str(good), "--batch-size",
                                                                    "0"])
    with pytest.raises(DataUnavailableError):
        OnnxClassifier(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ sentence pairs
PAIRS = [("the company said profits rose", "profits went up, the firm said"), ("a cat sat", "it rained all day long")]


def test_dev_examples_give_pairs_for_a_pair_task(data_dir):
    import pandas as pd

    from lmcourse.compression import dev_examples

    texts, labels = dev_examples("mrpc")
    raw = pd.read_parquet(next((data_dir / "glue" / "mrpc").glob("validation-*.parquet")))
    assert texts == list(zip(raw["sentence1"], raw["sentence2"]))
    assert labels.tolist() == raw["label"].tolist()
    single, _ = dev_examples("sst2", 3)
    assert all(isinstance(t, str) for t in single)


def test_pairs_are_encoded_as_bert_pairs_in_torch_and_onnx(exported, tmp_path, capsys, monkeypatch):
    from lmcourse.compression import encode_texts, onnx_logits, torch_logits

    model, tokenizer, _ = exported
    enc = encode_texts(tokenizer, PAIRS, 32)
    ref = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, truncation=True, max_length=32,
                    return_tensors="pt")
    assert enc["input_ids"].tolist() == ref["input_ids"].tolist()
    assert enc["token_type_ids"].tolist() == ref["token_type_ids"].tolist() and int(enc["token_type_ids"].max()) == 1
    with torch.no_grad():
        expected = model(**ref).logits.numpy()
    torch.testing.assert_close(torch.from_numpy(torch_logits(model, tokenizer, PAIRS, 32)),
                               torch.from_numpy(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ArgumentError, match="mixes single sentences and sentence pairs"):
        encode_texts(tokenizer, [PAIRS[0], "a sentence"], 32)

    folder = tmp_path / "pair"
    export_onnx(model, tokenizer, folder, max_length=32, pair=True)
    onnx = OnnxClassifier(folder)
    assert onnx.pair
    torch.testing.assert_close(torch.from_numpy(onnx_logits(onnx, PAIRS)), torch.from_numpy(expected),
                               rtol=1e-4, atol=1e-5)

    good = tmp_path / "pairs.txt"
    good.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS), encoding="utf-8")
    assert cli_main(["classify", str(folder), str(good)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == [onnx.labels[i] for i in expected.argmax(-1)]
    assert [tuple(line.split("\t")[2:]) for line in out] == PAIRS
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PAIRS[0][0]}\t{PAIRS[0][1]}\nno tab on this line\n"))
    assert cli_main(["classify", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "line 2 is not a sentence pair" in err and err.count("\n") == 1


def test_alternating_ms_takes_every_run_in_turn(monkeypatch):
    from lmcourse.compression import speed

    order = []
    clock = iter(range(10_000))
    monkeypatch.setattr(speed.time, "perf_counter", lambda: float(next(clock)))
    runs = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    ms = speed.alternating_ms(runs, rounds=3, repeats=2, warmup=1)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # warm-up + 2, in turn
    assert ms == {"a": [1000.0] * 3, "b": [1000.0] * 3}  # each timed call takes one tick of the fake clock
    with pytest.raises(ArgumentError, match="rounds"):
        speed.alternating_ms(runs, rounds=0)


def test_distill_never_trains_on_excluded_examples(monkeypatch):
    from transformers import AutoTokenizer

    from lmcourse.compression import distill
    from lmcourse.context import resolve_context
    from lmcourse.data import load_glue
    from lmcourse.finetuning import run as ft_run
    from lmcourse.models import resolve

    seen = []
    original = ft_run._subset

    def recording(dataset, n, seed):
        out = original(dataset, n, seed)
        seen.append([int(i) for i in out["idx"]])
        return out

    monkeypatch.setattr(ft_run, "_subset", recording)
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    teacher = _tiny(layers=1, vocab=tokenizer.vocab_size)
    ctx = resolve_context("smoke", seed=0, device="cpu")
    excluded = [int(i) for i in load_glue("sst2", "train")["idx"][:60000]]  # most of the pool: a subset would hit it
    distill("sst2", teacher, tokenizer, student_from_teacher(teacher, layers=[0]), ctx=ctx, alpha=0.5,
            max_train_samples=48, max_eval_samples=16, num_epochs=1, batch_size=16, max_length=32, progress=False,
            exclude_idx=excluded)
    assert len(seen[0]) == 48 and not set(seen[0]) & set(excluded)  # the training draw (the dev draw is seen[1])


def test_teacher_speedup_chooses_on_the_score_it_is_given():
    from lmcourse.compression import teacher_speedup

    rows = [{"model": "teacher", "accuracy": 0.90, "held-out accuracy": 0.90, "latency b1 (ms)": 10.0},
            {"model": "fast", "accuracy": 0.895, "held-out accuracy": 0.85, "latency b1 (ms)": 2.0},
            {"model": "slower", "accuracy": 0.85, "held-out accuracy": 0.895, "latency b1 (ms)": 5.0}]
    assert teacher_speedup(rows, "teacher")["model"] == "fast"  # on dev accuracy
    chosen = teacher_speedup(rows, "teacher", score="held-out accuracy")
    assert chosen["model"] == "slower" and chosen["speedup"] == pytest.approx(2.0)
    assert teacher_speedup(rows, "teacher", max_drop=0.001, score="held-out accuracy")["model"] is None
