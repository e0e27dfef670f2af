"""Seeding and the machine (CPU, cores, devices and what they support): what makes a run reproducible and its
timings interpretable. Which device and how many threads a run uses is decided once, by
:func:`lmcourse.context.resolve_context` (from :func:`resolve_device` here and
:func:`~lmcourse.context.resolve_threads`).

The bottom of the package's run machinery: :mod:`lmcourse.context` and :mod:`lmcourse.measurement` import
from here, this module imports neither."""

from __future__ import annotations

import os
import platform
import random
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from lmcourse.errors import ArgumentError

if TYPE_CHECKING:
    import torch

CPUINFO = "/proc/cpuinfo"
DEVICE_ENV = "LMCOURSE_DEVICE"


def seed_everything(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks torch for determinism."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def physical_cores() -> int:
    """Cores usable by this process (respects CPU affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@lru_cache(maxsize=4)
def cpuinfo(path: str = CPUINFO) -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    info: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break  # the end of the first processor's block
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """A human-readable CPU name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx512_bf16``, ``amx_bf16``, ...) from ``/proc/cpuinfo``; empty elsewhere."""
    return set(cpuinfo().get("flags", "").split())


# ---------------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``$LMCOURSE_DEVICE``, else this process's GPU (its ``LOCAL_RANK`` under a
    launcher), else Apple's ``mps``, else the CPU. A device that is not there is an error."""
    import torch

    chosen = device if device is not None else os.environ.get(DEVICE_ENV) or None
    if chosen is None:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(chosen)
    except (RuntimeError, TypeError):
        raise ArgumentError(f"unknown device {chosen!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"device {chosen!r} asked for, but torch sees no CUDA GPU here; use device='cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ArgumentError(f"device {chosen!r} asked for, but MPS is not available here; use device='cpu'")
    return dev


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matmuls are natively fast here (CUDA Ampere+, or a CPU with AVX512-BF16/AMX)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            flags = cpu_flags()
            return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def hardware_info(device: str | torch.device | None = None) -> dict[str, object]:
    """CPU model, cores, threads, device and GPU name: recorded with every measured result.

    ``device``: the run's device (a context's ``ctx.device``); default :func:`resolve_device`
    (``$LMCOURSE_DEVICE``, else the GPU, else the CPU).
    """
    import torch

    dev = torch.device(device) if device is not None else resolve_device()
    gpu = torch.cuda.get_device_name(dev if dev.type == "cuda" else 0) if torch.cuda.is_available() else None
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
        "gpu": gpu,
        "platform": platform.platform(),
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour changes results."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["lmcourse", "torch", "transformers", "datasets", "evaluate", "tokenizers", "accelerate",
             "peft", "numpy", "scikit-learn", "scipy", "gensim", "papermill"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
