"""Three pretraining objectives on one corpus, one tokenizer and one FLOPs budget (notebook 10).

* **CLM** — chapter 06's GPT predicts token ``t + 1`` from tokens ``<= t``;
* **MLM** — chapter 05's BERT predicts 15 % masked tokens from both sides;
* **span corruption** — the T5 of chapter 10 predicts dropped spans, one sentinel per gap.

"Same compute" means the same *training FLOPs* counted with the course's formulas
(:func:`lmcourse.measurement.model_flops_per_token` for the encoder and the decoder,
:func:`lmcourse.measurement.seq2seq_training_flops` for the encoder–decoder): each objective gets as many steps
as its budget pays for. Their held-out losses are different prediction problems and are not comparable with
each other; each is compared with a unigram model of *its own* targets. What the objectives can be compared on
is what they leave behind, read the same way for all three: the mean of the final hidden states of the input
(GPT: its causal states; BERT: its encoder; T5: its encoder), fine-tuned with the same recipe
(:class:`lmcourse.readout.PooledClassifier`, :func:`finetune_pooled`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmcourse.context import RunContext
from lmcourse.data import get_task
from lmcourse.errors import ArgumentError
from lmcourse.measurement import model_flops_per_token, seq2seq_training_flops
from lmcourse.pretraining.data import StreamBatches, collate_seeded
from lmcourse.pretraining.span_corruption import corrupted_lengths
from lmcourse.readout import PooledClassifier, hidden_size, mean_pool, sequence_hidden  # noqa: F401

OBJECTIVES = ("clm", "mlm", "span")


# ---------------------------------------------------------------------------------------------- FLOPs
def step_flops(objective: str, model: nn.Module, batch_size: int, seq_len: int, *, mask_fraction: float = 0.15,
               noise_density: float = 0.15, mean_span_length: float = 3.0) -> float:
    """Training FLOPs of one optimiser step of ``batch_size`` windows of ``seq_len`` corpus tokens.

    ``clm``/``mlm``: ``batch · seq_len · (6N + 12 L H Q T)``; for MLM the vocabulary head counts only at the
    masked share of positions (the gathered head of chapter 05). ``span``: the encoder–decoder formula at the
    corrupted input and target lengths of a ``seq_len`` window (EOS included), per example."""
    if objective not in OBJECTIVES:
        raise ArgumentError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if batch_size < 1 or seq_len < 1:
        raise ArgumentError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    if objective == "span":
        n_in, n_out = corrupted_lengths(seq_len, noise_density, mean_span_length)
        return batch_size * seq2seq_training_flops(model.config, n_in + 1, n_out + 1)
    fraction = mask_fraction if objective == "mlm" else 1.0
    return batch_size * seq_len * model_flops_per_token(model, seq_len, head_fraction=fraction)


def steps_for_budget(budget_flops: float, flops_per_step: float) -> int:
    """The number of steps (at least one) whose FLOPs come closest to ``budget_flops``."""
    if not (budget_flops > 0 and flops_per_step > 0):
        raise ArgumentError(f"the FLOPs budget and the FLOPs per step must be positive, got {budget_flops} "
                            f"and {flops_per_step}")
    return max(1, round(budget_flops / flops_per_step))


# ------------------------------------------------------------------------------------------ MLM data
def masking_tokenizer(tokenizer, mask_token: str):
    """A copy of ``tokenizer`` whose mask token is ``mask_token`` (an existing token, e.g. T5's first
    sentinel): the MLM collator can then mask with the very vocabulary the other objectives use."""
    if tokenizer.convert_tokens_to_ids(mask_token) in (None, tokenizer.unk_token_id):
        raise ArgumentError(f"{mask_token!r} is not in the tokenizer's vocabulary; pass one of its special tokens")
    tok = copy.deepcopy(tokenizer)
    tok.mask_token = mask_token
    return tok


class MaskedStreamBatches:
    """Step -> random windows of a token stream (as :class:`~lmcourse.pretraining.StreamBatches`), masked by
    ``collator`` (HF's MLM collator: 15 %, 80/10/10) with the masking seeded by the step."""

    def __init__(self, data: Tensor, block_size: int, batch_size: int, collator, ctx: RunContext,
                 seed_offset: int = 0) -> None:
        self.windows = StreamBatches(data, block_size, batch_size, ctx.with_changes(seed=ctx.seed + seed_offset))
        self.collator, self.seed = collator, (ctx.seed + seed_offset) * 1_000_003

    def __call__(self, step: int) -> dict[str, Tensor]:
        x = self.windows(step)["input_ids"]
        batch = collate_seeded(self.collator, [{"input_ids": row.tolist()} for row in x], self.seed + step)
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        return batch


def heldout_loss_evaluator(batches: Callable[[int], dict[str, Tensor]], step_outputs, iters: int,
                           ctx: RunContext) -> Callable[[nn.Module], dict[str, float]]:
    """Mean loss per predicted token over the fixed batches ``batches(0 .. iters-1)`` on ``ctx.device``,
    each batch weighted by its number of targets (MLM's masked count varies from batch to batch)."""
    fixed = [batches(i) for i in range(iters)]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.to(ctx.device).eval()  # no dropout in a held-out loss; the mode is given back below
        total, count = 0.0, 0
        for b in fixed:
            b = {k: v.to(ctx.device) for k, v in b.items()}
            n = int((b["labels"] != -100).sum()) if "labels" in b else int(b["targets"].numel())
            total += float(step_outputs(model, b)[0]) * n
            count += n
        model.train(was_training)
        return {"loss": total / count}

    return evaluate


def prediction_targets(batches: Callable[[int], dict[str, Tensor]], steps: Sequence[int]) -> Tensor:
    """Every token the objective predicts in ``batches(step)`` for ``step`` in ``steps`` (for a unigram
    model of that objective's own targets)."""
    out = []
    for s in steps:
        b = batches(s)
        t = b["labels"] if "labels" in b else b["targets"]
        out.append(t[t != -100].view(-1))
    return torch.cat(out)


# ------------------------------------------------------------------------------------ the readout
# sequence_hidden, hidden_size and PooledClassifier are lmcourse.readout's (one readout for the course); the
# names stay importable from here (notebook 10 reads OB.PooledClassifier). mean_over_tokens is readout.mean_pool.
mean_over_tokens = mean_pool


def token_rows(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (special tokens as the tokenizer adds them), cut to ``max_length``: lists of ints
    (``lmcourse.compression.encode_texts`` is the padded-tensor encoder of notebook 11)."""
    return [ids[:max_length] for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def _padded(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def predict(model: PooledClassifier, rows: Sequence[Sequence[int]], pad_id: int, ctx: RunContext,
            batch_size: int = 128) -> np.ndarray:
    """Predicted labels of tokenised ``rows`` (batched by length, returned in the input order)."""
    model.eval()
    order = np.argsort([-len(r) for r in rows], kind="stable")
    preds = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = _padded([rows[i] for i in idx], pad_id, ctx.device)
        with ctx.autocast():
            preds[idx] = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu().numpy()
    model.train()
    return preds


def finetune_pooled(body: nn.Module, tokenizer, task: str, train_texts: Sequence[str], train_labels: Sequence[int],
                    dev_texts: Sequence[str], dev_labels: Sequence[int], ctx: RunContext, *, steps: int, lr: float,
                    batch_size: int = 32, max_length: int = 128, selection_fraction: float = 0.1,
                    evals: int = 4, weight_decay: float = 0.01, warmup_ratio: float = 0.1) -> dict[str, Any]:
    """Fine-tune a copy of ``body`` with a :class:`PooledClassifier` (AdamW, linear warmup and decay).

    A seeded ``selection_fraction`` of the *training* examples is held out; the checkpoint with the best GLUE
    score on it among ``evals`` evenly spaced evaluations is the one scored on the dev texts, which never
    choose anything. Forward passes run under the context's bf16 autocast policy (``ctx.autocast()``).
    Returns ``{"score", "selection_score", "best_step", "dev_predictions"}``; the scores are GLUE's task score
    (MRPC: the mean of accuracy and F1, as :func:`lmcourse.metrics.task_score` and notebook 10's baselines)."""
    from lmcourse.finetuning.trainer import task_metrics
    from lmcourse.metrics import task_score

    spec = get_task(task)
    if spec.is_regression:
        raise ArgumentError(f"finetune_pooled is for classification tasks; {task!r} is a regression task")
    if len(train_texts) != len(train_labels) or len(dev_texts) != len(dev_labels):
        raise ArgumentError("texts and labels must have the same length")
    if steps < 1 or evals < 1 or not 0.0 < selection_fraction < 0.5:
        raise ArgumentError(f"need steps >= 1, evals >= 1 and 0 < selection_fraction < 0.5, got {steps}, {evals}, "
                            f"{selection_fraction}")
    rng = np.random.default_rng(ctx.seed)
    perm = rng.permutation(len(train_texts))
    n_sel = max(8, round(selection_fraction * len(train_texts)))
    if len(train_texts) - n_sel < batch_size:
        raise ArgumentError(f"only {len(train_texts)} training examples for batch size {batch_size} and "
                            f"{n_sel} held out; use more examples or a smaller batch")
    sel_idx, fit_idx = perm[:n_sel], perm[n_sel:]
    all_rows = token_rows(tokenizer, train_texts, max_length)
    labels = np.asarray(train_labels, dtype=np.int64)
    fit_rows, fit_y = [all_rows[i] for i in fit_idx], labels[fit_idx]
    sel_rows, sel_y = [all_rows[i] for i in sel_idx], labels[sel_idx]
    dev_rows = token_rows(tokenizer, dev_texts, max_length)
    pad = int(tokenizer.pad_token_id or 0)

    with ctx.seeded(7):
        model = PooledClassifier(copy.deepcopy(body), spec.num_labels).to(ctx.device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, round(warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    eval_at = {round(steps * (k + 1) / evals) for k in range(evals)}
    g = torch.Generator().manual_seed(ctx.seed * 1_000_003 + 11)
    best = (-math.inf, 0, None)
    with ctx.seeded(13):  # dropout
        for step in range(1, steps + 1):
            idx = torch.randint(len(fit_rows), (batch_size,), generator=g).tolist()
            ids, mask = _padded([fit_rows[i] for i in idx], pad, ctx.device)
            with ctx.autocast():  # bf16 where the run context enables it (the course's training loops do too)
                loss = model(input_ids=ids, attention_mask=mask,
                             labels=torch.as_tensor(fit_y[idx], device=ctx.device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if step in eval_at:
                score = task_score(spec.name, task_metrics(spec.name, predict(model, sel_rows, pad, ctx), sel_y))
                if score > best[0]:
                    best = (float(score), step, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    dev_preds = predict(model, dev_rows, pad, ctx)
    dev_score = task_score(spec.name, task_metrics(spec.name, dev_preds, np.asarray(dev_labels)))
    return {"score": float(dev_score), "selection_score": best[0], "best_step": best[1], "dev_predictions": dev_preds}
