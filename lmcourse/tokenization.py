"""Tokenizers: train BERT-style WordPiece and GPT-2-style byte-level BPE, compare them, and BPE by hand.

A tokenizer is a pipeline (the ``tokenizers`` library names the stages): *normaliser* (Unicode clean-up,
lower-casing, accent stripping) → *pre-tokeniser* (split into words; byte-level BPE maps every byte to a
printable character first) → *model* (WordPiece or BPE: a word into sub-word units) → *post-processor*
(special tokens such as ``[CLS] a [SEP] b [SEP]`` and ``token_type_ids``) → *decoder* (ids back to text).

The from-scratch part, :func:`bpe_learn`, is the BPE training loop of Sennrich et al. (2016) written with
plain Python counters; :func:`hf_bpe_merges` trains the Rust ``BpeTrainer`` on the same words so that a
test can check that both learn the same merges in the same order, including how ties are broken.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from lmcourse.errors import ArgumentError

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT_EOS = "<|endoftext|>"
# vocabulary sizes per profile live in lmcourse.profiles (``profile.tokenizers``: bert-base-uncased has
# 30 522 entries, GPT-2 50 257)


# ------------------------------------------------------------------------------------------ corpora
def corpus_lines(names: Sequence[tuple[str, str]] = (("wikitext-2", "validation"), ("wikitext-2", "test"),
                                                      ("tiny-shakespeare", "train")),
                 max_lines: int | None = None, skip_empty: bool = True) -> list[str]:
    """Lines of several corpora (``(name, split)`` pairs) from :func:`lmcourse.data.load_corpus`.

    Wikitext headings (``= Title =``) are kept: they are text too. Empty lines are dropped by default.
    """
    from lmcourse.data import load_corpus

    out: list[str] = []
    for name, split in names:
        ds = load_corpus(name, split=split)
        for line in ds["text"]:
            line = line.strip()
            if skip_empty and not line:
                continue
            out.append(line)
            if max_lines is not None and len(out) >= max_lines:
                return out
    return out


# ------------------------------------------------------------------------------------ trained tokenizers
def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                    lowercase: bool = True):
    """A BERT-style uncased WordPiece tokenizer trained on ``texts``, wrapped for ``transformers``.

    Normaliser ``BertNormalizer`` (clean text, CJK spacing, strip accents, lowercase), ``BertPreTokenizer``
    (whitespace and punctuation), WordPiece with the ``##`` continuation prefix, and a template
    post-processor ``[CLS] $A [SEP]`` / ``[CLS] $A [SEP] $B [SEP]`` with type ids 0 for A and 1 for B.
    The vocabulary is learnt as ``tokenizers``' ``WordPieceTrainer`` learns it, by BPE merges
    (:func:`wordpiece_vocab`), except that the same text always gives the same vocabulary and ids.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=lowercase, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)))
    tok.model = models.WordPiece(vocab=wordpiece_vocab(words, vocab_size, min_frequency), unk_token="[UNK]",
                                 continuing_subword_prefix="##", max_input_chars_per_word=100)
    tok.add_special_tokens(list(BERT_SPECIAL_TOKENS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_max_length=512,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


_INNER = 0xF0000  # Unicode's supplementary private use area A: stand-ins for the characters inside words


def wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, min_frequency: int = 2,
                    special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS) -> dict[str, int]:
    """A WordPiece vocabulary (token -> id) learnt from pre-tokenised word counts by BPE merges, the way
    ``tokenizers``' ``WordPieceTrainer`` learns one: the special tokens, every character, a character inside
    a word as its own ``##`` unit, then the most frequent adjacent pair merged again and again up to
    ``vocab_size``.

    That trainer numbers its ``##`` units in hash-map order and breaks ties between equally frequent pairs by
    those numbers, so two trainings on one text gave different ids and, at the ties, different tokens
    (huggingface/tokenizers issue #1794): a scratch encoder's numbers changed from run to run. Here every
    character inside a word is written as a stand-in character of its own, so the ``##`` units are ordinary
    characters, which ``BpeTrainer`` numbers in sorted order: the same counts give the same merges and ids
    every time. The stand-ins become ``##`` tokens again at the end."""
    from tokenizers import trainers

    if any(ord(c) >= _INNER for w in word_counts for c in w):
        raise ArgumentError("the text holds private-use characters (U+F0000 and above), which wordpiece_vocab "
                            "uses to mark characters inside words; remove them from the text first")
    inner = sorted({c for w in word_counts for c in w[1:]})
    stand_in = {c: chr(_INNER + i) for i, c in enumerate(inner)}
    back = {v: k for k, v in stand_in.items()}

    marked = {word[0] + "".join(stand_in[c] for c in word[1:]): count for word, count in word_counts.items()}
    bpe = _bpe_trained_on(marked, trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                                      special_tokens=list(special_tokens), show_progress=False))

    def unmarked(token: str) -> str:
        if token in special_tokens:
            return token
        if token[0] in back:  # a piece from inside a word: all of its characters are stand-ins
            return "##" + "".join(back[c] for c in token)
        return token[0] + "".join(back[c] for c in token[1:])

    return {unmarked(t): i for t, i in bpe.get_vocab(with_added_tokens=False).items()}


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2):
    """A GPT-2-style byte-level BPE tokenizer: no normaliser, no unknown token, lossless decoding.

    The ``ByteLevel`` pre-tokeniser splits with GPT-2's regex and maps each UTF-8 byte to one of 256
    printable characters (a space becomes ``Ġ``); the initial alphabet is all 256 of them, so every
    string can be encoded. ``<|endoftext|>`` separates documents and doubles as padding.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[GPT_EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=GPT_EOS, eos_token=GPT_EOS, unk_token=GPT_EOS,
                                   pad_token=GPT_EOS, model_max_length=1024,
                                   model_input_names=["input_ids", "attention_mask"])


class CharTokenizer:
    """Character-level tokenizer (nanoGPT's shakespeare_char): one id per distinct character, sorted."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        missing = sorted(set(text) - set(self.stoi))
        if missing:
            raise ArgumentError(f"characters {missing[:10]} are not in the character vocabulary; build it on this text")
        return [self.stoi[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


# ----------------------------------------------------------------------------------- comparing tokenizers
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def words_of(text: str) -> list[str]:
    """Words and punctuation marks (the unit of fertility): ``\\w+`` runs and single other symbols."""
    return _WORD.findall(text)


def tokenize_words(tokenizer, words: Sequence[str]) -> list[list[str]]:
    """Sub-word tokens of each word alone (no special tokens)."""
    enc = tokenizer(list(words), add_special_tokens=False)
    return [tokenizer.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]


def tokenizer_stats(tokenizer, texts: Sequence[str]) -> dict[str, float]:
    """Fertility (tokens per word), unknown-token rate, share of words split into >1 token, on ``texts``."""
    enc = tokenizer(list(texts), add_special_tokens=False)
    n_tokens = sum(len(ids) for ids in enc["input_ids"])
    n_words = sum(len(words_of(t)) for t in texts)
    unk = tokenizer.unk_token_id
    n_unk = sum(sum(1 for i in ids if i == unk) for ids in enc["input_ids"]) if unk is not None else 0
    words = [w for t in texts for w in words_of(t)]
    pieces = tokenize_words(tokenizer, words)
    split = sum(1 for p in pieces if len(p) > 1)
    return {"fertility": n_tokens / max(n_words, 1), "unk_rate": n_unk / max(n_tokens, 1),
            "split_word_rate": split / max(len(words), 1), "tokens": n_tokens, "words": n_words,
            "vocab_size": len(tokenizer)}


def vocab_overlap(tok_a, tok_b) -> dict[str, float]:
    """How many vocabulary entries two tokenizers share (exact strings, ``##`` prefixes included)."""
    va, vb = set(tok_a.get_vocab()), set(tok_b.get_vocab())
    inter = va & vb
    return {"size_a": len(va), "size_b": len(vb), "shared": len(inter), "jaccard": len(inter) / len(va | vb),
            "share_of_a_in_b": len(inter) / len(va), "share_of_b_in_a": len(inter) / len(vb)}


def rare_words(texts: Sequence[str], reference_counts: Counter, k: int = 10, min_len: int = 6) -> list[str]:
    """``k`` alphabetic words of ``texts`` that are rarest in ``reference_counts`` (ties alphabetical)."""
    cand = sorted({w.lower() for t in texts for w in words_of(t) if w.isalpha() and len(w) >= min_len})
    return sorted(cand, key=lambda w: (reference_counts.get(w, 0), w))[:k]


# -------------------------------------------------------------------------------- BPE merges by hand
Pair = tuple[str, str]


@dataclass
class BpeState:
    """Words as tuples of symbols with their corpus counts, and the symbol ids that break ties."""

    words: dict[tuple[str, ...], int]
    ids: dict[str, int]


def initial_state(word_counts: dict[str, int], special_tokens: Sequence[str] = ()) -> BpeState:
    """Split every word into characters; ids: special tokens first, then characters by code point.

    That id order is the one ``tokenizers``' BpeTrainer uses, and ties between equally frequent pairs
    are broken by the ids (see :func:`best_pair`), so it matters.
    """
    words = {tuple(w): c for w, c in word_counts.items() if w}
    ids = {t: i for i, t in enumerate(special_tokens)}
    for ch in sorted({ch for w in words for ch in w}, key=ord):
        ids.setdefault(ch, len(ids))
    return BpeState(words, ids)


def count_pairs(words: dict[tuple[str, ...], int]) -> Counter:
    """How often each adjacent symbol pair occurs, weighted by word counts ("aaa" has the pair (a, a) twice)."""
    pairs: Counter = Counter()
    for symbols, count in words.items():
        for a, b in pairwise(symbols):
            pairs[a, b] += count
    return pairs


def best_pair(pairs: Counter, ids: dict[str, int]) -> Pair | None:
    """The most frequent pair; ties go to the smallest ``(id(left), id(right))``.

    This is the rule of ``tokenizers``' BpeTrainer (its priority queue is a max-heap by count and a
    min-heap by the pair of ids). A merged token gets the next free id, so older symbols win ties.
    """
    if not pairs:
        return None
    return min(pairs, key=lambda p: (-pairs[p], ids[p[0]], ids[p[1]]))


def merge_pair(words: dict[tuple[str, ...], int], pair: Pair) -> dict[tuple[str, ...], int]:
    """Replace every occurrence of ``pair`` by the joined symbol, scanning each word left to right."""
    a, b = pair
    joined = a + b
    out: dict[tuple[str, ...], int] = {}
    for symbols, count in words.items():
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                merged.append(joined)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        key = tuple(merged)
        out[key] = out.get(key, 0) + count
    return out


def bpe_learn(word_counts: dict[str, int], num_merges: int, min_frequency: int = 1,
              special_tokens: Sequence[str] = ()) -> list[Pair]:
    """Learn up to ``num_merges`` BPE merges: count pairs, merge the most frequent, repeat."""
    state = initial_state(word_counts, special_tokens)
    merges: list[Pair] = []
    words = state.words
    for _ in range(num_merges):
        pairs = count_pairs(words)
        pair = best_pair(pairs, state.ids)
        if pair is None or pairs[pair] < max(min_frequency, 1):
            break
        words = merge_pair(words, pair)
        state.ids.setdefault(pair[0] + pair[1], len(state.ids))
        merges.append(pair)
    return merges


def bpe_encode(word: str, merges: Sequence[Pair]) -> list[str]:
    """Apply learned merges to one word, in the order they were learned (how BPE tokenizes)."""
    rank = {p: i for i, p in enumerate(merges)}
    symbols = list(word)
    while len(symbols) > 1:
        cands = [(rank[p], i) for i, p in enumerate(pairwise(symbols)) if p in rank]
        if not cands:
            break
        r, _ = min(cands)
        symbols = list(next(iter(merge_pair({tuple(symbols): 1}, merges[r]))))
    return symbols


def word_counts_of(text: str) -> dict[str, int]:
    """Whitespace-separated words and their counts (the input of BPE training)."""
    return dict(Counter(text.split()))


def hf_bpe_merges(word_counts: dict[str, int], num_merges: int, min_frequency: int = 1) -> list[Pair]:
    """Train ``tokenizers``' BpeTrainer on the same words and read the merges from the tokenizer JSON."""
    from tokenizers import trainers

    alphabet = {ch for w in word_counts for ch in w}
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + num_merges, min_frequency=min_frequency,
                                  special_tokens=[], show_progress=False)
    return merges_from_json(_bpe_trained_on(word_counts, trainer).to_str())


def _bpe_trained_on(word_counts: dict[str, int], trainer):
    """A ``tokenizers`` BPE model trained by ``trainer`` on these words, each given as often as it is counted
    (split on whitespace only: the words arrive pre-tokenised)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator((" ".join([w] * int(c)) for w, c in sorted(word_counts.items())), trainer=trainer)
    return tok


def merges_from_json(tokenizer_json: str | dict[str, Any]) -> list[Pair]:
    """The ordered merge list of a BPE ``tokenizer.json`` (both the ``"a b"`` and ``["a", "b"]`` formats)."""
    data = json.loads(tokenizer_json) if isinstance(tokenizer_json, str) else tokenizer_json
    if data.get("model", {}).get("type") != "BPE":
        raise ArgumentError("not a BPE tokenizer JSON: model.type is not 'BPE'")
    out: list[Pair] = []
    for m in data["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        out.append((a, b))
    return out


def strip_accents_lower(text: str) -> str:
    """What an uncased BERT normaliser does to a word (NFD, drop combining marks, lower-case)."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").lower()


def save_and_reload(tokenizer, folder: str | Path):
    """``save_pretrained`` into ``folder`` and load it back with ``AutoTokenizer`` (what a model dir needs)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def iter_batches(items: Sequence[str], size: int = 1000) -> Iterator[list[str]]:
    """Chunks of a list (``train_from_iterator`` is faster on batches)."""
    for i in range(0, len(items), size):
        yield list(items[i:i + size])
