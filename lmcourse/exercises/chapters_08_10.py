"""The exercises of chapters 08-10: parameter-efficient fine-tuning, the benchmark report, T5.

See :mod:`lmcourse.exercises.catalog`."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lmcourse.exercises import references as ref
from lmcourse.exercises.core import Case, Exercise, Mistake, generator
from lmcourse.exercises.custom import open_exercise
from lmcourse.exercises.registry import _add, _randn
from lmcourse.pretraining.span_corruption import reassemble_spans, span_corruption


# =========================================================================================== 08 PEFT
def _lora_cases() -> list[Case]:
    g = generator(801)

    def mats(out_f, in_f, r):
        return _randn(g, out_f, in_f), _randn(g, out_f), _randn(g, r, in_f), _randn(g, out_f, r)

    W, b, A, B = mats(4, 7, 2)
    W1, b1, A1, B1 = mats(3, 5, 1)
    W2, _, A2, B2 = mats(6, 6, 3)
    W3, b3, A3, B3 = mats(5, 9, 4)
    return [Case("x (2, 5, 7), r=2, alpha=16", (_randn(g, 2, 5, 7), W, b, A, B, 16.0)),
            Case("batch of one token, r=1", (_randn(g, 1, 1, 5), W1, b1, A1, B1, 8.0)),
            Case("no bias, r=3, alpha=3", (_randn(g, 3, 6), W2, None, A2, B2, 3.0)),
            Case("alpha=1, r=4", (_randn(g, 2, 9), W3, b3, A3, B3, 1.0))]


def _lora(scale: Callable[[float, int], float], with_bias=True):
    def fn(x, weight, bias, A, B, alpha):
        y = x @ weight.T + (bias if bias is not None and with_bias else 0)
        return y + scale(alpha, A.shape[0]) * (x @ A.T @ B.T)
    return fn


_add(Exercise(
    id="08.lora_forward", chapter=8, title="LoRA's forward pass",
    statement=("Write `lora_forward(x, weight, bias, A, B, alpha)`: the frozen linear layer plus the low-rank "
               "update, W x + b + (alpha / r) B A x, with weight (out, in), bias (out,) or None, A (r, in), "
               "B (out, r), r = A.shape[0]; x has any leading dimensions."),
    reference=ref.lora_forward,
    hint="x @ W.T + b + (alpha / r) * (x @ A.T @ B.T)",
    cases=_lora_cases,
    mistakes=[Mistake("no alpha/r scaling", _lora(lambda a, r: 1.0),
                      "scale the low-rank update by alpha / r: it keeps the update's size when you change r"),
              Mistake("scaled by alpha instead of alpha/r", _lora(lambda a, r: a),
                      "the scale is alpha / r, not alpha"),
              Mistake("scaled by r/alpha", _lora(lambda a, r: r / a), "the scale is alpha / r, not r / alpha"),
              Mistake("the bias is dropped", _lora(lambda a, r: a / r, with_bias=False),
                      "keep the frozen layer's bias: LoRA adds to W x + b")],
    shows=[ref.lora_forward, __import__("lmcourse.peft", fromlist=["LoRALinear"]).LoRALinear.forward]))


def _adapter_cases() -> list[Case]:
    g = generator(802)

    def w(d, m):
        return _randn(g, m, d, scale=0.5), _randn(g, m, scale=0.1), _randn(g, d, m, scale=0.5), _randn(g, d, scale=0.1)

    return [Case("h (2, 5, 8), bottleneck 3", (_randn(g, 2, 5, 8), *w(8, 3))),
            Case("batch of one token, bottleneck 1", (_randn(g, 1, 1, 4), *w(4, 1))),
            Case("bottleneck wider than h", (_randn(g, 3, 2), *w(2, 5)))]


def _adapter_no_residual(h, dw, db, uw, ub):
    return torch.relu(h @ dw.T + db) @ uw.T + ub


def _adapter_act_after(h, dw, db, uw, ub):
    return h + torch.relu((h @ dw.T + db) @ uw.T + ub)


def _adapter_linear(h, dw, db, uw, ub):
    return h + (h @ dw.T + db) @ uw.T + ub


_add(Exercise(
    id="08.adapter_forward", chapter=8, title="A bottleneck adapter",
    statement=("Write `adapter_forward(h, down_weight, down_bias, up_weight, up_bias)`: h + U relu(D h + d) + u "
               "(Houlsby et al. 2019), with down_weight (m, d) and up_weight (d, m)."),
    reference=ref.adapter_forward,
    hint="h + relu(h @ D.T + d) @ U.T + u",
    cases=_adapter_cases,
    mistakes=[Mistake("the residual connection is missing", _adapter_no_residual,
                      "add h back (h + ...): with U = 0 at the start the adapter is then the identity"),
              Mistake("the non-linearity after the up-projection", _adapter_act_after,
                      "the ReLU sits in the bottleneck, after the down-projection, not after the up-projection"),
              Mistake("no non-linearity", _adapter_linear,
                      "without the ReLU the adapter is one linear map of rank m: apply relu after the "
                      "down-projection")],
    shows=[ref.adapter_forward]))

_add(open_exercise(
    id="08.open_lora_rank", chapter=8, title="Predict: LoRA's rank",
    statement=("Open exercise. Rerun the chapter's LoRA arm with r=1 instead of the chapter's rank (same alpha/r "
               "scaling, same seeds), predict whether dev accuracy changes, then compare with "
               "lmcourse.spread.compare(a=r=1 arm, b=the chapter's LoRA arm, paired=True, chance=the majority "
               "class). Record a dict: prediction ('a better', 'b better' or 'no difference'), why, comparison."),
    prediction_hint=("Hu et al. (2021, table 6) found ranks as small as 1 competitive for GPT-3 on WikiSQL and "
                     "MultiNLI")))


# =========================================================================================== 09 the report
def _interval_cases() -> list[Case]:
    rng = np.random.default_rng(901)
    cases = []
    for n, name in ((5, "5 seeds"), (2, "2 seeds (t with 1 degree of freedom)"), (10, "10 seeds"), (3, "3 seeds")):
        seed_effect = rng.normal(0.8, 0.03, size=n)
        a = (seed_effect + 0.01 + rng.normal(0, 0.005, size=n)).tolist()
        b = (seed_effect + rng.normal(0, 0.005, size=n)).tolist()
        cases.append(Case(name, (a, b)))
    return cases


def _interval_welch(a, b):
    from lmcourse.spread import compare

    return compare(list(a), list(b)).interval


def _interval_z(a, b):
    d = np.asarray(a) - np.asarray(b)
    half = 1.959964 * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def _interval_ddof0(a, b):
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=0) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


_add(Exercise(
    id="09.paired_interval", chapter=9, title="The paired t interval of a difference",
    statement=("Write `paired_interval(a, b)`: a[i] and b[i] are two arms' scores with seed i. Return the 95 % "
               "confidence interval (low, high) of mean(a) − mean(b) by the paired t interval: d = a − b, "
               "mean(d) ± t_{0.975, n−1} · s_d / √n, with s_d the sample standard deviation (ddof=1)."),
    reference=ref.paired_interval,
    hint=("d = a - b; half = scipy.stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / sqrt(n); "
          "(d.mean() - half, d.mean() + half)"),
    cases=_interval_cases, rtol=1e-6, atol=1e-9,
    mistakes=[Mistake("the unpaired (Welch) interval", _interval_welch,
                      "the arms share seeds: take the per-seed differences first (paired t); the Welch interval "
                      "counts the seed-to-seed spread the pairing removes"),
              Mistake("1.96 instead of the t quantile", _interval_z,
                      "with a handful of seeds use Student's t quantile with n − 1 degrees of freedom, not 1.96 "
                      "(12.7 for 2 seeds)"),
              Mistake("the population standard deviation", _interval_ddof0,
                      "use the sample standard deviation (ddof=1); numpy's std defaults to ddof=0")],
    shows=[ref.paired_interval]))


def _bh_cases() -> list[Case]:
    return [Case("four p-values", ([0.01, 0.04, 0.03, 0.2],)),
            Case("step-up rescues a p-value above its own threshold", ([0.02, 0.021, 0.03, 0.04],)),
            Case("unsorted input", ([0.5, 0.001, 0.3, 0.012, 0.04],)), Case("one p-value", ([0.03],)),
            Case("fdr=0.1", ([0.08, 0.01, 0.09, 0.5, 0.03],), {"fdr": 0.1})]


def _bh_bonferroni(p_values, fdr=0.05):
    return [bool(p * len(p_values) <= fdr) for p in p_values]


def _bh_uncorrected(p_values, fdr=0.05):
    return [bool(p <= fdr) for p in p_values]


def _bh_step_down(p_values, fdr=0.05):
    m = len(p_values)
    order = np.argsort(p_values)
    out = [False] * m
    for rank, i in enumerate(order, start=1):
        out[i] = bool(p_values[i] <= rank / m * fdr)
    return out


def _bh_sorted_order(p_values, fdr=0.05):
    return ref.benjamini_hochberg(sorted(p_values), fdr)


_add(Exercise(
    id="09.benjamini_hochberg", chapter=9, title="Benjamini–Hochberg over a family",
    statement=("Write `benjamini_hochberg(p_values, fdr=0.05)`: a list of booleans, in the input order, True for "
               "the hypotheses BH rejects: sort the m p-values, find the largest k with p_(k) <= k/m · fdr, and "
               "reject the k smallest."),
    reference=ref.benjamini_hochberg,
    hint="order = argsort(p); k = largest rank with p[order[k-1]] <= k/m * fdr; reject order[:k]",
    cases=_bh_cases,
    mistakes=[Mistake("Bonferroni instead of BH", _bh_bonferroni,
                      "Bonferroni (p · m <= fdr) controls the family-wise error and is stricter; BH compares "
                      "p_(k) with k/m · fdr"),
              Mistake("no correction", _bh_uncorrected,
                      "p <= fdr for each comparison ignores that the family holds several: apply BH"),
              Mistake("each p-value tested against its own threshold only", _bh_step_down,
                      "BH is a step-up procedure: find the LARGEST k with p_(k) <= k/m · fdr and reject all k "
                      "smallest, even those above their own threshold"),
              Mistake("the answer is in sorted order", _bh_sorted_order,
                      "return the decisions in the order of the input p-values, not sorted")],
    shows=[ref.benjamini_hochberg]))


# =========================================================================================== 10 T5
def _shift_cases() -> list[Case]:
    return [Case("padding labelled -100", (torch.tensor([[5, 6, 7, 1], [8, 1, -100, -100]]), 0, 0)),
            Case("start token 2, pad 0", (torch.tensor([[5, 6, 7], [9, 9, 1]]), 0, 2)),
            Case("batch of one, one token", (torch.tensor([[4]]), 0, 3)),
            Case("no padding", (torch.tensor([[11, 12, 13, 14, 1]]), 0, 0))]


def _shift_keeps_ignore(labels, pad_token_id, decoder_start_token_id):
    out = labels.new_full(labels.shape, pad_token_id)
    out[:, 1:] = labels[:, :-1]
    out[:, 0] = decoder_start_token_id
    return out


def _shift_left(labels, pad_token_id, decoder_start_token_id):
    out = labels.new_full(labels.shape, pad_token_id)
    out[:, :-1] = labels[:, 1:]
    return out.masked_fill(out == -100, pad_token_id)


def _shift_prepend(labels, pad_token_id, decoder_start_token_id):
    start = labels.new_full((labels.size(0), 1), decoder_start_token_id)
    return torch.cat([start, labels], 1).masked_fill(torch.cat([start, labels], 1) == -100, pad_token_id)


_add(Exercise(
    id="10.shift_right", chapter=10, title="T5's decoder input: shift the labels right",
    statement=("Write `shift_right(labels, pad_token_id, decoder_start_token_id)`: teacher forcing's decoder input "
               "of the labels (B, T): [start] + labels[:-1] in every row, of the labels' shape, with -100 "
               "(ignored label positions) replaced by the pad id."),
    reference=ref.t5_shift_right,
    hint="out = full_like(labels, pad); out[:, 1:] = labels[:, :-1]; out[:, 0] = start; out[out == -100] = pad",
    cases=_shift_cases,
    mistakes=[Mistake("-100 left in the decoder input", _shift_keeps_ignore,
                      "-100 is a label for the loss, not a token id: replace it by pad_token_id in the decoder input"),
              Mistake("shifted left", _shift_left,
                      "shift RIGHT: the decoder input starts with decoder_start_token_id and drops the last label"),
              Mistake("the start token prepended without dropping the last label", _shift_prepend,
                      "the decoder input has the labels' length: [start] + labels[:, :-1]")],
    shows=[ref.t5_shift_right]))


def _spans_cases() -> list[Case]:
    g = generator(1001)
    sentinels = list(range(1000, 1020))
    cases = []
    for n, name in ((40, "40 tokens"), (12, "12 tokens"), (101, "101 tokens, odd")):
        ids = torch.randint(3, 500, (n,), generator=g).tolist()
        inputs, targets = span_corruption(ids, sentinel_ids=sentinels, generator=g)
        cases.append(Case(name, (inputs, targets, sentinels)))
    return cases


def _spans_keep_sentinels(inputs, targets, sentinel_ids):
    spans = _collect(targets, sentinel_ids)
    out = []
    for t in inputs:
        out.extend([t, *spans.get(t, [])] if t in spans else [t])
    return out


def _collect(targets, sentinel_ids, drop_last=False):
    spans, current = {}, None
    ids = set(sentinel_ids)
    for t in targets:
        if t in ids:
            current = t
            spans[t] = []
        elif current is not None:
            spans[current].append(t)
    if drop_last and current is not None:
        spans[current] = []
    return spans


def _spans_drop_last(inputs, targets, sentinel_ids):
    spans = _collect(targets, sentinel_ids, drop_last=True)
    out = []
    for t in inputs:
        out.extend(spans.get(t, []) if t in spans else [t])
    return out


_add(Exercise(
    id="10.reassemble_spans", chapter=10, title="Undo span corruption",
    statement=("Write `reassemble_spans(inputs, targets, sentinel_ids)`: T5's span corruption replaced each noise "
               "span of a text by a sentinel in `inputs`; `targets` lists each sentinel followed by its span. Return "
               "the original token list."),
    reference=reassemble_spans,
    hint="walk targets: a sentinel opens a span, other tokens go into the current span; then walk inputs replacing "
         "each sentinel by its span",
    cases=_spans_cases,
    mistakes=[Mistake("the sentinels are kept", _spans_keep_sentinels,
                      "the sentinel stands FOR its span: replace it, do not keep it in front"),
              Mistake("the last span is lost", _spans_drop_last,
                      "the last sentinel's span runs to the end of targets: keep the tokens after it")],
    shows=[reassemble_spans]))
