"""Seeding and a description of the machine (CPU, cores, device): what makes a run reproducible and its
timings interpretable. Which device and how many threads a run uses is decided once, by
:func:`lmcourse.context.resolve_context` (:func:`~lmcourse.context.resolve_device`,
:func:`~lmcourse.context.resolve_threads`)."""

from __future__ import annotations

import os
import platform
import random
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

CPUINFO = "/proc/cpuinfo"


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


def hardware_info(device: str | torch.device | None = None) -> dict[str, object]:
    """CPU model, cores, threads, device and GPU name: recorded with every measured result.

    ``device``: the run's device (a context's ``ctx.device``); default
    :func:`lmcourse.context.resolve_device` (``$LMCOURSE_DEVICE``, else the GPU, else the CPU).
    """
    import torch

    from lmcourse.context import resolve_device

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
