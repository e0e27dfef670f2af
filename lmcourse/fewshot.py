"""Zero-shot and few-shot classification with frozen sentence embeddings.

MiniLM-L6 (all-MiniLM-L6-v2) was trained as a sentence-embedding model: the embedding of a text is the
mean of its token vectors (padding excluded), L2-normalised — exactly what sentence-transformers computes
for this checkpoint. With such embeddings, classification needs little or no training:

- **zero-shot**: embed a description of each label ("a positive review") and pick the label whose
  description is most similar (cosine) to the text;
- **few-shot** with ``k`` labelled examples per class: a logistic-regression head on the frozen
  embeddings (the probe protocol of :mod:`lmcourse.readout`: C chosen by cross-validation inside the k
  examples per class), or the **nearest prototype** (Snell et al. 2017): each class is the normalised mean of
  its examples' embeddings and a text gets the class with the most similar prototype.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcourse.errors import ArgumentError
from lmcourse.readout import embed_texts, fit_probe, load_encoder

if TYPE_CHECKING:
    from lmcourse.context import RunContext


@lru_cache(maxsize=2)
def _load_encoder(model: str, device: str):
    """:func:`lmcourse.readout.load_encoder` of ``model``, moved to ``device`` and frozen (eval mode); one copy
    per (model, device), kept for the session and never moved afterwards."""
    tokenizer, net = load_encoder(model)
    return tokenizer, net.to(device).eval()


def encode_sentences(texts: Sequence[str], ctx: RunContext, model: str = "minilm-l6", batch_size: int = 64,
                     max_length: int = 256, normalize: bool = True, progress: bool = False) -> np.ndarray:
    """Sentence embeddings ``(n, d)``: :func:`lmcourse.readout.embed_texts` (mean pooling over the real
    tokens, batches sorted by length) + L2 normalisation, as sentence-transformers computes them for
    all-MiniLM-L6-v2.

    The encoder runs on ``ctx.device`` in float32 (no autocast: the gpu profile embeds all of SST-2's train
    split); the embeddings come back as a NumPy array on the CPU.
    """
    tokenizer, net = _load_encoder(model, str(ctx.device))
    return embed_texts(net, tokenizer, texts, ctx, max_length=max_length, batch_size=batch_size,
                       normalize=normalize, autocast=False, progress=progress)


def zero_shot_predict(text_embeddings: np.ndarray, label_descriptions: Sequence[str | Sequence[str]],
                      ctx: RunContext, model: str = "minilm-l6") -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels and the ``(n, classes)`` cosine similarities to each label's description(s).

    A label may have several descriptions; their normalised mean embedding represents it. The descriptions
    are embedded on ``ctx.device``.
    """
    protos = []
    for desc in label_descriptions:
        descs = [desc] if isinstance(desc, str) else list(desc)
        e = encode_sentences(descs, ctx, model=model).mean(0)
        protos.append(e / np.linalg.norm(e))
    sims = _normalize(text_embeddings) @ np.stack(protos).T
    return sims.argmax(1), sims


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


class PrototypeClassifier:
    """Nearest class prototype by cosine similarity; a prototype is the normalised mean of a class's
    (normalised) embeddings."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> PrototypeClassifier:
        X, y = _normalize(np.asarray(X, dtype=np.float64)), np.asarray(y)
        self.classes_ = np.unique(y)
        self.prototypes_ = _normalize(np.stack([X[y == c].mean(0) for c in self.classes_]))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return _normalize(np.asarray(X, dtype=np.float64)) @ self.prototypes_.T

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]


def sample_k_per_class(labels: Sequence[int], k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` examples of every class, drawn without replacement with ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        if len(pool) < k:
            raise ArgumentError(f"class {c} has only {len(pool)} examples, fewer than k={k}")
        picks.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(picks))


def fewshot_heads(train_X: np.ndarray, train_y: np.ndarray, eval_X: np.ndarray, *, seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """Predictions of the two frozen-embedding heads trained on ``(train_X, train_y)``: the course's one
    linear-probe protocol (:func:`lmcourse.readout.fit_probe`: logistic regression, C chosen by stratified
    cross-validation inside these examples, folds drawn from ``seed``) and the nearest prototype."""
    logreg = fit_probe(train_X, train_y, seed=seed)
    proto = PrototypeClassifier().fit(train_X, train_y)
    return {"logistic regression": logreg.predict(eval_X), "nearest prototype": proto.predict(eval_X)}


def fewshot_curve(task: str, train_X: np.ndarray, train_y: np.ndarray, eval_X: np.ndarray, eval_y: np.ndarray,
                  ks: Sequence[int] = (8, 16, 64), seeds: Sequence[int] = (0, 1, 2)) -> list[dict[str, Any]]:
    """One row per (k, seed, head) with the task's GLUE metric on the eval set."""
    from lmcourse.data import get_task
    from lmcourse.metrics import compute_glue_metric, task_score

    spec = get_task(task)
    rows = []
    for k in ks:
        for seed in seeds:
            idx = sample_k_per_class(train_y, k, seed)
            for head, pred in fewshot_heads(train_X[idx], train_y[idx], eval_X, seed=seed).items():
                m = compute_glue_metric(spec.metric_config, pred, eval_y)
                rows.append({"k": k, "seed": seed, "method": head, "score": task_score(spec.name, m)})
    return rows

