"""The exercises of chapters 05-07: MLM and CLM pretraining, fine-tuning on GLUE.

See :mod:`lmcourse.exercises.catalog`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lmcourse import generation, metrics
from lmcourse.exercises import references as ref
from lmcourse.exercises.core import Case, Exercise, Mistake, generator
from lmcourse.exercises.custom import mlm_masking_checker, open_exercise
from lmcourse.exercises.registry import _add, _randn
from lmcourse.pretraining import data as pretraining_data


# =========================================================================================== 05 MLM
def _mlm_all_mask(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15, generator=None):
    labels = input_ids.clone()
    sel = torch.bernoulli(torch.full(input_ids.shape, mlm_probability), generator=generator).bool()
    sel &= ~special_tokens_mask.bool()
    labels[~sel] = -100
    out = input_ids.clone()
    out[sel] = mask_token_id
    return out, labels


def _mlm_labels_everywhere(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                           generator=None):
    out, _ = ref.mlm_mask_tokens(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability, generator)
    return out, input_ids.clone()


def _mlm_specials(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15, generator=None):
    return ref.mlm_mask_tokens(input_ids, torch.zeros_like(special_tokens_mask), mask_token_id, vocab_size,
                               mlm_probability, generator)


def _mlm_random_everywhere(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                           generator=None):
    out, labels = _mlm_all_mask(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability, generator)
    sel = labels != -100
    mask_ok = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    rand = torch.bernoulli(torch.full(input_ids.shape, 0.1), generator=generator).bool()
    out = torch.where(sel & ~mask_ok, input_ids, out)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    out = torch.where(rand & ~special_tokens_mask.bool() & ~(sel & mask_ok), random_ids, out)
    return out, labels


def _mlm_unscaled_random(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                         generator=None):
    out, labels = _mlm_all_mask(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability, generator)
    sel = labels != -100
    replaced = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & sel
    rand = torch.bernoulli(torch.full(input_ids.shape, 0.1), generator=generator).bool() & sel & ~replaced
    out = torch.where(sel & ~replaced, input_ids, out)
    return torch.where(rand, torch.randint(vocab_size, input_ids.shape, generator=generator), out), labels


MLM_MISTAKES = [
    Mistake("every selected token becomes [MASK]", _mlm_all_mask,
            "of the selected tokens only 80 % become [MASK]; 10 % get a random token and 10 % stay as they are "
            "(so the model cannot learn that only [MASK] positions matter)"),
    Mistake("labels kept at every position", _mlm_labels_everywhere,
            "labels must be -100 wherever the token was NOT selected: the loss is only on the selected 15 %"),
    Mistake("special tokens can be selected", _mlm_specials,
            "never select special tokens ([CLS], [SEP], [PAD]): zero their selection probability with "
            "special_tokens_mask"),
    Mistake("the 10 % random is drawn from what [MASK] left, unscaled", _mlm_unscaled_random,
            "after 80 % became [MASK], HALF of the remaining 20 % get a random token: draw with probability "
            "0.1 / 0.2 = 0.5 among the rest, not 0.1 (that gives 2 % random and 18 % kept)"),
    Mistake("random tokens drawn outside the selection", _mlm_random_everywhere,
            "only the selected tokens change: the 10 % random replacements are drawn among the selected ones"),
]
_add(Exercise(
    id="05.mlm_masking", chapter=5, title="BERT's 80/10/10 masking",
    statement=("Write `mask_tokens(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15, "
               "generator=None)`: select each non-special token with probability mlm_probability; of the selected, "
               "80 % become mask_token_id, 10 % a random id in [0, vocab_size), 10 % stay. Return (inputs, labels): "
               "labels are the original ids at selected positions and -100 elsewhere. Draw randomness with "
               "`generator` (torch.bernoulli(..., generator=generator), torch.randint(..., generator=generator))."),
    reference=ref.mlm_mask_tokens,
    hint=("sel = bernoulli(p) & ~special; labels[~sel] = -100; replaced = bernoulli(0.8) & sel → [MASK]; "
          "random = bernoulli(0.5) & sel & ~replaced → randint(vocab_size); the rest of sel stays"),
    custom=lambda fn: mlm_masking_checker(fn, MLM_MISTAKES), mistakes=MLM_MISTAKES,
    shows=[ref.mlm_mask_tokens, pretraining_data.mlm_collator]))


def _pack_cases() -> list[Case]:
    rng = np.random.default_rng(501)
    seqs = [rng.integers(1, 50, size=n).tolist() for n in (5, 3, 8, 1)]
    return [Case("4 sequences, blocks of 4, separator 99", (seqs, 4), {"separator": 99}),
            Case("no separator, blocks of 3", (seqs, 3)), Case("blocks of 1", ([[1, 2], [3]], 1)),
            Case("less text than one block", ([[1, 2], [3]], 8), {"separator": 0}),
            Case("one sequence", ([list(range(10))], 4))]


def _pack_keep_tail(sequences, block_size, separator=None):
    return pretraining_data.pack_blocks(sequences, block_size, separator, drop_last=False)


def _pack_no_sep(sequences, block_size, separator=None):
    return pretraining_data.pack_blocks(sequences, block_size, None)


def _pack_per_sequence(sequences, block_size, separator=None):
    out = []
    for s in sequences:
        out += pretraining_data.pack_blocks([s], block_size, separator)
    return out


_add(Exercise(
    id="05.pack_blocks", chapter=5, title="Pack token sequences into blocks",
    statement=("Write `pack_blocks(sequences, block_size, separator=None)`: concatenate the sequences (with "
               "`separator` after each one, if given) into one stream and cut it into blocks of exactly "
               "block_size tokens, dropping the incomplete tail. Return a list of lists of ints."),
    reference=pretraining_data.pack_blocks,
    hint="stream = all tokens (+ separator after each sequence); [stream[i*n:(i+1)*n] for i in range(len(stream)//n)]",
    cases=_pack_cases,
    mistakes=[Mistake("the incomplete tail is kept", _pack_keep_tail,
                      "drop the incomplete last block: every block has exactly block_size tokens"),
              Mistake("the separator is left out", _pack_no_sep,
                      "put `separator` after EVERY sequence (when one is given), so the model sees the boundaries"),
              Mistake("each sequence packed on its own", _pack_per_sequence,
                      "pack ACROSS sequences: one stream, then blocks, so no text is wasted in a short tail")],
    shows=[pretraining_data.pack_blocks]))

_add(open_exercise(
    id="05.open_mask_rate", chapter=5, title="Predict: a higher masking rate",
    statement=("Open exercise. Change mlm_probability from 0.15 to 0.40 in the chapter's pretraining cell, predict "
               "the effect on the held-out MLM accuracy (scored on the same 15 % masking), then run both arms "
               "over the same seeds and compare them with lmcourse.spread.compare(a=0.40 arm, b=0.15 arm, "
               "paired=True, chance=the unigram accuracy). Record your answer as a dict: prediction ('a better', "
               "'b better' or 'no difference'), why (a sentence), comparison (the Comparison, or None until run)."),
    prediction_hint=("Wettig et al. (2023) found 40 % masking as good as or better than 15 % for large BERTs; a tiny "
                     "model trained for few steps sees fewer intact contexts per step")))


# =========================================================================================== 06 CLM
def _clm_cases() -> list[Case]:
    g = generator(601)
    padded = torch.randint(0, 11, (2, 6), generator=g)
    padded[1, 4:] = -100
    return [Case("B=2, T=6, V=11", (_randn(g, 2, 6, 11), torch.randint(0, 11, (2, 6), generator=g))),
            Case("padding labelled -100", (_randn(g, 2, 6, 11), padded)),
            Case("batch of one, T=2 (one prediction)", (_randn(g, 1, 2, 5), torch.tensor([[3, 1]]))),
            Case("T=9, V=3", (_randn(g, 3, 9, 3), torch.randint(0, 3, (3, 9), generator=g)))]


def _clm_unshifted(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


def _clm_wrong_way(logits, labels):
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.size(-1)), labels[:, :-1].reshape(-1), ignore_index=-100)


def _clm_mean_over_all(logits, labels):
    y = labels[:, 1:]
    per = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100,
                          reduction="none")
    return per.sum() / y.numel()


def _clm_sum(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100,
                           reduction="sum")


_add(Exercise(
    id="06.causal_lm_loss", chapter=6, title="The causal shift of the labels",
    statement=("Write `causal_lm_loss(logits, labels)`: logits (B, T, V) from a causal LM, labels (B, T) the input "
               "ids themselves, -100 at padding (transformers' `labels=input_ids`). Return the mean cross-entropy of "
               "predicting token t+1 from position t, over the positions whose label is not -100."),
    reference=ref.causal_lm_loss,
    hint="F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)",
    cases=_clm_cases,
    mistakes=[Mistake("labels not shifted", _clm_unshifted,
                      "labels not shifted: position t must predict token t+1, so drop the last logit and the first "
                      "label (logits[:, :-1], labels[:, 1:]); unshifted, the model learns to copy its input"),
              Mistake("shifted the wrong way", _clm_wrong_way,
                      "shifted the wrong way: the logits lose their LAST position, the labels their FIRST"),
              Mistake("the mean counts the padding", _clm_mean_over_all,
                      "average over the predicted tokens only (the ones whose label is not -100), not over every "
                      "position"),
              Mistake("the sum instead of the mean", _clm_sum,
                      "return the mean over tokens (F.cross_entropy's default reduction), not the sum")],
    shows=[ref.causal_lm_loss, pretraining_data.StreamBatches]))


def _top_p_cases() -> list[Case]:
    g = generator(602)
    return [Case("B=3, V=10, p=0.9", (_randn(g, 3, 10, scale=2.0), 0.9)),
            Case("p=0.5", (_randn(g, 2, 7, scale=2.0), 0.5)),
            Case("batch of one, peaked", (torch.tensor([[5.0, 1.0, 0.5, 0.0, -1.0]]), 0.6)),
            Case("p=1 keeps everything", (_randn(g, 2, 6), 1.0)),
            Case("p=0 keeps the top token", (_randn(g, 2, 6), 0.0))]


def _top_p_strict(logits, p):
    probs, order = torch.sort(logits.softmax(-1), descending=True, dim=-1)
    keep_sorted = probs.cumsum(-1) <= p
    keep_sorted[..., 0] = True
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def _top_p_unsorted(logits, p):
    probs, _order = torch.sort(logits.softmax(-1), descending=True, dim=-1)  # never scattered back: the mistake
    cum = probs.cumsum(-1)
    keep = (cum - probs) < p
    keep[..., 0] = True
    return logits.masked_fill(~keep, float("-inf"))


def _top_p_zero(logits, p):
    return torch.where(torch.isinf(generation.top_p_filter(logits, p)), torch.zeros_like(logits), logits)


_add(Exercise(
    id="06.top_p_filter", chapter=6, title="Nucleus (top-p) filtering",
    statement=("Write `top_p_filter(logits, p)`: for each row keep the smallest set of most likely tokens whose "
               "probability mass reaches p (always at least the top token); set the other logits to -inf. Return "
               "logits of the input's shape, in the original vocabulary order."),
    reference=generation.top_p_filter,
    hint=("sort the probabilities descending; keep a token while the mass BEFORE it is < p (so the token that "
          "crosses p is kept); scatter the keep-mask back to vocabulary order"),
    cases=_top_p_cases,
    mistakes=[Mistake("the token that crosses p is dropped", _top_p_strict,
                      "keep the token that makes the mass reach p: keep while the mass before it is < p"),
              Mistake("the mask is not put back in vocabulary order", _top_p_unsorted,
                      "the keep-mask is in sorted order: scatter it back (mask.scatter(-1, order, mask)) before "
                      "applying it to the logits"),
              Mistake("filtered logits set to 0", _top_p_zero,
                      "set filtered logits to -inf (probability 0), not to 0 (which keeps them samplable)")],
    shows=[generation.top_p_filter]))


# =========================================================================================== 07 fine-tuning
def _lr_cases() -> list[Case]:
    cfg = (10, 100, 1e-3)
    return ([Case(f"step {s} of 100, warmup 10", (s, *cfg)) for s in (0, 1, 5, 9, 10, 11, 55, 99, 100, 120)]
            + [Case("no warmup, step 0", (0, 0, 50, 2e-5)), Case("no warmup, step 25", (25, 0, 50, 2e-5)),
               Case("warmup 1 of 3 steps", (1, 1, 3, 0.1))])


def _lr_no_warmup(step, warmup_steps, total_steps, peak_lr):
    return float(peak_lr * max(0.0, (total_steps - step) / max(1, total_steps)))


def _lr_decay_from_zero(step, warmup_steps, total_steps, peak_lr):
    if step < warmup_steps:
        return float(peak_lr * step / max(1, warmup_steps))
    return float(peak_lr * max(0.0, 1 - step / max(1, total_steps)))


def _lr_off_by_one(step, warmup_steps, total_steps, peak_lr):
    if step < warmup_steps:
        return float(peak_lr * (step + 1) / max(1, warmup_steps))
    return float(peak_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps)))


_add(Exercise(
    id="07.linear_warmup", chapter=7, title="The linear warmup-and-decay schedule",
    statement=("Write `lr_at(step, warmup_steps, total_steps, peak_lr)`: the Trainer's linear schedule. The rate "
               "rises linearly from 0 at step 0 to peak_lr at step warmup_steps, then falls linearly to 0 at "
               "total_steps (and stays 0 after)."),
    reference=ref.linear_warmup_lr,
    hint="step < warmup: peak * step / warmup; else peak * max(0, (total - step) / (total - warmup))",
    cases=_lr_cases, rtol=1e-6, atol=1e-12,
    mistakes=[Mistake("no warmup", _lr_no_warmup,
                      "the rate starts at 0 and rises for warmup_steps steps before it decays"),
              Mistake("the decay ignores the warmup", _lr_decay_from_zero,
                      "after warmup the rate falls from peak_lr at step warmup_steps: (total - step) / "
                      "(total - warmup), not 1 - step / total"),
              Mistake("warmup off by one", _lr_off_by_one,
                      "at step 0 the rate is 0: peak * step / warmup, not (step + 1) / warmup")],
    shows=[ref.linear_warmup_lr]))


def _glue_cases() -> list[Case]:
    return [Case("CoLA, SST-2, MRPC", ({"cola": {"matthews_correlation": 0.31}, "sst2": {"accuracy": 0.88},
                                        "mrpc": {"accuracy": 0.80, "f1": 0.86}},)),
            Case("MNLI in two parts", ({"mnli_matched": {"accuracy": 0.70}, "mnli_mismatched": {"accuracy": 0.72},
                                        "rte": {"accuracy": 0.60}},)),
            Case("STS-B and QQP", ({"stsb": {"pearson": 0.85, "spearmanr": 0.84}, "qqp": {"accuracy": 0.87, "f1": 0.83},
                                    "qnli": {"accuracy": 0.86}},)),
            Case("one task", ({"sst2": {"accuracy": 0.9}},)),
            Case("the diagnostic set ax is not scored", ({"ax": {"matthews_correlation": 0.1},
                                                          "wnli": {"accuracy": 0.56}, "sst2": {"accuracy": 0.9}},))]


def _glue_mnli_twice(per_task):
    return float(np.mean([metrics.task_score(t, r) for t, r in per_task.items() if t != "ax"]))


def _glue_first_metric(per_task):
    return float(np.mean([next(iter(r.values())) for t, r in per_task.items() if t != "ax"]))


def _glue_flat(per_task):
    return float(np.mean([v for t, r in per_task.items() if t != "ax" for v in r.values()]))


_add(Exercise(
    id="07.glue_score", chapter=7, title="GLUE's one number",
    statement=("Write `glue_score(per_task)`: per_task maps a task to its metrics dict. Each task's score is its "
               "metric, or the mean of its two (accuracy/F1 for MRPC and QQP, Pearson/Spearman for STS-B); MNLI "
               "counts ONCE, as the mean of mnli_matched and mnli_mismatched; the diagnostic set 'ax' is not "
               "scored; the GLUE score is the unweighted mean over tasks."),
    reference=metrics.glue_score,
    hint="score each task (two-metric tasks averaged), merge mnli_matched/mismatched into one 'mnli', then the mean",
    cases=_glue_cases, rtol=1e-9,
    mistakes=[Mistake("MNLI counted as two tasks", _glue_mnli_twice,
                      "MNLI is one task: average mnli_matched and mnli_mismatched first, then average the tasks"),
              Mistake("two-metric tasks scored by one metric", _glue_first_metric,
                      "MRPC/QQP (accuracy, F1) and STS-B (Pearson, Spearman) score the mean of their two metrics"),
              Mistake("every metric averaged flat", _glue_flat,
                      "average per task first, then over tasks: a flat mean over all metrics weighs two-metric "
                      "tasks twice")],
    shows=[metrics.glue_score, metrics.task_score]))
