"""lmcourse.peft against the peft library: LoRA outputs equal for equal weights, merge invariance,
trainable-parameter counts equal the formulas (LoRA, adapters, BitFit, prompt and prefix tuning)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lmcourse.errors import UnknownNameError
from lmcourse.peft import (
    METHODS,
    LoRALinear,
    apply_method,
    copy_lora_from_peft,
    expected_trainable,
    head_params,
    inject_lora,
    lora_layers,
    merge_lora,
    peft_lora,
    unmerge_lora,
)

CFG = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                 max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(CFG).eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_lora_linear_math():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, r=2, alpha=4)
    x = torch.randn(4, 6)
    torch.testing.assert_close(lora(x), base(x), rtol=0, atol=0)  # B = 0 at init
    torch.nn.init.normal_(lora.lora_B.weight)
    expected = x @ base.weight.T + base.bias + 2.0 * (x @ lora.lora_A.weight.T @ lora.lora_B.weight.T)
    torch.testing.assert_close(lora(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("targets", [("query", "value"), ("query", "key", "value", "dense")])
def test_lora_equals_peft(targets):
    base = _model()
    theirs = peft_lora(copy.deepcopy(base), target_modules=targets, r=4, alpha=8).eval()
    for n, p in theirs.named_parameters():  # make B and peft's trainable head copy differ from the base model
        if "lora_B" in n or "modules_to_save" in n:
            torch.nn.init.normal_(p, std=0.1)
    ours = inject_lora(copy.deepcopy(base), target_modules=targets, r=4, alpha=8).eval()
    assert copy_lora_from_peft(ours, theirs) == 2 * len(lora_layers(ours)) + 2  # + head weight and bias
    head_theirs = theirs.base_model.model.classifier.modules_to_save["default"]
    torch.testing.assert_close(ours.classifier.weight, head_theirs.weight, rtol=0, atol=0)
    b = _batch()
    with torch.no_grad():
        out_theirs = theirs(**b).logits
        out_ours = ours(**b).logits
        out_base = base(**b).logits
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out_ours, out_base, atol=1e-4)
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(ours) == trainable(theirs)


def test_merge_invariance_and_unmerge():
    ours = inject_lora(_model(), r=4, alpha=8)
    for m in lora_layers(ours):
        torch.nn.init.normal_(m.lora_B.weight, std=0.1)
    w0 = {n: m.base.weight.detach().clone() for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    b = _batch()
    with torch.no_grad():
        before = ours(**b).logits
        merge_lora(ours)
        merged = ours(**b).logits
    torch.testing.assert_close(merged, before, rtol=1e-5, atol=1e-6)
    assert all(m.merged for m in lora_layers(ours))
    unmerge_lora(ours)
    for n, m in ours.named_modules():
        if isinstance(m, LoRALinear):
            torch.testing.assert_close(m.base.weight, w0[n], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "full"])
def test_trainable_counts_match_formulas(method):
    model = _model()
    head = head_params(model)
    model = apply_method(model, method, r=4, bottleneck=8, num_virtual_tokens=5)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected_trainable(method, CFG, head, r=4, bottleneck=8, num_virtual_tokens=5)
    out = model(**_batch(), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert grads and all(p.requires_grad for n, p in model.named_parameters() if p.grad is not None)


def test_bitfit_counts_biases_only():
    model = apply_method(_model(), "bitfit")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in names)
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) == (
        sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias")) + CFG.hidden_size * 3)


def test_unknown_method():
    with pytest.raises(UnknownNameError, match="known"):
        apply_method(_model(), "dora")
