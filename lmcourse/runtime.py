"""Seeding, device choice and CPU threads: the three things that make a run reproducible and fast."""

from __future__ import annotations

import os
import platform
import random

import numpy as np


def seed_everything(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks torch for determinism."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def choose_device(preferred: str | None = None) -> str:
    """``preferred`` if given (or ``$LMCOURSE_DEVICE``), else cuda → mps → cpu."""
    import torch

    preferred = preferred or os.environ.get("LMCOURSE_DEVICE")
    if preferred:
        return preferred
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def physical_cores() -> int:
    """Cores usable by this process (respects CPU affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default ``$LMCOURSE_THREADS`` or all usable cores); returns it."""
    import torch

    env = os.environ.get("LMCOURSE_THREADS")
    n = threads or (int(env) if env else physical_cores())
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def cpu_model() -> str:
    """A human-readable CPU name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info() -> dict[str, object]:
    """CPU model, cores, threads, device and GPU name: recorded with every measured result."""
    import torch

    device = choose_device()
    info: dict[str, object] = {
        "cpu_model": cpu_model(),
        "cpu_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }
    return info


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
