"""The word-embedding chapter's data: its sizes per profile, the corpus (wikitext-2 plus GLUE training
sentences, tokenised), the vocabulary and the corpus encoded as flat id arrays."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcourse.errors import ArgumentError, LmcourseError, UnknownNameError

if TYPE_CHECKING:
    from lmcourse.profiles import Profile


@dataclass(frozen=True)
class EmbeddingSizes:
    """Data and training sizes of the word-embedding chapter for one profile (its ``embeddings`` section:
    :meth:`from_profile`); fields a profile leaves out keep word2vec's / GloVe's defaults."""

    wikitext_splits: tuple[str, ...]  # load_corpus("wikitext-2", split) for each
    glue_tasks: tuple[str, ...]  # training sentences of these GLUE tasks are added to the corpus
    dim: int
    epochs: int
    min_count: int = 5
    max_vocab: int | None = None
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    batch_size: int = 4096
    lr: float = 0.025
    glove_window: int = 10
    glove_epochs: int = 20
    glove_batch_size: int = 16384
    glove_lr: float = 0.05
    x_max: float = 100.0
    alpha: float = 0.75
    seeds: tuple[int, ...] = (0,)  # the comparison of the two skip-grams runs once per seed (mean ± std)

    @classmethod
    def from_profile(cls, profile: str | Profile | None = None) -> EmbeddingSizes:
        """The sizes of a profile's ``embeddings`` section (a :class:`~lmcourse.profiles.Profile` or its name;
        ``None``: ``$LMCOURSE_PROFILE``). Unknown names and unknown section keys are clear errors."""
        from lmcourse.profiles import get_profile

        section = get_profile(profile).embeddings
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ArgumentError(f"unknown word-embedding size(s) {unknown} in the profile; known: "
                            f"{sorted(cls.__dataclass_fields__)}")
        return cls(**section)


_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; punctuation and wikitext's ``<unk>`` markers are dropped."""
    return _TOKEN.findall(text.lower().replace("<unk>", " "))


def load_sentences(sizes: EmbeddingSizes, source: Any = None) -> list[list[str]]:
    """Tokenised non-empty lines of wikitext-2 (the splits in ``sizes``) plus GLUE training sentences."""
    from lmcourse.data import get_task, load_corpus, load_glue

    sentences: list[list[str]] = []
    for split in sizes.wikitext_splits:
        for line in load_corpus("wikitext-2", split, source=source)["text"]:
            toks = tokenize(line)
            if len(toks) > 1:
                sentences.append(toks)
    for task in sizes.glue_tasks:
        ds = load_glue(task, "train")
        for col in get_task(task).input_columns:
            sentences.extend(t for t in (tokenize(x) for x in ds[col]) if len(t) > 1)
    return sentences


@dataclass
class Vocab:
    """Words sorted by descending count (ties: first occurrence), their counts and an index."""

    words: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        """The index of ``word``; a clear error for a word that is not in the vocabulary."""
        try:
            return self.index[word]
        except KeyError:
            raise UnknownNameError(f"{word!r} is not in the vocabulary ({len(self)} words); "
                                   "check `word in vocab` first") from None

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; unknown words are dropped, as word2vec does (they never enter a window)."""
        idx = self.index
        return [idx[t] for t in tokens if t in idx]


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 5, max_size: int | None = None) -> Vocab:
    """Count words; keep those seen ``min_count`` times, most frequent first, at most ``max_size`` of them."""
    if min_count < 1:
        raise ArgumentError(f"min_count must be >= 1, got {min_count}")
    counter: Counter[str] = Counter()
    for s in sentences:
        counter.update(s)
    if not counter:
        raise LmcourseError("build_vocab: the corpus is empty (no tokens); check the data loading/tokenizer")
    # Counter keeps first-occurrence order, and sorted() is stable: ties stay in order of appearance
    items = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: -wc[1])
    if max_size is not None:
        items = items[:max_size]
    if not items:
        raise LmcourseError(f"build_vocab: no word occurs at least min_count={min_count} times "
                            f"({len(counter)} distinct words); lower min_count or use more text")
    return Vocab([w for w, _ in items], np.array([c for _, c in items], dtype=np.int64))


@dataclass
class EncodedCorpus:
    """All sentences as one id array plus, for every token, the sentence it belongs to."""

    ids: np.ndarray  # int64 [n_tokens]
    sentence: np.ndarray  # int64 [n_tokens], non-decreasing
    raw_words: int  # tokens before dropping out-of-vocabulary words (what word2vec counts as "words")


def encode_corpus(sentences: Sequence[Sequence[str]], vocab: Vocab) -> EncodedCorpus:
    """Encode every sentence (OOV dropped) into flat arrays; windows never cross sentence boundaries."""
    ids: list[int] = []
    sent: list[int] = []
    raw = 0
    for k, s in enumerate(sentences):
        raw += len(s)
        enc = vocab.encode(s)
        ids.extend(enc)
        sent.extend([k] * len(enc))
    if not ids:
        raise LmcourseError("encode_corpus: no in-vocabulary tokens; is the corpus empty?")
    return EncodedCorpus(np.asarray(ids, dtype=np.int64), np.asarray(sent, dtype=np.int64), raw)
