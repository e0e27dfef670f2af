"""Evaluating pretrained models: held-out MLM and CLM loss, a no-context baseline, and diagnostics.

The held-out sets are masked (MLM) or windowed (CLM) once, from the run's seed plus a fixed offset, so
every model a run evaluates with one evaluator is scored on exactly the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.context import RunContext
from lmcourse.pretraining.data import StreamBatches, collate_seeded
from lmcourse.pretraining.loop import TrainResult, clm_step_outputs

#: offsets added to the run's seed for the held-out masking / windows (distinct from the training streams)
MLM_EVAL_SEED_OFFSET = 12_345
CLM_EVAL_SEED_OFFSET = 4_242


def mlm_evaluator(features: Sequence[dict[str, Any]], collator, ctx: RunContext, batch_size: int = 32,
                  seed_offset: int = MLM_EVAL_SEED_OFFSET) -> Callable[[nn.Module], dict[str, float]]:
    """Held-out blocks with a *fixed* masking (drawn from ``ctx.seed + seed_offset``): MLM loss (per masked
    token) and accuracy of a model, computed on ``ctx.device``. Every model evaluated with one evaluator
    sees the same masks, so their numbers compare."""
    seed = ctx.seed + seed_offset
    batches = [collate_seeded(collator, features[i:i + batch_size], seed + i)
               for i in range(0, len(features), batch_size)]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        device = ctx.device
        model.to(device)
        tot_loss = tot_ok = tot_n = 0.0
        nsp_ok = nsp_n = 0.0
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            inputs = {k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            out = model(**inputs)
            logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
            sel = b["labels"] != -100
            lg = logits[sel].float()
            tot_loss += float(F.cross_entropy(lg, b["labels"][sel], reduction="sum"))
            tot_ok += float((lg.argmax(-1) == b["labels"][sel]).sum())
            tot_n += float(sel.sum())
            if "next_sentence_label" in b and hasattr(out, "seq_relationship_logits"):
                nsp_ok += float((out.seq_relationship_logits.argmax(-1) == b["next_sentence_label"]).sum())
                nsp_n += b["next_sentence_label"].numel()
        res = {"mlm_loss": tot_loss / tot_n, "mlm_acc": tot_ok / tot_n}
        if nsp_n:
            res["nsp_acc"] = nsp_ok / nsp_n
        return res

    return evaluate


class UnigramMLM(nn.Module):
    """A "model" that ignores the context: every position predicts the training-set token frequencies
    (add-one smoothed; special tokens excluded, they are never masked). The level an MLM reaches by
    learning frequencies alone; a model that uses the context must beat it."""

    def __init__(self, train_features: Sequence[dict[str, Any]], vocab_size: int, exclude_ids: Sequence[int] = ()):
        super().__init__()
        counts = 1.0 + token_counts(train_features, vocab_size).double()
        if len(exclude_ids):
            counts[torch.as_tensor(list(exclude_ids))] = 0.0
        self.log_probs = nn.Parameter((counts / counts.sum()).log().float(), requires_grad=False)

    def forward(self, input_ids: Tensor, **_: Any):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.log_probs.expand(*input_ids.shape, -1))


def unigram_cross_entropy(train_tokens: Tensor, eval_tokens: Tensor, vocab_size: int) -> float:
    """Loss (nats per token) of the context-free unigram model on ``eval_tokens``: every position predicts the
    add-one-smoothed token frequencies of ``train_tokens``. The causal-LM counterpart of :class:`UnigramMLM`:
    a language model that uses its context must score below it, not just below the uniform ``ln V``."""
    counts = 1.0 + torch.bincount(train_tokens.flatten().long().cpu(), minlength=vocab_size)[:vocab_size].double()
    log_probs = (counts / counts.sum()).log()
    return float(-log_probs[eval_tokens.flatten().long().cpu()].mean())


def token_counts(features: Sequence[dict[str, Any]], vocab_size: int) -> Tensor:
    """How often each token id occurs in ``features`` (their ``input_ids``)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for f in features:
        counts += torch.bincount(torch.as_tensor(f["input_ids"]), minlength=vocab_size)[:vocab_size]
    return counts


def mean_pairwise_cosine(vectors: Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows: about 0 for random vectors in many dimensions,
    near 1 when the rows have collapsed into one direction (a cone)."""
    if vectors.shape[0] < 2:
        raise ValueError(f"need at least 2 vectors, got {vectors.shape[0]}")
    v = F.normalize(vectors.double(), dim=1)
    n, total = v.shape[0], v.sum(0)
    return float((total @ total - n) / (n * (n - 1)))  # sum over all pairs minus the n self-pairs


def embedding_cone(embeddings: Tensor, counts: Tensor, band: int = 1000, exclude_ids: Sequence[int] = ()
                   ) -> dict[str, float]:
    """Mean pairwise cosine of the input embeddings of the ``band`` most frequent and the ``band`` rarest
    (seen at least once) tokens. With a tied MLM decoder, every softmax step pushes the vectors of tokens that
    are *not* the answer in one shared direction, and rare tokens are almost never the answer — so they drift
    into a narrow cone (Gao et al. 2019, "Representation Degeneration Problem", ICLR), losing what told them
    apart at random initialisation."""
    counts = counts.clone()
    if len(exclude_ids):
        counts[torch.as_tensor(list(exclude_ids))] = 0
    seen = torch.nonzero(counts > 0).squeeze(1)
    order = seen[torch.argsort(counts[seen], descending=True, stable=True)]
    band = min(band, len(order) // 2)
    if band < 2:
        raise ValueError(f"too few distinct tokens seen ({len(order)}) to form two bands")
    e = embeddings.detach()
    return {"frequent": mean_pairwise_cosine(e[order[:band]]), "rare": mean_pairwise_cosine(e[order[-band:]]),
            "band": band}


def clm_evaluator(data: Tensor, block_size: int, batch_size: int, iters: int, ctx: RunContext,
                  seed_offset: int = CLM_EVAL_SEED_OFFSET) -> Callable[[nn.Module], dict[str, float]]:
    """nanoGPT's ``estimate_loss``: mean loss over ``iters`` fixed random batches of ``data`` (windows drawn
    from ``ctx.seed + seed_offset``), computed on ``ctx.device``."""
    get = StreamBatches(data, block_size, batch_size, ctx.with_changes(seed=ctx.seed + seed_offset))
    batches = [get(i) for i in range(iters)]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        device = ctx.device
        model.to(device)
        losses = [float(clm_step_outputs(model, {k: v.to(device) for k, v in b.items()})[0]) for b in batches]
        loss = sum(losses) / len(losses)
        return {"loss": loss, "ppl": math.exp(loss)}

    return evaluate


def masking_stats(batch: dict[str, Tensor], original: Tensor, mask_token_id: int,
                  special_ids: Sequence[int] = ()) -> dict[str, float]:
    """Fractions of selected tokens (labels != -100) that became [MASK], a random token, or stayed."""
    sel = batch["labels"] != -100
    ids = batch["input_ids"]
    eligible = torch.ones_like(original, dtype=torch.bool)
    for s in special_ids:
        eligible &= original != s
    n = float(sel.sum())
    return {"selected": n / float(eligible.sum()),
            "mask": float((ids[sel] == mask_token_id).sum()) / n,
            "kept": float((ids[sel] == original[sel]).sum()) / n,
            "random": float(((ids[sel] != mask_token_id) & (ids[sel] != original[sel])).sum()) / n,
            "special_selected": float((sel & ~eligible).sum())}


def perf_row(name: str, result: TrainResult) -> dict[str, Any]:
    """One table row: tokens/s, achieved GFLOP/s and MFU of a run."""
    p = result.perf
    achieved = p["train_tokens_per_s"] * (p["flops_per_token"] or 0)
    return {"run": name, "bf16": p.get("bf16"), "tokens/s": p["train_tokens_per_s"], "GFLOP/s": achieved / 1e9,
            "peak GFLOP/s": (p["peak_flops"] or 0) / 1e9, "MFU": p["mfu"]}
