"""Scoring word vectors: *our* vectors wrapped as gensim ``KeyedVectors``, so WordSim-353, SimLex-999 and
the Google analogies are scored by exactly the code that scores gensim's own ``Word2Vec``; an independent
Spearman (NumPy cosines, scipy) that checks the wrapping; nearest neighbours and a 2-D projection."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from lmcourse.errors import ArgumentError, UnknownNameError

BENCHMARKS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt", "analogy": "questions-words.txt"}


def to_keyed_vectors(words: Sequence[str], vectors: np.ndarray):
    """Our vectors as gensim ``KeyedVectors`` (same word order), so gensim's evaluation code scores them."""
    from gensim.models import KeyedVectors

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ArgumentError(f"need one vector per word: {len(words)} words, vectors of shape {vectors.shape}")
    kv = KeyedVectors(vectors.shape[1], count=0)
    kv.add_vectors(list(words), vectors)
    return kv


def _analogy_questions(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip() and not line.startswith(":"))


def evaluate_vectors(kv, analogies: bool = True) -> dict[str, float]:
    """WordSim-353 and SimLex-999 Spearman (+ OOV share) and Google analogy accuracy (+ OOV share).

    Exactly gensim's ``evaluate_word_pairs`` / ``evaluate_word_analogies`` (case-insensitive, analogies
    restricted to the 300k most frequent words, out-of-vocabulary pairs/questions skipped).
    """
    from gensim.test.utils import datapath

    gensim_logger = logging.getLogger("gensim")
    level = gensim_logger.level
    gensim_logger.setLevel(logging.ERROR)
    try:
        out: dict[str, float] = {}
        for name in ("wordsim353", "simlex999"):
            pearson, spearman, oov = kv.evaluate_word_pairs(datapath(BENCHMARKS[name]))
            out[f"{name}_spearman"] = float(spearman[0])
            out[f"{name}_pearson"] = float(pearson[0])
            out[f"{name}_oov"] = float(oov) / 100.0
        path = datapath(BENCHMARKS["analogy"])
        if not analogies:
            return out
        score, sections = kv.evaluate_word_analogies(path)
        total = next(s for s in sections if s["section"] == "Total accuracy")
        seen = len(total["correct"]) + len(total["incorrect"])
        out["analogy_accuracy"] = float(score) if seen else 0.0
        out["analogy_oov"] = 1.0 - seen / _analogy_questions(path)
    finally:
        gensim_logger.setLevel(level)
    for k, v in out.items():  # fewer than 3 pairs in vocabulary: gensim returns NaN
        if isinstance(v, float) and math.isnan(v):
            out[k] = 0.0 if k.endswith("_spearman") or k.endswith("_pearson") else v
    return out


def word_pair_spearman(words: Sequence[str], vectors: np.ndarray, name: str = "wordsim353") -> tuple[float, int, int]:
    """Spearman between a benchmark's human ratings and the cosine similarities of ``vectors`` (row i is the
    vector of ``words[i]``), computed directly with NumPy and scipy -- none of gensim's evaluation code.

    Pairs are read as gensim reads them (``#`` lines are comments; ``word<TAB>word<TAB>rating``; words compared
    case-insensitively, the first of several case variants wins) and pairs with an out-of-vocabulary word are
    skipped. Returns ``(spearman, pairs used, pairs in the file)``: a check on :func:`evaluate_vectors`, which
    must agree with it on any vectors it was given through :func:`to_keyed_vectors`."""
    from gensim.test.utils import datapath
    from scipy.stats import spearmanr

    if name not in ("wordsim353", "simlex999"):
        raise UnknownNameError(f"unknown word-pair benchmark {name!r}; use 'wordsim353' or 'simlex999'")
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(words):
        raise ArgumentError(f"need one vector per word: {len(words)} words, vectors of shape {x.shape}")
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w.lower(), i)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    gold, model, total = [], [], 0
    with open(datapath(BENCHMARKS[name]), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                a, b, rating = parts[0].lower(), parts[1].lower(), float(parts[2])
            except (ValueError, IndexError):  # gensim skips a malformed line too
                continue
            if len(parts) != 3:
                continue
            total += 1
            if a in index and b in index:
                gold.append(rating)
                model.append(float(x[index[a]] @ x[index[b]]))
    if len(gold) < 3:
        return 0.0, len(gold), total
    return float(spearmanr(gold, model)[0]), len(gold), total


def nearest_words(kv, words: Sequence[str], topn: int = 5) -> dict[str, list[str]]:
    """The ``topn`` cosine-nearest neighbours of each in-vocabulary word."""
    return {w: [n for n, _ in kv.most_similar(w, topn=topn)] for w in words if w in kv.key_to_index}


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components (centred SVD)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T
