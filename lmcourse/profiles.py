"""Run profiles: one name fixes data sizes, model sizes, epochs and batch sizes for a whole notebook.

- ``smoke``: CI — every notebook in at most 2 minutes on 2 CPU cores; numbers are only sanity checks.
- ``cpu``: meaningful results on a laptop CPU within minutes per experiment.
- ``gpu``: paper-size runs (full data, published recipes) on a CUDA GPU.

The default for headless runs comes from ``$LMCOURSE_PROFILE``; a papermill parameter overrides it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lmcourse.errors import UnknownNameError

PROFILE_ENV = "LMCOURSE_PROFILE"
DEFAULT_PROFILE = "cpu"


@dataclass(frozen=True)
class Profile:
    """Sizes shared by all notebooks. ``None`` for a sample count means "the whole split"."""

    name: str
    description: str
    # data
    max_train_samples: int | None
    max_eval_samples: int | None
    # fine-tuning recipe
    finetune_model: str
    num_epochs: float
    batch_size: int
    eval_batch_size: int
    learning_rate: float
    max_length: int
    # from-scratch models (pretraining, theory notebooks)
    hidden_size: int
    num_layers: int
    num_heads: int
    block_size: int
    max_steps: int
    # word embeddings
    embedding_dim: int
    embedding_epochs: int
    # anything notebook-specific
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **changes: Any) -> Profile:
        """A copy with some fields changed (unknown field names raise a clear error)."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise UnknownNameError(
                f"unknown profile field(s) {unknown}; known fields: {sorted(self.__dataclass_fields__)}"
            )
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI sanity run: tiny data and models, each notebook within 2 minutes on 2 CPU cores",
        max_train_samples=256,
        max_eval_samples=128,
        finetune_model="minilm-l6",
        num_epochs=1,
        batch_size=16,
        eval_batch_size=64,
        learning_rate=5e-5,
        max_length=64,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        block_size=64,
        max_steps=30,
        embedding_dim=32,
        embedding_epochs=1,
    ),
    "cpu": Profile(
        name="cpu",
        description="Laptop CPU: meaningful numbers in minutes per experiment",
        max_train_samples=8000,
        max_eval_samples=None,
        finetune_model="minilm-l6",
        num_epochs=3,
        batch_size=32,
        eval_batch_size=128,
        learning_rate=5e-5,
        max_length=128,
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        block_size=128,
        max_steps=2000,
        embedding_dim=100,
        embedding_epochs=5,
    ),
    "gpu": Profile(
        name="gpu",
        description="GPU: full data and the published recipes (3 epochs, lr 2e-5, batch 32, max length 128)",
        max_train_samples=None,
        max_eval_samples=None,
        finetune_model="bert-base-uncased",
        num_epochs=3,
        batch_size=32,
        eval_batch_size=256,
        learning_rate=2e-5,
        max_length=128,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        block_size=512,
        max_steps=100_000,
        embedding_dim=300,
        embedding_epochs=5,
    ),
}


def resolve_profile_name(name: str | None = None) -> str:
    """Explicit name, else ``$LMCOURSE_PROFILE``, else the laptop default ``cpu``."""
    chosen = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    chosen = str(chosen).strip().lower()
    if chosen not in PROFILES:
        raise UnknownNameError(
            f"unknown profile {chosen!r}; choose one of {sorted(PROFILES)} "
            f"(pass profile=... or set ${PROFILE_ENV})"
        )
    return chosen


def get_profile(name: str | Profile | None = None) -> Profile:
    """The :class:`Profile` for ``name`` (see :func:`resolve_profile_name` for the default)."""
    if isinstance(name, Profile):
        return name
    return PROFILES[resolve_profile_name(name)]
