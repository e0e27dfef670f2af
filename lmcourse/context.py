"""The run context: profile, seed, device, dtype policy, threads and run folder, resolved once.

Every chapter, training loop and evaluator takes one :class:`RunContext` instead of reading the
environment or guessing a device. It is made in exactly one place per run:

- in a notebook by :func:`lmcourse.notebook.setup_notebook` (from the papermill parameters);
- from Python by :func:`resolve_context`, which :func:`lmcourse.finetuning.finetune` and
  :func:`lmcourse.pretraining.train` call themselves when no context is passed;
- on the command line by ``lmcourse`` from its flags.

The environment only supplies *defaults* (``$LMCOURSE_PROFILE``, ``$LMCOURSE_DEVICE``,
``$LMCOURSE_THREADS``, ``$LMCOURSE_RUN_DIR``: what papermill and CI set); helpers never talk to each
other through it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lmcourse import runtime
from lmcourse.errors import ArgumentError
from lmcourse.profiles import Profile, get_profile
from lmcourse.runtime import DEVICE_ENV, resolve_device
from lmcourse.tracking import RUN_DIR_ENV

__all__ = ["DEVICE_ENV", "THREADS_ENV", "RunContext", "resolve_context", "resolve_device", "resolve_threads"]

THREADS_ENV = "LMCOURSE_THREADS"


@dataclass(frozen=True)
class RunContext:
    """What fixes a run: its sizes (``profile``), its randomness (``seed``), where it computes
    (``device``), in which precision (``bf16``: autocast to bfloat16, only where the device supports it),
    with how many CPU threads, and where it writes (``run_dir``, ``None`` when run interactively)."""

    profile: Profile
    seed: int
    device: torch.device
    bf16: bool
    threads: int
    run_dir: Path | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The matmul dtype of training under this context's autocast policy (what MFU's peak is measured in)."""
        return torch.bfloat16 if self.bf16 else torch.float32

    def autocast(self, enabled: bool | None = None) -> contextlib.AbstractContextManager:
        """``torch.autocast`` on this device in bf16 (``enabled`` overrides the context's policy)."""
        on = self.bf16 if enabled is None else bool(enabled)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    @contextlib.contextmanager
    def seeded(self, offset: int = 0) -> Iterator[None]:
        """Run the block with torch's global RNG seeded by ``seed + offset`` and restore the RNG afterwards:
        model initialisation is a function of the seed, and nothing outside the block is disturbed."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + offset)
            yield

    def generator(self, offset: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
        """A ``torch.Generator`` seeded by ``seed + offset``; on the CPU by default, so that data order and
        masking are the same on every device (pass ``device=ctx.device`` for sampling on the device)."""
        return torch.Generator(device=device).manual_seed(self.seed + offset)

    def with_changes(self, **changes: Any) -> RunContext:
        """A copy with some fields changed; ``profile`` may be a name, ``device`` a string."""
        if "profile" in changes:
            changes["profile"] = get_profile(changes["profile"])
        if "device" in changes:
            changes["device"] = torch.device(changes["device"])
        return replace(self, **changes)

    def apply(self) -> RunContext:
        """Seed Python, NumPy and torch with ``seed`` and set torch's CPU threads; returns ``self``."""
        runtime.seed_everything(self.seed)
        torch.set_num_threads(self.threads)
        return self

    def describe(self) -> str:
        precision = "bf16 autocast" if self.bf16 else "fp32"
        return (f"profile={self.profile.name} ({self.profile.description}); seed={self.seed}; device={self.device}; "
                f"precision={precision}; torch threads={self.threads}")

    def to_dict(self) -> dict[str, Any]:
        """The context as plain values (recorded with results)."""
        return {"profile": self.profile.name, "seed": self.seed, "device": str(self.device), "bf16": self.bf16,
                "threads": self.threads, "run_dir": str(self.run_dir) if self.run_dir else None}


def resolve_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``$LMCOURSE_THREADS``, else every core this process may use."""
    env = os.environ.get(THREADS_ENV)
    n = threads or (int(env) if env else runtime.physical_cores())
    if n < 1:
        raise ArgumentError(f"threads must be >= 1, got {n}")
    return int(n)


def resolve_context(profile: str | Profile | None = None, seed: int = 0, device: str | torch.device | None = None,
                    bf16: bool | None = None, threads: int | None = None,
                    run_dir: str | os.PathLike | None = None) -> RunContext:
    """Resolve a :class:`RunContext` (no side effects; :meth:`RunContext.apply` seeds and sets threads).

    Each argument beats its environment default. ``bf16=None`` means "where the device supports it";
    ``bf16=True`` on a device without bf16 is an error.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentError(f"seed must be an integer, got {seed!r}")
    dev = resolve_device(device)
    supported = runtime.bf16_supported(dev)
    if bf16 and not supported:
        raise ArgumentError(f"bf16=True but {dev} does not support bf16 matmuls; pass bf16=False or None")
    folder = run_dir if run_dir is not None else os.environ.get(RUN_DIR_ENV) or None
    return RunContext(profile=get_profile(profile), seed=int(seed), device=dev,
                      bf16=supported if bf16 is None else bool(bf16), threads=resolve_threads(threads),
                      run_dir=Path(folder) if folder else None)
