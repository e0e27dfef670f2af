"""Tokenizers: the hand-written BPE loop against tokenizers' BpeTrainer, trained WordPiece/BPE behaviour."""

from __future__ import annotations

import json
import random

import pytest

from lmcourse import tokenization as T
from lmcourse.errors import ArgumentError

TOY = ("low low low low low lower lower newest newest newest newest newest newest widest widest widest "
       "ab ba ab ba cd dc aaaa aaa")


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return T.corpus_lines(max_lines=3000)


@pytest.fixture(scope="module")
def wordpiece(lines):
    return T.train_wordpiece(lines, vocab_size=1500)


@pytest.fixture(scope="module")
def bpe(lines):
    return T.train_byte_level_bpe(lines, vocab_size=1000)


def test_bpe_learn_matches_tokenizers_on_toy_text():
    wc = T.word_counts_of(TOY)
    ours = T.bpe_learn(wc, 30)
    assert ours == T.hf_bpe_merges(wc, 30)
    assert ours[:2] == [("e", "s"), ("es", "t")]  # (e,s) and (s,t) tie at 9: smaller ids win


def test_bpe_learn_matches_tokenizers_on_random_ties():
    rng = random.Random(0)
    for _ in range(60):  # tiny alphabets and counts make many ties and overlapping pairs ("aaa")
        words = ["".join(rng.choice("abcd") for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(3, 25))]
        wc = {w: rng.randint(1, 4) for w in words}
        n = rng.randint(1, 30)
        mf = rng.choice([1, 2])
        assert T.bpe_learn(wc, n, min_frequency=mf) == T.hf_bpe_merges(wc, n, min_frequency=mf), (wc, n, mf)


def test_tie_break_is_by_ids_not_by_first_appearance():
    # pairs (z, y) and (a, b) both occur twice and (z, y) is seen first;
    # a < z by code point, so (a, b) is merged first although "zy" comes first in the corpus
    wc = {"zy": 2, "ab": 2}
    assert T.bpe_learn(wc, 1) == [("a", "b")] == T.hf_bpe_merges(wc, 1)


def test_bpe_encode_applies_merges_in_rank_order():
    merges = T.bpe_learn(T.word_counts_of(TOY), 30)
    assert T.bpe_encode("lowest", merges) == ["low", "est"]
    assert T.bpe_encode("newest", merges) == ["newest"]
    assert T.bpe_encode("xyz", merges) == ["x", "y", "z"]


def test_merges_from_json_rejects_wordpiece(wordpiece):
    with pytest.raises(ArgumentError):
        T.merges_from_json(wordpiece.backend_tokenizer.to_str())


def test_wordpiece_special_tokens_and_pairs(wordpiece):
    enc = wordpiece("a", "b")
    toks = wordpiece.convert_ids_to_tokens(enc["input_ids"])
    assert toks == ["[CLS]", "a", "[SEP]", "b", "[SEP]"]
    assert enc["token_type_ids"] == [0, 0, 0, 1, 1]
    assert wordpiece.mask_token == "[MASK]" and wordpiece.pad_token_id == 0
    assert all(t.startswith("##") for t in wordpiece.tokenize("homarusxyzq")[1:])
    # normaliser: lower-case and strip accents
    assert wordpiece.tokenize("CAFÉ") == wordpiece.tokenize("cafe")


def test_wordpiece_matches_hf_bert_pipeline_on_bert_vocab(wordpiece):
    # the same pipeline with bert-base-uncased's vocabulary must tokenize exactly like MiniLM's tokenizer
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer

    from lmcourse.data import load_glue
    from lmcourse.models import resolve

    ref = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    ours = Tokenizer.from_str(wordpiece.backend_tokenizer.to_str())
    ours.model = models.WordPiece(vocab=ref.get_vocab(), unk_token="[UNK]", continuing_subword_prefix="##")
    sents = load_glue("cola", "validation[:200]")["sentence"]
    for s in sents:
        assert ours.encode(s, add_special_tokens=False).tokens == ref.tokenize(s) and len(ref.tokenize(s)) > 0


def test_wordpiece_numbers_the_same_text_the_same_way(lines, wordpiece):
    """tokenizers' WordPiece trainer numbers its ``##`` units in hash-map order (huggingface/tokenizers #1794):
    three trainings on one text gave three numberings, and at ties different tokens."""
    again = [T.train_wordpiece(lines, vocab_size=1500).get_vocab() for _ in range(3)]
    assert all(v == wordpiece.get_vocab() for v in again)
    vocab = wordpiece.get_vocab()
    assert [vocab[t] for t in T.BERT_SPECIAL_TOKENS] == [0, 1, 2, 3, 4]  # the special tokens keep their ids


def test_wordpiece_vocab_learns_the_tokens_of_tokenizers_wordpiece_trainer(lines, wordpiece):
    """The same token set as the library's trainer, through the same normaliser and pre-tokeniser (this text
    has no tie at the vocabulary's edge: the library's own trainings agree on it too)."""
    from tokenizers import Tokenizer, models, trainers

    ref = Tokenizer.from_str(wordpiece.backend_tokenizer.to_str())
    ref.model = models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100)
    ref.train_from_iterator(lines, trainer=trainers.WordPieceTrainer(
        vocab_size=1500, min_frequency=2, special_tokens=list(T.BERT_SPECIAL_TOKENS), continuing_subword_prefix="##",
        show_progress=False))
    assert set(ref.get_vocab(with_added_tokens=False)) == set(wordpiece.get_vocab())
    assert sum(t.startswith("##") for t in wordpiece.get_vocab()) > 100
    text = " ".join(lines[:100])
    assert ref.encode(text).tokens == wordpiece.backend_tokenizer.encode(text).tokens
    with pytest.raises(ArgumentError, match="private-use"):
        T.wordpiece_vocab({"a\U000f0001b": 3}, vocab_size=50)


def test_byte_level_bpe_is_lossless(bpe):
    texts = ["Héllo  wörld!\n\tπ≈3.14 ok", "  leading and trailing  ", "emoji 🤗 and 中文", GPT_TEXT]
    for s in texts:
        ids = bpe(s)["input_ids"]
        assert bpe.decode(ids) == s
    assert bpe.unk_token_id == bpe.convert_tokens_to_ids(T.GPT_EOS)
    assert bpe(T.GPT_EOS)["input_ids"] == [bpe.convert_tokens_to_ids(T.GPT_EOS)]


GPT_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak."


def test_save_and_reload_round_trip(wordpiece, bpe, tmp_path):
    for tok, name in [(wordpiece, "wp"), (bpe, "bpe")]:
        again = T.save_and_reload(tok, tmp_path / name)
        for s in ["The lobster , H. americanus .", GPT_TEXT]:
            assert again(s)["input_ids"] == tok(s)["input_ids"]
        assert again.special_tokens_map == tok.special_tokens_map
    assert (tmp_path / "bpe" / "tokenizer.json").is_file()
    data = json.loads((tmp_path / "bpe" / "tokenizer.json").read_text())
    assert len(T.merges_from_json(data)) == len(bpe) - 257  # 256 bytes + <|endoftext|>


def test_stats_and_overlap(wordpiece):
    from transformers import AutoTokenizer

    from lmcourse.models import resolve

    ref = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    texts = ["the cat sat on the mat .", "an unbelievably obscure sesquipedalian word"]
    st = T.tokenizer_stats(ref, texts)
    n_tokens = sum(len(ref.tokenize(t)) for t in texts)
    assert st["tokens"] == n_tokens and st["words"] == 12
    assert st["fertility"] == pytest.approx(n_tokens / 12)
    snow = ref.tokenize("☃ snowman")
    assert snow[0] == "[UNK]" and T.tokenizer_stats(ref, ["☃ snowman"])["unk_rate"] == pytest.approx(1 / len(snow))
    ov = T.vocab_overlap(wordpiece, ref)
    shared = set(wordpiece.get_vocab()) & set(ref.get_vocab())
    assert ov["shared"] == len(shared) and 0 < ov["jaccard"] < 1


def test_char_tokenizer_and_sizes():
    ct = T.CharTokenizer("hello world")
    assert ct.decode(ct.encode("low hole")) == "low hole" and ct.vocab_size == 8
    with pytest.raises(ArgumentError):
        ct.encode("xyz")
    from lmcourse.profiles import PROFILES

    for prof in PROFILES.values():  # the vocabulary sizes live in the profile table
        assert prof.tokenizers["wordpiece_vocab"] > 0 and prof.tokenizers["bpe_vocab"] > 0
        assert prof.tokenizers["min_frequency"] >= 1
    assert PROFILES["gpu"].tokenizers["wordpiece_vocab"] == 30522  # bert-base-uncased's
