"""T5's span corruption: drop random spans of the text, replace each by a sentinel, predict the spans.

Raffel et al. 2020 (T5), section 3.3.4 and the code of ``t5.data.preprocessors.span_corruption``
(``random_spans_noise_mask`` and ``noise_span_to_unique_sentinel``)::

    original  Thank you for inviting me to your party last week .
    inputs    Thank you <X> me to your party <Y> week .
    targets   <X> for inviting <Y> last

(the paper's Figure 2; T5's code, with its default ``random_roll=False``, always ends the text with a
noise span, and so does this one)

For ``n`` tokens: ``round(n * noise_density)`` of them are noise (at least 1, at most ``n - 1``), split into
``round(noise / mean_span_length)`` spans (at least 1). The noise tokens and the others are each cut into
that many non-empty segments uniformly at random (a very short text gets fewer spans, so that each
fits) and interleaved, the text always starting with kept tokens (and so ending with a noise span).
The inputs keep the kept tokens with one sentinel per noise span; the targets are the sentinels followed
by their spans. The sentinels are T5's ``<extra_id_0>``, ``<extra_id_1>``, ... in order. Both sequences
are much shorter than the text: the decoder only produces the 15 % that was dropped (plus the
sentinels), which is where T5 found span corruption cheaper than reconstructing the whole input.

The counts are fixed by the length; what is random is the segmentation. :func:`segment_length_pmf` is the
exact distribution of one segment's length under a uniform segmentation, and :func:`segmentation_chisquare`
tests drawn masks against it (a chi-square test per segment index, so a sampler that gets the pooled
lengths right but puts the long spans first fails it too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lmcourse.errors import ArgumentError


def _check(noise_density: float, mean_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ArgumentError(f"noise_density must lie in (0, 1), got {noise_density}")
    if not mean_span_length >= 1.0:
        raise ArgumentError(f"mean_span_length must be >= 1, got {mean_span_length}")


def span_counts(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> tuple[int, int]:
    """``(noise tokens, noise spans)`` for a text of ``length`` tokens (T5's rounding and bounds)."""
    _check(noise_density, mean_span_length)
    if length < 2:
        raise ArgumentError(f"span corruption needs at least 2 tokens, got {length}")
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    # a text too short for that many spans (T5 never meets one): each span needs a kept token before it
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def corrupted_lengths(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0
                      ) -> tuple[int, int]:
    """``(len(inputs), len(targets))`` that :func:`span_corruption` gives for ``length`` tokens (no EOS):
    the same for every draw, so a batch of equal-length texts needs no padding."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    return length - num_noise + num_spans, num_noise + num_spans


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> Tensor:
    """Lengths of ``num_segments`` non-empty segments of ``num_items`` items, uniform over all such cuts."""
    cuts = torch.randperm(num_items - 1, generator=generator)[:num_segments - 1].sort().values + 1
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([num_items])])
    return bounds.diff()


def segment_length_pmf(num_items: int, num_segments: int) -> list[float]:
    """Exact ``P(length = l)``, ``l = 1 .. num_items - num_segments + 1`` (index ``l - 1``), of any one segment
    when ``num_items`` items are cut into ``num_segments`` non-empty segments uniformly over all
    ``C(num_items - 1, num_segments - 1)`` cuts (what :func:`_random_segmentation` draws, and T5's
    ``random_segmentation``): fixing one segment at ``l`` leaves ``C(num_items - l - 1, num_segments - 2)``
    ways to cut the rest. Every segment index has this same distribution."""
    if not 1 <= num_segments <= num_items:
        raise ArgumentError(f"cannot cut {num_items} items into {num_segments} non-empty segments")
    if num_segments == 1:
        return [0.0] * (num_items - 1) + [1.0]
    total = math.comb(num_items - 1, num_segments - 1)
    return [math.comb(num_items - l - 1, num_segments - 2) / total for l in range(1, num_items - num_segments + 2)]


def mask_segments(mask: Tensor) -> tuple[list[int], list[int]]:
    """``(kept segment lengths, noise span lengths)`` of a mask that starts kept and alternates (in order)."""
    values = mask.to(torch.bool).reshape(-1)
    change = torch.nonzero(values[1:] != values[:-1]).reshape(-1) + 1
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), change, torch.tensor([values.numel()])])
    lengths = bounds.diff().tolist()
    first_noise = bool(values[0])
    kept = lengths[1::2] if first_noise else lengths[0::2]
    noise = lengths[0::2] if first_noise else lengths[1::2]
    return kept, noise


def segmentation_chisquare(masks: Sequence[Tensor], noise_density: float = 0.15, mean_span_length: float = 3.0,
                           min_expected: float = 5.0) -> dict[str, float]:
    """Pearson chi-square test of drawn span masks (all of one length) against T5's exact segmentation.

    Draw ``i`` contributes one kept segment and one noise span, both at index ``i mod k`` (``k`` spans):
    one observation per draw and kind, so draws stay independent (the segments of one draw are not: their
    lengths sum to a constant). The cells are (kind, index, length), lengths pooled from the longest down
    until each cell expects ``min_expected`` draws; the expected counts come from :func:`segment_length_pmf`.
    Returns ``statistic``, ``df`` (the sum over (kind, index) strata of cells - 1), ``p_value`` and ``draws``.
    Under a correct sampler ``p_value`` is uniform on [0, 1]; a test at level ``a`` rejects when it is below.
    """
    from scipy.stats import chi2

    if not masks:
        raise ArgumentError("segmentation_chisquare needs at least one mask")
    length = int(masks[0].numel())
    if any(int(m.numel()) != length for m in masks):
        raise ArgumentError("segmentation_chisquare needs masks of one length")
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    pmfs = {"kept": segment_length_pmf(length - num_noise, num_spans),
            "noise": segment_length_pmf(num_noise, num_spans)}
    counts = {(kind, j): [0] * len(pmf) for kind, pmf in pmfs.items() for j in range(num_spans)}
    for i, m in enumerate(masks):
        kept, noise = mask_segments(m)
        if len(kept) != num_spans or len(noise) != num_spans:
            raise ArgumentError(f"a mask has {len(kept)} kept segments and {len(noise)} noise spans, "
                                f"{num_spans} each expected")
        j = i % num_spans
        for kind, lengths in (("kept", kept), ("noise", noise)):
            counts[kind, j][lengths[j] - 1] += 1
    statistic, df = 0.0, 0
    for (kind, _), observed in counts.items():
        n = sum(observed)
        if n == 0:
            continue
        cells_o, cells_e, acc_o, acc_e = [], [], 0, 0.0
        for o, p in zip(reversed(observed), reversed(pmfs[kind]), strict=True):  # pool from the long tail down
            acc_o, acc_e = acc_o + o, acc_e + n * p
            if acc_e >= min_expected:
                cells_o.append(acc_o)
                cells_e.append(acc_e)
                acc_o, acc_e = 0, 0.0
        if acc_e > 0 or acc_o > 0:  # what is left joins the last cell made (or is the only one)
            if cells_e:
                cells_o[-1] += acc_o
                cells_e[-1] += acc_e
            else:
                cells_o, cells_e = [acc_o], [acc_e]
        statistic += sum((o - e) ** 2 / e for o, e in zip(cells_o, cells_e, strict=True) if e > 0)
        df += len(cells_e) - 1
    p_value = float(chi2.sf(statistic, df)) if df > 0 else 1.0
    return {"statistic": float(statistic), "df": df, "p_value": p_value, "draws": len(masks)}


def noise_span_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                    generator: torch.Generator | None = None) -> Tensor:
    """Boolean ``(length,)``, True at the tokens to drop (T5's ``random_spans_noise_mask``)."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    keep_lengths = _random_segmentation(length - num_noise, num_spans, generator)
    interleaved = torch.stack([keep_lengths, noise_lengths], dim=1).reshape(-1)  # keep, noise, keep, noise ...
    span_index = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)
    return span_index % 2 == 1


def _replace_spans(ids: Tensor, mask: Tensor, sentinels: Tensor) -> Tensor:
    """Each run of ``mask`` becomes one sentinel (the ``k``-th run gets ``sentinels[k]``); the rest stays."""
    starts = mask & ~torch.cat([torch.zeros(1, dtype=torch.bool), mask[:-1]])
    run = torch.cumsum(starts.long(), 0) - 1
    out = torch.where(starts, sentinels[run.clamp(min=0)], ids)
    return out[~mask | starts]


def span_corruption(token_ids: Sequence[int] | Tensor, noise_density: float = 0.15, mean_span_length: float = 3.0,
                    sentinel_ids: Sequence[int] | None = None, generator: torch.Generator | None = None
                    ) -> tuple[Any, Any]:
    """``(inputs, targets)`` of T5's span-corruption objective for one text (see the module docstring).

    ``sentinel_ids[k]`` replaces the ``k``-th span (T5: ``<extra_id_k>``, the tokenizer's
    ``additional_special_tokens_ids``); at least as many as there are spans are needed. A list in gives
    lists out, a tensor gives tensors. No EOS is added (the collator does that). Seeded by ``generator``.
    """
    if sentinel_ids is None:
        raise ArgumentError("span_corruption needs sentinel_ids (T5: tokenizer.additional_special_tokens_ids, "
                            "or lmcourse.pretraining.sentinel_ids(tokenizer))")
    as_list = not isinstance(token_ids, Tensor)
    ids = torch.as_tensor(list(token_ids) if as_list else token_ids, dtype=torch.long).reshape(-1)
    _, num_spans = span_counts(ids.numel(), noise_density, mean_span_length)
    if len(sentinel_ids) < num_spans:
        raise ArgumentError(f"{ids.numel()} tokens make {num_spans} spans, which needs {num_spans} sentinel ids; "
                            f"got {len(sentinel_ids)}: use shorter texts or more sentinels")
    sentinels = torch.as_tensor(list(sentinel_ids), dtype=torch.long)
    mask = noise_span_mask(ids.numel(), noise_density, mean_span_length, generator)
    inputs = _replace_spans(ids, mask, sentinels)
    # the targets are the same operation on the complement: every kept run becomes a sentinel, and the
    # text starts with a kept run, so target sentinel k precedes noise span k
    targets = _replace_spans(ids, ~mask, sentinels)
    if as_list:
        return inputs.tolist(), targets.tolist()
    return inputs, targets


def reassemble_spans(inputs: Sequence[int], targets: Sequence[int], sentinel_ids: Sequence[int]) -> list[int]:
    """The original text from ``inputs`` and ``targets``: each input sentinel is replaced by what follows
    the same sentinel in the targets (the inverse of :func:`span_corruption`, and its test)."""
    position = {s: k for k, s in enumerate(sentinel_ids)}
    spans: dict[int, list[int]] = {}
    current: int | None = None
    for t in list(targets):
        if t in position:
            current = position[t]
            spans[current] = []
        elif current is not None:
            spans[current].append(t)
    out: list[int] = []
    for t in list(inputs):
        out.extend(spans.get(position[t], []) if t in position else [t])
    return out


def span_corruption_batch(blocks: Tensor, sentinel_ids: Sequence[int], eos_token_id: int,
                          noise_density: float = 0.15, mean_span_length: float = 3.0,
                          generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """A training batch from equal-length token blocks ``(B, n)``: ``input_ids`` and ``labels``, each with
    EOS appended. All rows have the same lengths (:func:`corrupted_lengths`), so there is no padding and
    the attention mask is all ones."""
    if blocks.dim() != 2:
        raise ArgumentError(f"blocks must be (batch, length), got shape {tuple(blocks.shape)}")
    eos = torch.tensor([eos_token_id])
    pairs = [span_corruption(row, noise_density, mean_span_length, sentinel_ids, generator) for row in blocks.cpu()]
    input_ids = torch.stack([torch.cat([i, eos]) for i, _ in pairs])
    labels = torch.stack([torch.cat([t, eos]) for _, t in pairs])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def sentinel_ids(tokenizer: Any, n: int | None = None) -> list[int]:
    """T5's sentinels ``<extra_id_0>, <extra_id_1>, ...`` of a tokenizer, in span order (``n``: how many)."""
    ids = []
    k = 0
    while n is None or k < n:
        tid = tokenizer.convert_tokens_to_ids(f"<extra_id_{k}>")
        if tid is None or tid == tokenizer.unk_token_id:
            break
        ids.append(int(tid))
        k += 1
    if not ids or (n is not None and len(ids) < n):
        raise ArgumentError(f"the tokenizer has {len(ids)} sentinel tokens <extra_id_k>, {n or 'some'} needed; add "
                            "them with lmcourse.pretraining.add_sentinels(tokenizer, n)")
    return ids


def add_sentinels(tokenizer: Any, n: int = 100) -> list[int]:
    """Give a tokenizer T5's ``n`` sentinel tokens (as special tokens) and return their ids, in span order."""
    tokenizer.add_special_tokens({"additional_special_tokens": [f"<extra_id_{k}>" for k in range(n)]})
    return sentinel_ids(tokenizer, n)
