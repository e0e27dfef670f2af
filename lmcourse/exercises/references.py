"""The reference answers of the exercises, in the signature each exercise asks for.

Most are the course's own functions, called as they are (``lmcourse.attention.scaled_dot_product_attention``...).
The ones here adapt a course object to a plain-function signature (LoRA's forward from its matrices, the
adapter's forward, EWC's penalty from dicts), or are the course's definition of something the chapters compute
inline (the causal shift of the labels, IG's Riemann sum on a plain function, 80/10/10 masking through the
course's collator). Each calls the lmcourse code it stands for; tests/test_exercises.py proves the rest equal to
the libraries (transformers' causal-LM loss, captum's integrated gradients, scipy's Benjamini–Hochberg).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ------------------------------------------------------------------------------------------ 05: MLM masking
@functools.lru_cache(maxsize=8)
def _word_level_tokenizer(vocab_size: int, mask_token_id: int):
    """A word-level tokenizer of exactly ``vocab_size`` tokens whose ``[MASK]`` has id ``mask_token_id``: what
    the course's :func:`lmcourse.pretraining.data.mlm_collator` needs to mask ids of any vocabulary."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    vocab["[MASK]"] = vocab.pop(f"w{mask_token_id}")
    unk = "w0" if mask_token_id != 0 else "w1"
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    return PreTrainedTokenizerFast(tokenizer_object=tok, mask_token="[MASK]", unk_token=unk, pad_token=unk)


def mlm_mask_tokens(input_ids: Tensor, special_tokens_mask: Tensor, mask_token_id: int, vocab_size: int,
                    mlm_probability: float = 0.15, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's masking, by the course's collator (:func:`lmcourse.pretraining.data.mlm_collator`, i.e.
    transformers' ``DataCollatorForLanguageModeling``): ``mlm_probability`` of the non-special tokens are
    selected; of those 80 % become ``[MASK]``, 10 % a random token, 10 % stay. Returns ``(inputs, labels)`` with
    ``labels = -100`` wherever the token was not selected."""
    from lmcourse.pretraining.data import mlm_collator

    collator = mlm_collator(_word_level_tokenizer(int(vocab_size), int(mask_token_id)), mlm_probability)
    collator.generator = generator
    return collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask.bool())


# ------------------------------------------------------------------------------------------ 06: causal shift
def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy: position ``t`` predicts token ``t + 1``, so the logits lose their last
    position and the labels their first; labels ``-100`` (padding) are ignored. ``StreamBatches`` builds the
    same pairs as ``x = data[i:i+T]``, ``y = data[i+1:i+T+1]``; this is transformers' ``labels=input_ids``."""
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    return F.cross_entropy(shifted_logits.reshape(-1, logits.size(-1)).float(), shifted_labels.reshape(-1),
                           ignore_index=-100)


# ------------------------------------------------------------------------------------------ 07: the schedule
def linear_warmup_lr(step: int, warmup_steps: int, total_steps: int, peak_lr: float) -> float:
    """The learning rate at ``step`` of the Trainer's ``lr_scheduler_type="linear"`` (the one the fine-tuning
    chapters use): transformers' ``get_linear_schedule_with_warmup``, read at ``step``."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak_lr)
    sched = get_linear_schedule_with_warmup(opt, warmup_steps, total_steps)
    return float(peak_lr * sched.lr_lambdas[0](step))


# ------------------------------------------------------------------------------------------ 08: PEFT
def lora_forward(x: Tensor, weight: Tensor, bias: Tensor | None, A: Tensor, B: Tensor, alpha: float) -> Tensor:
    """``W x + b + (alpha / r) B A x`` by the course's :class:`lmcourse.peft.LoRALinear` loaded with these matrices
    (``weight (out, in)``, ``A (r, in)``, ``B (out, r)``; ``r`` is ``A``'s number of rows)."""
    from lmcourse.peft import LoRALinear

    out_f, in_f = weight.shape
    base = nn.Linear(in_f, out_f, bias=bias is not None, dtype=weight.dtype)
    layer = LoRALinear(base, r=A.shape[0], alpha=alpha)
    with torch.no_grad():
        base.weight.copy_(weight)
        if bias is not None:
            base.bias.copy_(bias)
        layer.lora_A.weight.copy_(A)
        layer.lora_B.weight.copy_(B)
        return layer(x)


def adapter_forward(h: Tensor, down_weight: Tensor, down_bias: Tensor, up_weight: Tensor, up_bias: Tensor) -> Tensor:
    """``h + U relu(D h)`` by the course's :class:`lmcourse.peft.BottleneckAdapter` loaded with these weights
    (``down_weight (m, d)``, ``up_weight (d, m)``)."""
    from lmcourse.peft import BottleneckAdapter

    m, d = down_weight.shape
    adapter = BottleneckAdapter(d, m).to(h.dtype)
    with torch.no_grad():
        adapter.down.weight.copy_(down_weight)
        adapter.down.bias.copy_(down_bias)
        adapter.up.weight.copy_(up_weight)
        adapter.up.bias.copy_(up_bias)
        return adapter(h)


# ------------------------------------------------------------------------------------------ 09: the protocol
def paired_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The 95 % interval of ``mean(a) - mean(b)`` when ``a[i]`` and ``b[i]`` share seed ``i``: the protocol's
    paired t interval, :func:`lmcourse.spread.compare` with ``paired=True``."""
    from lmcourse.spread import compare

    return compare(list(a), list(b), paired=True).interval


def benjamini_hochberg(p_values: Sequence[float], fdr: float = 0.05) -> list[bool]:
    """Which hypotheses Benjamini–Hochberg rejects at false-discovery rate ``fdr``, in the input order: the
    correction :func:`lmcourse.spread.significant_gains` applies to a family (scipy's
    ``false_discovery_control``, adjusted p-values compared with ``fdr``)."""
    from scipy import stats

    if len(p_values) == 0:
        return []
    return [bool(q <= fdr) for q in stats.false_discovery_control(list(p_values), method="bh")]


# ------------------------------------------------------------------------------------------ 10: T5
def t5_shift_right(labels: Tensor, pad_token_id: int, decoder_start_token_id: int) -> Tensor:
    """The decoder input of teacher forcing, by the course's :meth:`lmcourse.models.t5.T5.shift_right`."""
    from types import SimpleNamespace

    from lmcourse.models.t5 import T5

    owner = SimpleNamespace(config=SimpleNamespace(pad_token_id=pad_token_id,
                                                   decoder_start_token_id=decoder_start_token_id))
    return T5.shift_right(owner, labels)  # the method reads nothing but these two config fields


# ------------------------------------------------------------------------------------------ 12: IG
def ig_riemann(f: Callable[[Tensor], Tensor], x: Tensor, baseline: Tensor, steps: int) -> Tensor:
    """Integrated gradients of a differentiable ``f`` (a batch of inputs -> one score each) at ``x`` from
    ``baseline``, by the midpoint Riemann sum: ``(x − x') · 1/m Σ_k ∇f(x' + α_k (x − x'))`` with
    ``α_k = (k + ½)/m``, the points and weights of the course's
    :func:`lmcourse.interpretability.integration_points` (``"riemann_middle"``)."""
    from lmcourse.interpretability import integration_points

    alphas, weights = integration_points(steps, "riemann_middle")
    a = torch.as_tensor(alphas, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    w = torch.as_tensor(weights, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    path = (baseline + a * (x - baseline)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(path).sum(), path)
    return ((x - baseline) * (w * grad).sum(0)).detach()


# ------------------------------------------------------------------------------------------ 13: continual
def acc_bwt(R: Any) -> tuple[float, float]:
    """``(average accuracy, backward transfer)`` of an accuracy matrix, by the course's
    :func:`lmcourse.continual.transfer_metrics`."""
    from lmcourse.continual import transfer_metrics

    m = transfer_metrics(R)
    return m["average_accuracy"], m["backward_transfer"]


def ewc_penalty(params: Mapping[str, Tensor], fisher: Mapping[str, Tensor], anchor: Mapping[str, Tensor],
                lam: float) -> Tensor:
    """EWC's ``λ/2 Σ F (θ − θ*)²`` over dicts of tensors, by the course's :func:`lmcourse.continual.ewc_penalty`
    on a module holding ``params``."""
    from lmcourse.continual import ewc_penalty as course_penalty

    holder = nn.Module()
    for name, value in params.items():
        holder.register_parameter(name, nn.Parameter(value.detach().clone()))
    return course_penalty(holder, dict(fisher), dict(anchor), lam).detach()


# ------------------------------------------------------------------------------------------ 14: liveness
def is_live(values: Sequence[float], chance: float) -> bool:
    """Did an arm learn? The protocol's liveness rule (:attr:`lmcourse.spread.Comparison.dead_arms`): its own
    95 % t interval over the seeds lies above the constant predictor's score; a single run has no interval."""
    from lmcourse.spread import spread

    s = spread(list(values))
    if s.n < 2:
        return False
    return bool(s.interval()[0] > chance)


def as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
