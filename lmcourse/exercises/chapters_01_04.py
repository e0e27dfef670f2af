"""The exercises of chapters 01-04: embeddings, attention, transformer blocks, tokenization.

See :mod:`lmcourse.exercises.catalog`."""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F

from lmcourse import attention, embeddings, tokenization
from lmcourse.exercises.core import Case, Exercise, Mistake, generator
from lmcourse.exercises.registry import _add, _randn


# =========================================================================================== 01 embeddings
def _sgns_cases() -> list[Case]:
    g = generator(101)
    return [Case("B=5, d=7, K=3", (_randn(g, 5, 7), _randn(g, 5, 7), _randn(g, 5, 3, 7))),
            Case("batch of one, one negative", (_randn(g, 1, 4), _randn(g, 1, 4), _randn(g, 1, 1, 4))),
            Case("d=1, K=5", (_randn(g, 3, 1), _randn(g, 3, 1), _randn(g, 3, 5, 1))),
            Case("large dot products (log σ must not underflow)",
                 (_randn(g, 4, 16, scale=3.0), _randn(g, 4, 16, scale=3.0), _randn(g, 4, 2, 16, scale=3.0))),
            Case("a context pointing away from its center (u·v far below 0)",
                 (torch.full((2, 8), 3.0), torch.full((2, 8), -4.0), torch.full((2, 1, 8), 4.0)))]


def _sgns_unnegated(center, context, negatives):
    neg = torch.bmm(negatives, center.unsqueeze(-1)).squeeze(-1)
    return -(F.logsigmoid((center * context).sum(-1)) + F.logsigmoid(neg).sum(-1))


def _sgns_mean_negatives(center, context, negatives):
    neg = torch.bmm(negatives, center.unsqueeze(-1)).squeeze(-1)
    return -(F.logsigmoid((center * context).sum(-1)) + F.logsigmoid(-neg).mean(-1))


def _sgns_log_sigmoid(center, context, negatives):
    neg = torch.bmm(negatives, center.unsqueeze(-1)).squeeze(-1)
    return -(torch.log(torch.sigmoid((center * context).sum(-1))) + torch.log(torch.sigmoid(-neg)).sum(-1))


def _sgns_batch_mean(center, context, negatives):
    return embeddings.sgns_loss(center, context, negatives).mean()


_add(Exercise(
    id="01.sgns_loss", chapter=1, title="Skip-gram negative-sampling loss",
    statement=("Write `sgns_loss(center, context, negatives)`: `center` and `context` are (B, d), `negatives` "
               "(B, K, d). Return the per-pair loss (B,): −log σ(u·v) − Σ_k log σ(−u·n_k). Use F.logsigmoid, "
               "not log(sigmoid(...)), so large dot products do not give -inf."),
    reference=embeddings.sgns_loss,
    hint="per pair: -(logsigmoid(u·v) + Σ_k logsigmoid(-u·n_k)); torch.bmm(negatives, center[..., None]) gives u·n_k",
    cases=_sgns_cases,
    mistakes=[Mistake("the negatives are not negated", _sgns_unnegated,
                      "negative samples must score LOW: their term is log σ(−u·n_k), with a minus inside σ"),
              Mistake("the negatives are averaged instead of summed", _sgns_mean_negatives,
                      "the K negative terms are summed (Σ_k), not averaged: each negative is one more logistic "
                      "regression"),
              Mistake("log(sigmoid(x)) instead of logsigmoid(x)", _sgns_log_sigmoid,
                      "use F.logsigmoid(x): log(sigmoid(x)) underflows to -inf once a dot product is very negative"),
              Mistake("one batch mean instead of one loss per pair", _sgns_batch_mean,
                      "return one loss per (center, context) pair, shape (B,); the training loop takes the mean")],
    shows=[embeddings.sgns_loss]))


def _noise_cases() -> list[Case]:
    rng = np.random.default_rng(102)
    return [Case("10 words", (rng.integers(1, 1000, size=10).astype(np.float64),)),
            Case("one word", (np.array([7.0]),)),
            Case("a word never seen", (np.array([5.0, 0.0, 20.0, 1.0]),)),
            Case("power=1 (the unigram distribution)", (rng.integers(1, 50, size=6).astype(np.float64),),
                 {"power": 1.0}),
            Case("power=0 (uniform)", (rng.integers(1, 50, size=5).astype(np.float64),), {"power": 0.0})]


def _noise_no_power(counts, power=0.75):
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum()


def _noise_not_renormalised(counts, power=0.75):
    c = np.asarray(counts, dtype=np.float64)
    return (c / c.sum()) ** power


def _noise_fixed_power(counts, power=0.75):
    w = np.asarray(counts, dtype=np.float64) ** 0.75
    return w / w.sum()


_add(Exercise(
    id="01.noise_distribution", chapter=1, title="word2vec's negative-sampling distribution",
    statement=("Write `noise_distribution(counts, power=0.75)`: the unigram counts raised to `power`, normalised "
               "to sum to 1 (a numpy array of probabilities, one per word)."),
    reference=embeddings.noise_distribution,
    hint="w = counts ** power, then w / w.sum()",
    cases=_noise_cases,
    mistakes=[Mistake("the counts are not raised to the power", _noise_no_power,
                      "raise the counts to `power` (3/4): it flattens the distribution so rare words get drawn"),
              Mistake("the power is applied after normalising", _noise_not_renormalised,
                      "normalise AFTER raising to the power: (c/Σc)^0.75 no longer sums to 1"),
              Mistake("the power argument is ignored", _noise_fixed_power,
                      "use the `power` argument, not a hard-coded 0.75")],
    shows=[embeddings.noise_distribution]))


# =========================================================================================== 02 attention
def _sdpa_cases() -> list[Case]:
    g = generator(201)
    pad = attention.padding_mask(attention.lengths_to_mask([5, 3]))  # (2, 1, 1, 5)
    return [Case("B=2, T=5, d=8, no mask", (_randn(g, 2, 5, 8), _randn(g, 2, 5, 8), _randn(g, 2, 5, 8))),
            Case("padding mask (lengths 5 and 3)", (_randn(g, 2, 1, 5, 8), _randn(g, 2, 1, 5, 8),
                                                    _randn(g, 2, 1, 5, 8)), {"mask": pad}),
            Case("causal mask, T=6", (_randn(g, 1, 6, 4), _randn(g, 1, 6, 4), _randn(g, 1, 6, 4)),
                 {"mask": attention.causal_mask(6)}),
            Case("T_q=3, T_k=7, d_k=3, d_v=5", (_randn(g, 2, 3, 3), _randn(g, 2, 7, 3), _randn(g, 2, 7, 5))),
            Case("batch of one, 2 heads, d_k=16", (_randn(g, 1, 2, 4, 16), _randn(g, 1, 2, 4, 16),
                                                   _randn(g, 1, 2, 4, 6)),
                 {"mask": torch.tensor([True, True, False, True])})]


def _sdpa(scale_fn, mask_side="ok", fill=float("-inf"), dim=-1):
    def fn(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) * scale_fn(q, v)
        if mask is not None:
            scores = scores.masked_fill(mask if mask_side == "inverted" else ~mask, fill)
        return torch.softmax(scores, dim=dim) @ v
    return fn


def _sdpa_mask_after_softmax(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    return (weights * mask if mask is not None else weights) @ v


_ok_scale = lambda q, v: 1 / math.sqrt(q.size(-1))  # noqa: E731
_add(Exercise(
    id="02.sdpa", chapter=2, title="Scaled dot-product attention with a mask",
    statement=("Write `attention(q, k, v, mask=None)`: softmax(q kᵀ / √d_k) v over the last two dimensions "
               "(q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v)). `mask` is boolean, True where a query "
               "MAY attend to a key (SDPA's convention), broadcastable to (..., T_q, T_k); a masked score is -inf."),
    reference=attention.scaled_dot_product_attention,
    hint="scores = q @ k.transpose(-2, -1) / sqrt(d_k); scores.masked_fill(~mask, -inf); softmax(dim=-1); @ v",
    cases=_sdpa_cases,
    mistakes=[Mistake("scores not divided by √d_k", _sdpa(lambda q, v: 1.0),
                      "scores are not divided by √d_k: without it the softmax saturates as d_k grows"),
              Mistake("scores divided by d_k instead of √d_k", _sdpa(lambda q, v: 1 / q.size(-1)),
                      "divide by √d_k (math.sqrt(q.size(-1))), not by d_k"),
              Mistake("scaled by √d_v", _sdpa(lambda q, v: 1 / math.sqrt(v.size(-1))),
                      "the scale uses the query/key dimension d_k = q.size(-1), not the value dimension"),
              Mistake("the mask is on the wrong side", _sdpa(_ok_scale, mask_side="inverted"),
                      "the mask is on the wrong side: True means MAY attend, so fill where the mask is False "
                      "(masked_fill(~mask, -inf)); torch.nn.MultiheadAttention uses the opposite convention"),
              Mistake("masked scores set to 0 instead of -inf", _sdpa(_ok_scale, fill=0.0),
                      "a masked score must be -inf: a score of 0 still gets weight e⁰ after the softmax"),
              Mistake("softmax over the queries", _sdpa(_ok_scale, dim=-2),
                      "softmax over the keys (dim=-1): each query's weights sum to 1"),
              Mistake("the mask applied after the softmax", _sdpa_mask_after_softmax,
                      "mask the SCORES before the softmax (-inf where not allowed): zeroing weights after it leaves "
                      "rows that no longer sum to 1")],
    shows=[attention.scaled_dot_product_attention]))


def _causal_cases() -> list[Case]:
    return [Case("T=5", (5,)), Case("a KV cache: 3 new queries after 4 past tokens", (3, 7, 4)),
            Case("one new token after 5 past", (1, 6, 5)), Case("T=1", (1,)), Case("T_q=4, T_k=4, offset=0", (4, 4, 0))]


_add(Exercise(
    id="02.causal_mask", chapter=2, title="The causal mask, with and without a KV cache",
    statement=("Write `causal_mask(q_len, k_len=None, offset=0)`: a boolean (q_len, k_len) tensor, True where "
               "query i (at position offset + i) may attend to key j, i.e. j <= offset + i. k_len defaults to q_len."),
    reference=attention.causal_mask,
    hint="torch.ones(q_len, k_len, dtype=torch.bool).tril(diagonal=offset)",
    cases=_causal_cases,
    mistakes=[Mistake("the future is allowed instead of the past",
                      lambda q, k=None, o=0: torch.ones(q, q if k is None else k, dtype=torch.bool).triu(o),
                      "True must be on and BELOW the diagonal (keys in the past): tril, not triu"),
              Mistake("the offset is ignored",
                      lambda q, k=None, o=0: torch.ones(q, q if k is None else k, dtype=torch.bool).tril(),
                      "with past tokens in a cache query i sits at position offset + i: tril(diagonal=offset)"),
              Mistake("a token may not attend to itself",
                      lambda q, k=None, o=0: torch.ones(q, q if k is None else k, dtype=torch.bool).tril(o - 1),
                      "a token attends to itself (the diagonal is True): tril(diagonal=offset), not offset - 1")],
    shows=[attention.causal_mask]))


# =========================================================================================== 03 blocks
def _sin_cases() -> list[Case]:
    return [Case("7 positions, dim 8", (7, 8)), Case("one position", (1, 4)), Case("50 positions, dim 6", (50, 6)),
            Case("dim 2", (3, 2))]


def _sinusoids(swap=False, exponent="2i", halves=False):
    def fn(num_positions, dim):
        pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
        i = torch.arange(0, dim, 2, dtype=torch.float64) if exponent == "2i" else torch.arange(dim // 2,
                                                                                               dtype=torch.float64)
        angles = pos * 10000.0 ** (-i / dim)
        a, b = (torch.cos(angles), torch.sin(angles)) if swap else (torch.sin(angles), torch.cos(angles))
        if halves:
            return torch.cat([a, b], dim=-1).float()
        pe = torch.zeros(num_positions, dim, dtype=torch.float64)
        pe[:, 0::2], pe[:, 1::2] = a, b
        return pe.float()
    return fn


_add(Exercise(
    id="03.sinusoidal_positions", chapter=3, title="Sinusoidal positional encodings",
    statement=("Write `sinusoidal_positions(num_positions, dim)`: PE[p, 2i] = sin(p / 10000^(2i/dim)), "
               "PE[p, 2i+1] = cos(p / 10000^(2i/dim)), a float tensor (num_positions, dim)."),
    reference=attention.sinusoidal_positions,
    hint="angles = p * 10000 ** (-arange(0, dim, 2) / dim); even columns sin(angles), odd columns cos(angles)",
    cases=_sin_cases,
    mistakes=[Mistake("sin and cos swapped", _sinusoids(swap=True),
                      "even dimensions get the sine, odd ones the cosine"),
              Mistake("exponent i/dim instead of 2i/dim", _sinusoids(exponent="i"),
                      "the exponent is 2i/dim with i the PAIR index (arange(0, dim, 2) / dim), not i/dim"),
              Mistake("sines and cosines in two halves", _sinusoids(halves=True),
                      "interleave: sin in columns 0, 2, 4, ..., cos in 1, 3, 5, ... (not two halves; that is "
                      "RoPE's layout)")],
    shows=[attention.sinusoidal_positions], atol=1e-5))


def _split_cases() -> list[Case]:
    g = generator(301)
    return [Case("B=2, T=5, D=12, 3 heads", (_randn(g, 2, 5, 12), 3)),
            Case("batch of one, T=1", (_randn(g, 1, 1, 8), 2)),
            Case("one head per dimension", (_randn(g, 3, 7, 6), 6)), Case("one head", (_randn(g, 2, 4, 10), 1))]


def _split_no_transpose(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, num_heads, T, D // num_heads)


def _split_strided(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, D // num_heads, num_heads).permute(0, 3, 1, 2)


def _split_forgot_transpose(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, num_heads, D // num_heads)


_add(Exercise(
    id="03.split_heads", chapter=3, title="Split the model dimension into heads",
    statement=("Write `split_heads(x, num_heads)`: (B, T, H·Q) -> (B, H, T, Q), head h taking the contiguous "
               "dimensions h·Q .. (h+1)·Q − 1 of every token."),
    reference=attention.split_heads,
    hint="x.view(B, T, H, D // H).transpose(1, 2)",
    cases=_split_cases,
    mistakes=[Mistake("reshaped straight to (B, H, T, Q)", _split_no_transpose,
                      "reshaping (B, T, D) straight to (B, H, T, Q) mixes tokens into heads: view as (B, T, H, Q) "
                      "first, then transpose(1, 2)"),
              Mistake("the heads are strided", _split_strided,
                      "a head is a contiguous chunk of Q dimensions: view(B, T, H, Q), not (B, T, Q, H)"),
              Mistake("the transpose is missing", _split_forgot_transpose,
                      "after view(B, T, H, Q) move the heads before the tokens: .transpose(1, 2)")],
    shows=[attention.split_heads]))


# =========================================================================================== 04 tokenization
_WORDS = {("l", "o", "w", "</w>"): 5, ("l", "o", "w", "e", "r", "</w>"): 2, ("n", "e", "w", "e", "s", "t", "</w>"): 6,
          ("w", "i", "d", "e", "s", "t", "</w>"): 3}


def _pairs_cases() -> list[Case]:
    return [Case("Sennrich et al.'s example", (dict(_WORDS),)),
            Case("'aaa' has the pair (a, a) twice", ({("a", "a", "a"): 4, ("b", "a"): 1},)),
            Case("a one-symbol word", ({("x",): 9, ("x", "y"): 2},)), Case("no words", ({},))]


def _pairs_compare(expected, got) -> str | None:
    try:
        g = {tuple(k): int(v) for k, v in dict(got).items() if v}
    except (TypeError, ValueError):
        return f"expected a dict or Counter of pair -> count, got {type(got).__name__}"
    e = {tuple(k): int(v) for k, v in dict(expected).items() if v}
    for pair in sorted(set(e) | set(g)):
        if e.get(pair, 0) != g.get(pair, 0):
            return f"pair {pair}: expected count {e.get(pair, 0)}, got {g.get(pair, 0)}"
    return None


def _pairs_unweighted(words):
    c: Counter = Counter()
    for symbols in words:
        for p in pairwise(symbols):
            c[p] += 1
    return c


def _pairs_once_per_word(words):
    c: Counter = Counter()
    for symbols, n in words.items():
        for p in set(pairwise(symbols)):
            c[p] += n
    return c


_add(Exercise(
    id="04.count_pairs", chapter=4, title="Count BPE's symbol pairs",
    statement=("Write `count_pairs(words)`: `words` maps a word (a tuple of symbols) to its count; return a "
               "Counter of adjacent symbol pairs, each occurrence weighted by the word's count."),
    reference=tokenization.count_pairs,
    hint="for symbols, count in words.items(): for a, b in zip(symbols, symbols[1:]): pairs[a, b] += count",
    cases=_pairs_cases, compare=_pairs_compare,
    mistakes=[Mistake("pairs not weighted by the word counts", _pairs_unweighted,
                      "a word seen 5 times contributes its pairs 5 times: add the word's count, not 1"),
              Mistake("a pair counted once per word", _pairs_once_per_word,
                      "count every occurrence: 'aaa' contains (a, a) twice (do not use a set of pairs)")],
    shows=[tokenization.count_pairs]))


def _merge_cases() -> list[Case]:
    return [Case("merge (e, s)", (dict(_WORDS), ("e", "s"))),
            Case("'aaa' merging (a, a) scans left to right", ({("a", "a", "a"): 1, ("a", "a", "a", "a"): 2},
                                                                 ("a", "a"))),
            Case("two words become one", ({("a", "b", "c"): 2, ("ab", "c"): 3}, ("a", "b"))),
            Case("the pair does not occur", ({("x", "y"): 1}, ("y", "x")))]


def _merge_impl(first_only=False, overwrite=False, right_to_left=False):
    def fn(words, pair):
        a, b = pair
        out = {}
        for symbols, count in words.items():
            s = list(symbols)[::-1] if right_to_left else list(symbols)
            merged, i, done = [], 0, False
            while i < len(s):
                match = (s[i], s[i + 1]) == ((b, a) if right_to_left else (a, b)) if i + 1 < len(s) else False
                if match and not done:
                    merged.append(a + b)
                    i += 2
                    done = first_only
                else:
                    merged.append(s[i])
                    i += 1
            key = tuple(merged[::-1] if right_to_left else merged)
            out[key] = count if overwrite else out.get(key, 0) + count
        return out
    return fn


_add(Exercise(
    id="04.merge_pair", chapter=4, title="Apply one BPE merge",
    statement=("Write `merge_pair(words, pair)`: replace every occurrence of `pair` (a, b) in each word by the "
               "joined symbol a+b, scanning left to right; return the new word -> count dict (words that become "
               "equal add their counts)."),
    reference=tokenization.merge_pair,
    hint="walk each word with an index i: if symbols[i:i+2] == pair, append a+b and skip 2, else append and skip 1",
    cases=_merge_cases, compare=_pairs_compare,
    mistakes=[Mistake("only the first occurrence merged", _merge_impl(first_only=True),
                      "merge EVERY occurrence of the pair in a word, not just the first"),
              Mistake("counts overwritten when two words become one", _merge_impl(overwrite=True),
                      "two words can become the same tuple after a merge: add their counts (out.get(key, 0) + count)"),
              Mistake("scanned right to left", _merge_impl(right_to_left=True),
                      "scan left to right: 'a a a' merging (a, a) gives ('aa', 'a'), not ('a', 'aa')")],
    shows=[tokenization.merge_pair]))
