"""The reference side: gensim's own skip-gram ``Word2Vec`` trained on the same sentences as ours."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmcourse.embeddings.training import TrainResult

if TYPE_CHECKING:
    from lmcourse.context import RunContext


def train_gensim(sentences: Sequence[Sequence[str]], ctx: RunContext, dim: int = 100, window: int = 5,
                 negative: int = 5, epochs: int = 5, sample: float = 1e-3, min_count: int = 5,
                 max_vocab: int | None = None, workers: int | None = None):
    """gensim's skip-gram (sg=1, negative sampling, no hierarchical softmax) on the same sentences.

    Returns ``(model, TrainResult)``; the time counts ``train()`` only (vocabulary building excluded, as
    for ours). Seeded with ``ctx.seed``; ``workers`` defaults to ``ctx.threads``, the CPU threads torch
    uses in this run, so both implementations use the same cores.
    """
    from gensim.models import Word2Vec

    workers = workers or ctx.threads
    model = Word2Vec(vector_size=dim, window=window, negative=negative, hs=0, sg=1, sample=sample,
                     min_count=min_count, max_final_vocab=max_vocab, workers=workers, seed=ctx.seed, epochs=epochs)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    seconds = time.perf_counter() - start
    raw = sum(len(s) for s in sentences)
    losses: list[float] = []
    return model, TrainResult(model.wv.vectors.copy(), losses, seconds, raw, epochs,
                              extra={"workers": workers})
