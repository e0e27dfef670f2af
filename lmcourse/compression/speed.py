"""Size and speed of a compressed model, measured the same way for PyTorch and ONNX Runtime models.

Latency is per example at batch 1, throughput in examples/s at batch 32; each is the median of repeated
timings after warm-up runs, on inputs of a fixed token length, with the thread count stated. Size on disk is
what the model's weights take when saved (safetensors, or the ``.onnx`` file; a quantized PyTorch model is
saved with ``torch.save``, the only format its packed int8 weights have).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcourse.errors import ArgumentError


def count_parameters(model: nn.Module) -> int:
    """Parameters of a (possibly quantized) PyTorch model: float parameters plus the weights packed inside
    quantized Linear layers and int8 weight buffers, each counted once."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if hasattr(module, "_packed_params") and hasattr(module, "weight") and callable(module.weight):
            weight = module.weight()
            total += weight.numel()
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            total += 0 if bias is None else bias.numel()
        elif hasattr(module, "codes") and isinstance(module.codes, torch.Tensor):
            total += module.codes.numel()
    return int(total)


def nonzero_parameters(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what unstructured pruning removes)."""
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def size_on_disk(model_or_path: nn.Module | str | os.PathLike) -> int:
    """Bytes of a saved model: a file's size, a folder's ``.onnx``/``.safetensors`` files, or a PyTorch model
    serialised (safetensors for plain float models, ``torch.save`` of the state dict for quantized ones)."""
    if isinstance(model_or_path, str | os.PathLike):
        path = Path(model_or_path)
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".onnx", ".safetensors", ".data"))
    state = model_or_path.state_dict()
    if all(isinstance(v, torch.Tensor) and not v.is_quantized for v in state.values()):
        from safetensors.torch import save

        seen: dict[int, str] = {}
        unique = {}
        for k, v in state.items():
            if v.data_ptr() not in seen:  # tied weights are stored once
                seen[v.data_ptr()] = k
                unique[k] = v.contiguous()
        return len(save(unique))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def median_seconds(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def alternating_ms(runs: dict[str, Callable[[], Any]], rounds: int = 3, repeats: int = 20,
                   warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds per call of each ``runs[name]()``, timed in ``rounds`` rounds that take every run in turn
    (one :func:`median_seconds` of ``repeats`` calls each), so that a slow moment of the machine hits all of
    them rather than picking a winner. Returns every round's median, per name, in round order: the rounds of
    two runs are paired, for :func:`lmcourse.spread.compare` with ``paired=True``."""
    if rounds < 1:
        raise ArgumentError(f"rounds must be >= 1, got {rounds}")
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            out[name].append(1000.0 * median_seconds(fn, repeats=repeats, warmup=warmup))
    return out


@contextlib.contextmanager
def torch_threads(threads: int):
    """PyTorch's intra-op thread count set to ``threads`` inside the block and restored after it, even on an
    error: timings run at a stated thread count while training keeps the run context's."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ArgumentError(f"threads must be an integer >= 1, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def fixed_inputs(tokenizer, length: int, batch: int) -> dict[str, np.ndarray]:
    """A batch of ``batch`` real-text inputs of exactly ``length`` tokens (timings must not depend on which
    sentences happened to be picked)."""
    text = " ".join(["the movie was surprisingly good and the acting was great"] * (length // 4 + 2))
    enc = tokenizer([text] * batch, truncation=True, max_length=length, padding="max_length", return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


def time_model(run: Callable[[dict[str, np.ndarray]], Any], tokenizer, *, length: int = 64, repeats: int = 20,
               batch_sizes: tuple[int, int] = (1, 32)) -> dict[str, float]:
    """``latency_ms`` (batch 1, per example) and ``throughput`` (examples/s at the larger batch) of ``run``,
    which takes numpy inputs (wrap a PyTorch model with :func:`torch_runner`)."""
    small, large = (fixed_inputs(tokenizer, length, b) for b in batch_sizes)
    latency = median_seconds(lambda: run(small), repeats=repeats)
    batch_time = median_seconds(lambda: run(large), repeats=max(3, repeats // 4), warmup=1)
    return {"latency_ms": 1000.0 * latency / batch_sizes[0], "throughput": batch_sizes[1] / batch_time,
            "threads": torch.get_num_threads(), "length": length}


def torch_runner(model: nn.Module) -> Callable[[dict[str, np.ndarray]], Any]:
    """``run(inputs)`` for :func:`time_model`: the model in eval mode under ``no_grad`` on the CPU."""
    model = model.eval()

    def run(inputs: dict[str, np.ndarray]):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits

    return run
