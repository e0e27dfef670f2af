"""Both skip-grams trained once per seed and a random-vector floor, one scored row per run, for
:mod:`lmcourse.spread`'s comparisons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcourse.embeddings.data import EmbeddingSizes, EncodedCorpus, Vocab
from lmcourse.embeddings.evaluation import evaluate_vectors, to_keyed_vectors
from lmcourse.embeddings.gensim_side import train_gensim
from lmcourse.embeddings.sgns import train_sgns
from lmcourse.embeddings.training import TrainResult

if TYPE_CHECKING:
    from lmcourse.context import RunContext


OURS_SGNS, GENSIM_SGNS, RANDOM_VECTORS = "ours SGNS (torch)", "gensim SGNS", "random vectors"
#: the scores compared over seeds (keys of :func:`evaluate_vectors`)
SEED_METRICS = ("wordsim353_spearman", "simlex999_spearman", "analogy_accuracy")


def score_row(model: str, seed: int, kv, result: TrainResult | None = None, analogies: bool = True
              ) -> dict[str, Any]:
    """One run as a row for :mod:`lmcourse.spread`: model, seed, the :func:`evaluate_vectors` scores and, for
    a trained model, its training seconds and words/s."""
    row: dict[str, Any] = {"model": model, "seed": seed, **evaluate_vectors(kv, analogies=analogies)}
    if result is not None:
        row.update({"train s": result.seconds, "words/s": result.words_per_second})
    return row


def sgns_over_seeds(sentences: Sequence[Sequence[str]], vocab: Vocab, corpus: EncodedCorpus, ctx: RunContext,
                    sizes: EmbeddingSizes, seeds: Iterable[int], progress: bool = False) -> list[dict[str, Any]]:
    """Our skip-gram (:func:`train_sgns`) and gensim's (:func:`train_gensim`) trained once per seed with the
    sizes of ``sizes``, each run with ``ctx.with_changes(seed=s)`` (the seed is the only thing that changes),
    and scored: rows ``[ours seed s, gensim seed s, ...]`` as :func:`score_row` makes them."""
    rows = []
    for s in seeds:
        run = ctx.with_changes(seed=int(s))
        ours = train_sgns(corpus, vocab, run, dim=sizes.dim, window=sizes.window, negative=sizes.negative,
                          epochs=sizes.epochs, sample=sizes.sample, batch_size=sizes.batch_size, lr=sizes.lr,
                          progress=progress)
        rows.append(score_row(OURS_SGNS, run.seed, to_keyed_vectors(vocab.words, ours.vectors), ours))
        gmodel, gres = train_gensim(sentences, run, dim=sizes.dim, window=sizes.window, negative=sizes.negative,
                                    epochs=sizes.epochs, sample=sizes.sample, min_count=sizes.min_count,
                                    max_vocab=sizes.max_vocab)
        rows.append(score_row(GENSIM_SGNS, run.seed, gmodel.wv, gres))
    return rows


def random_baseline(words: Sequence[str], dim: int, seeds: Iterable[int], analogies: bool = False
                    ) -> list[dict[str, Any]]:
    """The floor a trained model must clear: standard-normal random vectors for the same words, one draw per
    seed (``numpy.random.default_rng(seed)``), scored like the models (word pairs only unless ``analogies``)."""
    return [score_row(RANDOM_VECTORS, int(s), to_keyed_vectors(words, np.random.default_rng(int(s)).normal(
        size=(len(words), dim))), analogies=analogies) for s in seeds]
