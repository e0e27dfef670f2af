"""Measuring speed: the machine's peak FLOP/s, throughput of training, peak memory, bf16 support.

MFU needs a denominator. Vendor peak numbers do not exist for "a laptop CPU", so the course measures
the peak with a matmul microbenchmark (large square GEMMs, the best of several repetitions) and records
it with every result, so that an MFU is always quoted against a number measured on the same machine.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

_PEAK_CACHE: dict[tuple[str, str, int], float] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no mps in CI
        torch.mps.synchronize()


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matmuls are natively fast here (CUDA Ampere+, or a CPU with AVX512-BF16/AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            flags = _cpu_flags()
            return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def measure_peak_flops(dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                       size: int | None = None, repeats: int = 5, use_cache: bool = True) -> float:
    """Peak matmul FLOP/s measured here: best of ``repeats`` timings of an ``n x n @ n x n`` GEMM.

    ``2 n^3`` FLOPs a product. ``size`` defaults to 1024 on CPU (a fraction of a second) and 8192 on
    GPU. The result is cached per (device, dtype, threads) for the process.
    """
    from lmcourse.runtime import choose_device

    device = torch.device(device) if device is not None else torch.device(choose_device())
    n = size or (8192 if device.type == "cuda" else 1024)
    key = (str(device), str(dtype), torch.get_num_threads())
    if use_cache and size is None and key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    for _ in range(2):  # warm-up: thread pools, kernels, caches
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    flops = 2.0 * n**3 / best
    if use_cache and size is None:
        _PEAK_CACHE[key] = flops
    return flops


def peak_memory_bytes(device: str | torch.device = "cpu") -> int:
    """Peak memory of this process: CUDA max allocated on GPU, max resident set size on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def reset_peak_memory(device: str | torch.device = "cpu") -> None:
    """Reset the CUDA peak counter (CPU max RSS cannot be reset; compare deltas there)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@dataclass
class Throughput:
    """Counts tokens and wall time of training steps; ``tokens_per_second`` and ``mfu`` from them."""

    flops_per_token: float | None = None
    peak_flops: float | None = None
    tokens: int = 0
    seconds: float = 0.0
    steps: int = 0
    _t0: float | None = field(default=None, repr=False)

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, tokens: int) -> None:
        if self._t0 is None:
            raise RuntimeError("Throughput.stop() called without start()")
        self.seconds += time.perf_counter() - self._t0
        self.tokens += int(tokens)
        self.steps += 1
        self._t0 = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def mfu(self) -> float | None:
        if not self.flops_per_token or not self.peak_flops:
            return None
        return self.tokens_per_second * self.flops_per_token / self.peak_flops

    def summary(self) -> dict[str, Any]:
        return {"train_tokens": self.tokens, "train_seconds": self.seconds,
                "train_tokens_per_s": self.tokens_per_second, "flops_per_token": self.flops_per_token,
                "peak_flops": self.peak_flops, "mfu": self.mfu}


def cpu_threads() -> int:
    """Threads torch uses for intra-op parallelism (what the peak was measured with)."""
    return torch.get_num_threads() or os.cpu_count() or 1
