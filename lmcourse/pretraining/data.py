"""Pretraining data: packed blocks, BERT's masking and next-sentence pairs, and step-indexed batches.

Everything here is a pure function of its inputs and a seed, so a training step ``s`` always sees the
same batch with the same masking: what makes a resumed run follow the uninterrupted one exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lmcourse.errors import ArgumentError

if TYPE_CHECKING:
    from lmcourse.context import RunContext


def pack_blocks(sequences: Sequence[Sequence[int]], block_size: int, separator: int | None = None,
                drop_last: bool = True) -> list[list[int]]:
    """Concatenate token sequences (with ``separator`` after each, if given) and cut into equal blocks.

    No padding is wasted and no text is dropped except the incomplete tail (``drop_last``): the
    ``group_texts`` recipe of the HF language-modelling examples.
    """
    if block_size < 1:
        raise ArgumentError(f"block_size must be >= 1, got {block_size}")
    stream: list[int] = []
    for seq in sequences:
        stream.extend(seq)
        if separator is not None:
            stream.append(separator)
    n = len(stream) // block_size if drop_last else math.ceil(len(stream) / block_size)
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n)]


def token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The token ids of every text, without special tokens, padding or truncation, whatever the tokenizer's
    file asks for. A released tokenizer can pad and truncate every text itself (all-MiniLM-L6-v2's pads and
    cuts everything to 128 tokens); packed into blocks, that would be mostly ``[PAD]`` and cut lines. The
    tokenizer passed in is not changed: a copy without padding and truncation encodes."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if backend.padding is not None or backend.truncation is not None:
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
    return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]


def bert_blocks(tokenizer, texts: Sequence[str], block_size: int) -> list[list[int]]:
    """Texts → ``[CLS] ... [SEP]`` blocks of exactly ``block_size`` tokens (content packed across lines)."""
    ids = token_ids(tokenizer, texts)
    inner = pack_blocks(ids, block_size - 2)
    return [[tokenizer.cls_token_id, *b, tokenizer.sep_token_id] for b in inner]


def split_documents(lines: Sequence[str]) -> list[list[str]]:
    """Group corpus lines into documents: a wikitext article starts at a ``= Title =`` heading
    (one ``=`` each side); other lines (tiny-shakespeare) are grouped by 200."""
    docs: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        s = line.strip()
        if not s:
            continue
        is_title = s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")
        if (is_title or len(current) >= 200) and current:
            docs.append(current)
            current = []
        if not is_title:
            current.append(s)
    if current:
        docs.append(current)
    return docs


def sentence_segments(doc: Sequence[str]) -> list[str]:
    """Sentences of a wikitext document (its text is tokenized: sentences end with `` . ``); other lines stay."""
    out: list[str] = []
    for line in doc:
        parts = [p.strip() for p in line.split(" . ")]
        out.extend(p + (" ." if i < len(parts) - 1 else "") for i, p in enumerate(parts) if p)
    return out


def tokenize_segments(tokenizer, documents: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Each document as a list of token-id lists, one per sentence (:func:`sentence_segments`), without
    special tokens: the input :func:`build_nsp_pairs` expects."""
    return [token_ids(tokenizer, sentence_segments(doc)) for doc in documents]


@dataclass
class NspExample:
    """One NSP training pair: token ids of A and B and ``label`` (0: B follows A, 1: B is random)."""

    a: list[int]
    b: list[int]
    label: int


def build_nsp_pairs(documents: Sequence[Sequence[Sequence[int]]], max_tokens: int, seed: int = 0,
                    random_next_prob: float = 0.5) -> list[NspExample]:
    """BERT's ``create_instances_from_document``, simplified: sentence pairs for MLM + NSP.

    Walk each document's segments, collecting them into a chunk of up to ``max_tokens - 3`` tokens; A is
    the first ``k`` segments of the chunk (``k`` random), B is the rest of the chunk (label 0, "is next")
    or, with probability ``random_next_prob`` (and always when the chunk has one segment), segments of a
    *different* random document (label 1); the chunk's unused segments are then put back. Pairs longer
    than the budget lose tokens from the end of the longer side.
    """
    if len(documents) < 2:
        raise ArgumentError("NSP needs at least two documents (random next segments come from another one)")
    rng = random.Random(seed)
    target = max_tokens - 3  # [CLS] A [SEP] B [SEP]
    out: list[NspExample] = []
    for d, doc in enumerate(documents):
        chunk: list[Sequence[int]] = []
        length = 0
        i = 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                if chunk:
                    a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                    a = [t for seg in chunk[:a_end] for t in seg]
                    if len(chunk) == 1 or rng.random() < random_next_prob:
                        label = 1
                        other = rng.randrange(len(documents) - 1)
                        other += other >= d  # any document but this one
                        odoc = documents[other]
                        start = rng.randrange(len(odoc))
                        b: list[int] = []
                        for seg in odoc[start:]:
                            b.extend(seg)
                            if len(b) >= target - len(a):
                                break
                        i -= len(chunk) - a_end  # put the unused segments back
                    else:
                        label = 0
                        b = [t for seg in chunk[a_end:] for t in seg]
                    while len(a) + len(b) > target:
                        (a if len(a) > len(b) else b).pop()
                    if a and b:
                        out.append(NspExample(a, b, label))
                chunk, length = [], 0
            i += 1
    return out


def nsp_features(tokenizer, pairs: Sequence[NspExample]) -> list[dict[str, list[int] | int]]:
    """``[CLS] A [SEP] B [SEP]`` ids, ``token_type_ids`` and ``next_sentence_label`` for each pair."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    feats = []
    for p in pairs:
        ids = [cls, *p.a, sep, *p.b, sep]
        feats.append({"input_ids": ids, "token_type_ids": [0] * (len(p.a) + 2) + [1] * (len(p.b) + 1),
                      "next_sentence_label": p.label})
    return feats


def mlm_collator(tokenizer, mlm_probability: float = 0.15):
    """HF's masking collator: 15 % of non-special tokens, of which 80 % ``[MASK]``, 10 % random, 10 % kept."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability,
                                           mask_replace_prob=0.8, random_replace_prob=0.1)


def collate_seeded(collator, features: Sequence[dict[str, Any]], seed: int) -> dict[str, Tensor]:
    """Run a (random) collator with the global torch RNG seeded, so the masking of a batch is reproducible."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return collator([dict(f) for f in features])
    finally:
        torch.set_rng_state(state)


MAX_PASSES = 10.0  # notebook 14's rule: no pretraining run loops more than 10 times over its corpus


def corpus_passes(steps: int, batch_size: int, n_examples: int, *, what: str,
                  max_passes: float = MAX_PASSES) -> float:
    """How many times ``steps`` batches of ``batch_size`` go over a corpus of ``n_examples`` blocks, with a
    clear error when that is more than ``max_passes``: past a few passes a small corpus is memorised, and
    what the run measures is no longer pretraining."""
    if steps < 0 or batch_size < 1:
        raise ArgumentError(f"{what}: steps must be >= 0 and the batch size >= 1, got {steps} and {batch_size}")
    if n_examples < 1:
        raise ArgumentError(f"{what}: the corpus has no blocks; give it more text or a smaller block size")
    passes = steps * batch_size / n_examples
    if passes > max_passes:
        raise ArgumentError(f"{what}: {steps} steps x {batch_size} = {passes:.1f} passes over its {n_examples:,} "
                            f"blocks; at most {max_passes:g} are allowed: use a larger corpus or fewer steps")
    return passes


def steps_within_passes(steps: int, batch_size: int, n_examples: int, max_passes: float = MAX_PASSES) -> int:
    """``steps``, or fewer: the most whole steps of ``batch_size`` that stay within ``max_passes`` over
    ``n_examples`` blocks. For a run given another run's step budget on a much smaller corpus (TAPT on the
    task text instead of the pretraining corpus)."""
    if steps < 0 or batch_size < 1 or n_examples < 1:
        raise ArgumentError(f"steps_within_passes needs steps >= 0, a batch size >= 1 and a non-empty corpus; "
                            f"got {steps}, {batch_size} and {n_examples}")
    return min(int(steps), int(max_passes * n_examples // batch_size))


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The order of ``n`` examples in one epoch: a function of ``(seed, epoch)`` only, so a resumed run
    sees the same order as an uninterrupted one."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class BlockBatches:
    """Step → batch for fixed blocks: a seeded permutation per epoch, masking seeded by the step.

    ``features`` are dicts (``input_ids`` [+ ``token_type_ids``, ``next_sentence_label``]); ``collator``
    pads and masks. ``batch(step)`` depends only on ``(ctx.seed, step)``, which is what makes resuming exact.
    Batches are built on the CPU (the same on every device); :func:`~lmcourse.pretraining.train` moves them.
    """

    def __init__(self, features: Sequence[dict[str, Any]], batch_size: int, collator, ctx: RunContext):
        if len(features) < batch_size:
            raise ArgumentError(f"only {len(features)} examples for batch size {batch_size}; use more text")
        self.features, self.batch_size, self.collator, self.seed = list(features), batch_size, collator, ctx.seed
        self.per_epoch = len(self.features) // batch_size
        self._perm: tuple[int, list[int]] | None = None

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(len(self.features), self.seed, epoch))
        return self._perm[1]

    def __call__(self, step: int) -> dict[str, Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        idx = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        return collate_seeded(self.collator, [self.features[i] for i in idx], self.seed * 1_000_003 + step)


class StreamBatches:
    """Step → random windows of a token stream (nanoGPT's ``get_batch``), seeded by ``(ctx.seed, step)``."""

    def __init__(self, data: Tensor, block_size: int, batch_size: int, ctx: RunContext):
        if data.numel() <= block_size + 1:
            raise ArgumentError(f"token stream of {data.numel()} tokens is too short for block_size {block_size}")
        self.data, self.block_size, self.batch_size, self.seed = data.long().cpu(), block_size, batch_size, ctx.seed

    def __call__(self, step: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        ix = torch.randint(self.data.numel() - self.block_size - 1, (self.batch_size,), generator=g)
        x = torch.stack([self.data[i:i + self.block_size] for i in ix.tolist()])
        y = torch.stack([self.data[i + 1:i + 1 + self.block_size] for i in ix.tolist()])
        return {"input_ids": x, "targets": y}
