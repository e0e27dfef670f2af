"""Sentence embeddings equal sentence-transformers' for MiniLM; prototype classifier and k-shot sampling
against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from lmcourse.context import resolve_context
from lmcourse.errors import ArgumentError
from lmcourse.fewshot import PrototypeClassifier, encode_sentences, sample_k_per_class, zero_shot_predict

TEXTS = ["a wonderful, moving film", "dull and far too long", "The cat sat on the mat.", "ok"]


def _ctx(device: str = "cpu"):
    return resolve_context("smoke", device="cpu", bf16=False, threads=2).with_changes(device=device)


def test_embeddings_match_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from lmcourse.models import resolve

    ours = encode_sentences(TEXTS, _ctx())
    ref = SentenceTransformer(resolve("minilm-l6"), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_zero_shot_sentiment_on_obvious_examples():
    texts = ["a wonderful, moving film", "a terrible, awful film"]
    descriptions = [["a bad movie", "terrible"], ["a good movie", "great"]]
    pred, sims = zero_shot_predict(encode_sentences(texts, _ctx()), descriptions, _ctx())
    assert sims.shape == (2, 2)
    assert list(pred) == [1, 0]


def test_encoder_runs_on_the_context_device():
    """On a ``meta`` context the encoder and the batches are ``meta`` tensors (no data), so reading the
    embeddings back fails; an encoder that ignored ``ctx.device`` would return CPU embeddings instead. The
    CPU copy of the encoder is not touched by that (one copy per device)."""
    with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
        encode_sentences(TEXTS[:2], _ctx("meta"))
    with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
        zero_shot_predict(np.ones((1, 384), dtype=np.float32), ["good", "bad"], _ctx("meta"))
    again = encode_sentences(TEXTS[:2], _ctx())
    assert again.dtype == np.float32 and np.isfinite(again).all()
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1.0, atol=1e-5)


def test_prototype_classifier_vs_direct():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    y = rng.integers(0, 3, size=30)
    Z = rng.normal(size=(7, 5))
    clf = PrototypeClassifier().fit(X, y)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    protos = np.stack([Xn[y == c].mean(0) for c in range(3)])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    cos = np.array([[z @ p for p in protos] for z in Zn])
    np.testing.assert_allclose(clf.decision_function(Z), cos, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(Z), cos.argmax(1))


def test_sample_k_per_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 7)
    idx = sample_k_per_class(labels, 4, seed=3)
    assert len(idx) == 12 and len(set(idx)) == 12
    assert np.bincount(labels[idx]).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(idx, sample_k_per_class(labels, 4, seed=3))
    with pytest.raises(ArgumentError, match="fewer than k"):
        sample_k_per_class(labels, 6)


def test_fewshot_logistic_regression_is_the_readout_probe():
    """The few-shot logistic regression is lmcourse.readout's one probe protocol (C by cross-validation inside
    the k examples per class, folds from the seed), not a head with its own fixed C."""
    from lmcourse.fewshot import fewshot_curve, fewshot_heads
    from lmcourse.readout import fit_probe

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 6)) + 0.8 * y[:, None] * np.eye(6)[0]
    Z = rng.normal(size=(30, 6))
    for seed in (0, 3):
        heads = fewshot_heads(X, y, Z, seed=seed)
        np.testing.assert_array_equal(heads["logistic regression"], fit_probe(X, y, seed=seed).predict(Z))
        np.testing.assert_array_equal(heads["nearest prototype"], PrototypeClassifier().fit(X, y).predict(Z))
    rows = fewshot_curve("sst2", X, y, Z, (Z[:, 0] > 0.4).astype(int), ks=(8,), seeds=(2,))
    idx = sample_k_per_class(y, 8, 2)
    pred = fit_probe(X[idx], y[idx], seed=2).predict(Z)
    score = next(r["score"] for r in rows if r["method"] == "logistic regression")
    assert score == pytest.approx(np.mean(pred == (Z[:, 0] > 0.4)))
