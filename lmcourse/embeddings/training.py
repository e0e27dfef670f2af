"""What the word-vector training loops share: the result of a run and its progress bar."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TrainResult:
    """What a training run produced: vectors, per-epoch mean loss and honest throughput."""

    vectors: np.ndarray
    losses: list[float]
    seconds: float
    raw_words: int  # corpus tokens per epoch before subsampling, x epochs = words processed
    epochs: int
    pairs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def words_per_second(self) -> float:
        return self.raw_words * self.epochs / max(self.seconds, 1e-9)


def progress_bar(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not show, leave=False, mininterval=1.0)
