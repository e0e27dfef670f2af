"""``lmcourse classify``: label text with an exported model folder (ONNX Runtime, no PyTorch model code).

One text per input line, read from a file or stdin, classified in batches; a model exported for sentence pairs
(MRPC) takes ``first<TAB>second`` lines. Every line is checked before any is run, so bad input stops with one
message naming the line: an empty line, a pair line without exactly one tab, or a text longer than the model's
maximum length (it would be silently truncated otherwise; ``truncate=True`` allows it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from lmcourse.errors import ArgumentError


def read_lines(lines: Iterable[str]) -> list[str]:
    """The texts of ``lines`` (line endings removed); an empty or blank line is an error naming it."""
    texts = [line.rstrip("\r\n") for line in lines]
    if not texts:
        raise ArgumentError("no input: give one text per line (from a file or stdin)")
    for number, text in enumerate(texts, 1):
        if not text.strip():
            raise ArgumentError(f"line {number} is empty: give one non-empty text per line (remove blank lines)")
    return texts


def split_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """``first<TAB>second`` lines as pairs; a line without exactly one tab, or with an empty side, is an error."""
    pairs = []
    for number, text in enumerate(texts, 1):
        parts = text.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ArgumentError(f"line {number} is not a sentence pair: this model classifies pairs, so give "
                                "'first sentence<TAB>second sentence' on every line")
        pairs.append((parts[0], parts[1]))
    return pairs


def check_lengths(classifier, texts: list) -> None:
    """Refuse texts (or pairs) with more tokens than the model was exported for (the first one is named)."""
    pairs = [t for t in texts if isinstance(t, tuple)]
    ids = (classifier.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=False) if pairs
           else classifier.tokenizer(list(texts), truncation=False))["input_ids"]
    lengths = [len(i) for i in ids]
    for number, (text, n) in enumerate(zip(texts, lengths), 1):
        text = "\t".join(text) if isinstance(text, tuple) else text
        if n > classifier.max_length:
            raise ArgumentError(
                f"line {number} is {n} tokens long, more than the model's maximum of {classifier.max_length} "
                f"({text[:40]!r}...): shorten it, split it, or pass --truncate to cut it to the maximum")


def classify_texts(folder: str | os.PathLike, lines: Iterable[str], batch_size: int = 32, truncate: bool = False,
                   threads: int = 1) -> Iterator[dict[str, Any]]:
    """``{"text", "label", "score"}`` for every line, classified ``batch_size`` at a time."""
    from lmcourse.compression.onnx_export import OnnxClassifier

    if batch_size < 1:
        raise ArgumentError(f"--batch-size must be at least 1, got {batch_size}")
    classifier = OnnxClassifier(folder, threads=threads)  # a missing or incomplete folder: one clear error
    texts = read_lines(lines)
    inputs = split_pairs(texts) if classifier.pair else texts
    if not truncate:
        check_lengths(classifier, inputs)
    for start in range(0, len(texts), batch_size):
        chunk = inputs[start:start + batch_size]
        for text, pred in zip(texts[start:start + batch_size], classifier.predict(chunk)):
            yield {"text": text, **pred}
