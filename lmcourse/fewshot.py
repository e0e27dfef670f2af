"""Zero-shot and few-shot classification with frozen sentence embeddings.

MiniLM-L6 (all-MiniLM-L6-v2) was trained as a sentence-embedding model: the embedding of a text is the
mean of its token vectors (padding excluded), L2-normalised — exactly what sentence-transformers computes
for this checkpoint. With such embeddings, classification needs little or no training:

- **zero-shot**: embed a description of each label ("a positive review") and pick the label whose
  description is most similar (cosine) to the text;
- **few-shot** with ``k`` labelled examples per class: a logistic-regression head on the frozen
  embeddings, or the **nearest prototype** (Snell et al. 2017): each class is the normalised mean of
  its examples' embeddings and a text gets the class with the most similar prototype.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmcourse.errors import ArgumentError

if TYPE_CHECKING:
    from lmcourse.context import RunContext


@lru_cache(maxsize=2)
def _load_encoder(model: str, device: str):
    """Tokenizer and encoder of ``model`` on ``device``; one copy per (model, device), never moved afterwards."""
    from transformers import AutoModel, AutoTokenizer

    from lmcourse.models import resolve

    path = resolve(model)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where ``attention_mask`` is 1 (padding does not dilute the mean)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@torch.no_grad()
def encode_sentences(texts: Sequence[str], ctx: RunContext, model: str = "minilm-l6", batch_size: int = 64,
                     max_length: int = 256, normalize: bool = True, progress: bool = False) -> np.ndarray:
    """Sentence embeddings ``(n, d)``: mean pooling (+ L2 normalisation), batches sorted by length.

    The encoder runs on ``ctx.device`` in float32 (the gpu profile embeds all of SST-2's train split);
    the embeddings come back as a NumPy array on the CPU.
    """
    texts = [str(t) for t in texts]
    tokenizer, net = _load_encoder(model, str(ctx.device))
    order = np.argsort([len(t) for t in texts])[::-1]
    out = np.zeros((len(texts), net.config.hidden_size), dtype=np.float32)
    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="encode", leave=False)
    for s in starts:
        idx = order[s:s + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(ctx.device)
        emb = mean_pool(net(**enc).last_hidden_state, enc["attention_mask"])
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        out[idx] = emb.float().cpu().numpy()
    return out


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


def fewshot_heads(train_X: np.ndarray, train_y: np.ndarray, eval_X: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions of the two frozen-embedding heads trained on ``(train_X, train_y)``."""
    from sklearn.linear_model import LogisticRegression

    logreg = LogisticRegression(C=10.0, max_iter=2000).fit(train_X, train_y)
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
            for head, pred in fewshot_heads(train_X[idx], train_y[idx], eval_X).items():
                m = compute_glue_metric(spec.metric_config, pred, eval_y)
                rows.append({"k": k, "seed": seed, "method": head, "score": task_score(spec.name, m)})
    return rows

