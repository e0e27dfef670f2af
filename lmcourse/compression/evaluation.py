"""Scoring compressed models on the same dev examples, and the accuracy-latency table and Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcourse.data import get_task, load_glue
from lmcourse.errors import ArgumentError
from lmcourse.spread import spread

Text = str | tuple[str, str]  # one sentence, or a sentence pair (MRPC, RTE, ...)


def dev_examples(task: str, max_samples: int | None = None) -> tuple[list[Text], np.ndarray]:
    """Inputs and labels of a classification task's dev split (a fixed subset of ``max_samples``): sentences,
    or ``(first, second)`` pairs for a pair task."""
    spec = get_task(task)
    dev = load_glue(spec.name, spec.eval_splits[0])
    if max_samples is not None and max_samples < len(dev):
        dev = dev.shuffle(seed=0).select(range(int(max_samples)))
    columns = [list(dev[c]) for c in spec.input_columns]
    texts: list[Text] = list(zip(*columns)) if spec.is_pair else columns[0]
    return texts, np.asarray(dev["label"])


def encode_texts(tokenizer, texts: Sequence[Text], max_length: int, return_tensors: str = "pt",
                 truncation: bool = True):
    """Tokenise sentences, or ``(first, second)`` pairs as BERT does (``[CLS] a [SEP] b [SEP]``, segment ids
    0 and 1); one batch must not mix the two."""
    texts = list(texts)
    pairs = [isinstance(t, tuple | list) for t in texts]
    if any(pairs) and not all(pairs):
        raise ArgumentError("a batch mixes single sentences and sentence pairs: give one kind")
    if pairs and pairs[0]:
        if any(len(t) != 2 for t in texts):
            raise ArgumentError("a sentence pair must have exactly two texts")
        first, second = [str(t[0]) for t in texts], [str(t[1]) for t in texts]
        return tokenizer(first, second, padding=True, truncation=truncation, max_length=max_length,
                         return_tensors=return_tensors)
    return tokenizer([str(t) for t in texts], padding=True, truncation=truncation, max_length=max_length,
                     return_tensors=return_tensors)


def torch_logits(model: nn.Module, tokenizer, texts: Sequence[Text], max_length: int = 128,
                 batch_size: int = 64) -> np.ndarray:
    """Logits of a PyTorch classifier (float or quantized) on ``texts`` (sentences or pairs), in order, on the
    CPU."""
    model = model.eval()
    device = next(iter(model.state_dict().values())).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = encode_texts(tokenizer, texts[start:start + batch_size], max_length)
            out.append(model(**enc.to(device)).logits.float().cpu().numpy())
    return np.concatenate(out)


def onnx_logits(classifier, texts: Sequence[Text], batch_size: int = 64) -> np.ndarray:
    """Logits of an :class:`~lmcourse.compression.OnnxClassifier` on ``texts``, in order."""
    return np.concatenate([classifier.logits(list(texts[s:s + batch_size])) for s in range(0, len(texts), batch_size)])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())


def table_row(name: str, accuracies: Sequence[float], params: int, size_bytes: int, timing: dict[str, float],
              **extra: Any) -> dict[str, Any]:
    """One row of the comparison table: accuracy mean ± std over seeds, size, speed."""
    s = spread(accuracies)
    return {"model": name, "accuracy": s.mean, "± std": s.std if s.n > 1 else float("nan"), "seeds": s.n,
            "parameters (M)": params / 1e6, "size (MB)": size_bytes / 1e6,
            "latency b1 (ms)": timing["latency_ms"], "throughput b32 (ex/s)": timing["throughput"],
            "threads": int(timing["threads"]), **extra}


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "latency b1 (ms)", y: str = "accuracy") -> list[str]:
    """Names of the rows no other row beats on both ``x`` (lower is better) and ``y`` (higher is better)."""
    front = []
    for r in rows:
        dominated = any(o[x] <= r[x] and o[y] >= r[y] and (o[x] < r[x] or o[y] > r[y]) for o in rows)
        if not dominated:
            front.append(r["model"])
    return front


def plot_pareto(ax, rows: Sequence[dict[str, Any]], x: str = "latency b1 (ms)", y: str = "accuracy") -> None:
    """Accuracy against latency, one labelled point per model (error bars where there are seeds), the Pareto
    front as a line."""
    front = set(pareto_front(rows, x, y))
    for r in rows:
        err = r["± std"] if r["seeds"] > 1 else None
        ax.errorbar(r[x], r[y], yerr=err, fmt="o", color="C3" if r["model"] in front else "C0", capsize=3)
        ax.annotate(r["model"], (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    pts = sorted((r[x], r[y]) for r in rows if r["model"] in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color="C3", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(f"{x} (log scale)")
    ax.set_ylabel(y)
    ax.legend()


def teacher_speedup(rows: Sequence[dict[str, Any]], reference: str, max_drop: float = 0.01,
                    x: str = "latency b1 (ms)", score: str = "accuracy") -> dict[str, Any]:
    """The fastest row whose ``score`` is within ``max_drop`` of ``reference``'s, and its speed-up at batch 1.

    Choose on held-out examples (``score`` a column of held-out accuracy), not on the set that reports the
    chosen model's accuracy: the winner of a choice on the dev set has an optimistic dev score."""
    ref = next(r for r in rows if r["model"] == reference)
    ok = [r for r in rows if r["model"] != reference and r[score] >= ref[score] - max_drop]
    if not ok:
        return {"model": None, "speedup": float("nan")}
    best = min(ok, key=lambda r: r[x])
    return {"model": best["model"], "speedup": ref[x] / best[x], "accuracy_drop": ref[score] - best[score]}
