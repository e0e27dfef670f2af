"""Deployment: export a classifier to ONNX, run it with ONNX Runtime, quantize it to int8 there.

An exported *model folder* holds ``model.onnx``, the tokenizer files and ``lmcourse_onnx.json`` (labels,
input names, maximum length): everything :class:`OnnxClassifier` (and ``lmcourse classify``) needs, with
no PyTorch model code. The export uses PyTorch's exporter (``torch.onnx.export``, the dynamo path, which
needs ``onnxscript``) with a dynamic batch and sequence length.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcourse.compression.evaluation import Text, encode_texts
from lmcourse.errors import ArgumentError, DataUnavailableError

MODEL_FILE = "model.onnx"
META_FILE = "lmcourse_onnx.json"


class _LogitsOnly(nn.Module):
    """The classifier as a function of plain tensors returning logits (what the exporter traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def export_onnx(model: nn.Module, tokenizer, folder: str | os.PathLike, max_length: int = 128,
                opset: int = 18, pair: bool = False) -> Path:
    """Export ``model`` (a sequence classifier) and its tokenizer to ``folder``; returns the ``.onnx`` path.

    ``pair=True`` records that the model classifies sentence pairs (MRPC, RTE): :class:`OnnxClassifier` and
    ``lmcourse classify`` then take ``(first, second)`` inputs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    sample = tokenizer(["an example sentence", "a second, somewhat longer example sentence"], padding=True,
                       return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise ArgumentError(f"export_onnx needs a tokenizer that returns input_ids and attention_mask, got {names}")
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1, max=max(2, max_length))
    path = folder / MODEL_FILE
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed", registry chatter
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not the reader's business
        torch.onnx.export(_LogitsOnly(model), tuple(sample[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], opset_version=opset, dynamo=True,
                          dynamic_shapes={n: {0: batch, 1: seq} for n in names}, external_data=False,
                          verbose=False)
    onnx_log.setLevel(level)
    tokenizer.save_pretrained(folder)
    id2label = {int(k): str(v) for k, v in getattr(model.config, "id2label", {}).items()}
    meta = {"input_names": names, "max_length": int(max_length), "pair": bool(pair),
            "labels": [id2label.get(i, str(i)) for i in range(int(model.config.num_labels))]}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path


def quantize_onnx_int8(folder: str | os.PathLike, out_folder: str | os.PathLike, per_channel: bool = False) -> Path:
    """ONNX Runtime's dynamic int8 quantization (``onnxruntime.quantization.quantize_dynamic``: int8 weights,
    activations quantized at run time) of an exported folder into ``out_folder`` (tokenizer and metadata
    copied). ``per_channel`` gives every output channel of a weight its own scale (as
    :func:`~lmcourse.compression.quantize_per_channel` does) instead of one per tensor: the same int8 kernels,
    less rounding error where a few rows have large weights."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder, out_folder = Path(folder), Path(out_folder)
    _check_folder(folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and f.name != MODEL_FILE:
            shutil.copy2(f, out_folder / f.name)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider to run pre-processing": shape inference, which export already did
    try:
        quantize_dynamic(str(folder / MODEL_FILE), str(out_folder / MODEL_FILE), weight_type=QuantType.QInt8,
                         per_channel=per_channel)
    finally:
        root.setLevel(level)
    return out_folder / MODEL_FILE


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise DataUnavailableError(f"model folder {folder} does not exist: export one with "
                                   "lmcourse.compression.export_onnx(model, tokenizer, folder)")
    missing = [f for f in (MODEL_FILE, META_FILE) if not (folder / f).is_file()]
    if missing:
        raise DataUnavailableError(f"{folder} is not an exported lmcourse model folder: {', '.join(missing)} "
                                   "missing (lmcourse.compression.export_onnx writes them)")


def _session(path: Path, threads: int, disabled_optimizers: Sequence[str] = (), optimized_path: Path | None = None):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, the named graph
    optimizations (fusions) switched off, and optionally the optimized graph written to ``optimized_path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT warns about every fusion it could not apply; not the reader's business
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


def optimized_op_counts(folder: str | os.PathLike, disabled_optimizers: Sequence[str] = ()) -> Counter:
    """How many nodes of each operator type the graph ONNX Runtime actually runs holds, after its own graph
    optimizations (fusions such as ``SkipLayerNormFusion`` merge the residual add and LayerNorm into one
    ``SkipLayerNormalization`` node), with ``disabled_optimizers`` switched off.

    ONNX Runtime ignores optimizer names it does not know, silently: comparing counts is how to see that a
    name took effect."""
    import onnx

    folder = Path(folder)
    _check_folder(folder)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        _session(folder / MODEL_FILE, 1, disabled_optimizers, optimized_path=out)
        graph = onnx.load(str(out)).graph
        return Counter(node.op_type for node in graph.node)


class OnnxClassifier:
    """An exported model folder run with ONNX Runtime on the CPU: tokenise, run, softmax.

    ``threads``: ONNX Runtime's intra-op threads (default 1, like the course's timings).
    ``disabled_optimizers``: ONNX Runtime graph optimizations to switch off by name, for example
    ``("SkipLayerNormFusion",)``; a fusion is not always faster on every CPU and thread count, so the notebook
    measures both (:func:`optimized_op_counts` shows what a name changed)."""

    def __init__(self, folder: str | os.PathLike, threads: int = 1, disabled_optimizers: Sequence[str] = ()):
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        _check_folder(self.folder)
        self.meta: dict[str, Any] = json.loads((self.folder / META_FILE).read_text(encoding="utf-8"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.disabled_optimizers = tuple(disabled_optimizers)
        self.session = _session(self.folder / MODEL_FILE, threads, self.disabled_optimizers)

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def max_length(self) -> int:
        return int(self.meta["max_length"])

    @property
    def pair(self) -> bool:
        """Whether the model takes sentence pairs (``(first, second)`` inputs)."""
        return bool(self.meta.get("pair", False))

    def encode(self, texts: Sequence[Text], truncation: bool = True) -> dict[str, np.ndarray]:
        """Tokenise sentences, or ``(first, second)`` pairs for a pair model, into the exported inputs."""
        enc = encode_texts(self.tokenizer, texts, self.max_length, return_tensors="np", truncation=truncation)
        return {n: enc[n].astype(np.int64) for n in self.meta["input_names"]}

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for already tokenised inputs (``int64`` arrays named as at export)."""
        return self.session.run(["logits"], inputs)[0]

    def logits(self, texts: Sequence[Text]) -> np.ndarray:
        if not texts:
            raise ArgumentError("no texts to classify")
        return self.run(self.encode(texts))

    def predict(self, texts: Sequence[Text]) -> list[dict[str, Any]]:
        """``[{"label": ..., "score": p}, ...]``: the most probable label and its softmax probability."""
        logits = self.logits(texts)
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        best = probs.argmax(-1)
        return [{"label": self.labels[int(i)], "score": float(p[i])} for i, p in zip(best, probs)]
