"""SGNS and GloVe from scratch, checked against formulas, brute force, autograd and gensim."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmcourse import embeddings as E
from lmcourse.context import resolve_context
from lmcourse.errors import ArgumentError, LmcourseError, UnknownNameError

TOY = [
    ["the", "cat", "sat", "on", "the", "mat"],
    ["the", "dog", "sat", "on", "the", "log"],
    ["a", "cat", "and", "a", "dog"],
    ["the", "end"],
]


def _ctx(seed: int = 0):
    return resolve_context("smoke", seed=seed, device="cpu", bf16=False, threads=2)


def _zipf_corpus(seed: int = 0, n_sent: int = 300) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(60)]
    p = 1.0 / np.arange(1, 61)
    p /= p.sum()
    return [list(rng.choice(words, size=rng.integers(3, 12), p=p)) for _ in range(n_sent)]


# ------------------------------------------------------------------------------------------- vocabulary
def test_tokenize_lowercases_and_drops_punctuation_and_unk():
    assert E.tokenize("The <unk> cat , isn't 42 @-@ Cats .") == ["the", "cat", "isn't", "42", "cats"]


def test_build_vocab_counts_min_count_ordering():
    v = E.build_vocab(TOY, min_count=2)
    # the:5; sat,on,cat,dog,a:2 each -- ties in order of first appearance; mat/log/and/end dropped (count 1)
    assert v.words == ["the", "cat", "sat", "on", "dog", "a"]
    assert v.counts.tolist() == [5, 2, 2, 2, 2, 2]
    assert v.id("dog") == 4 and "mat" not in v and "the" in v
    assert E.build_vocab(TOY, min_count=1, max_size=3).words == ["the", "cat", "sat"]
    assert len(E.build_vocab(TOY, min_count=1)) == 10


def test_vocab_unknown_words():
    v = E.build_vocab(TOY, min_count=2)
    assert v.encode(["the", "zebra", "cat", "mat"]) == [0, 1]  # unknown words are dropped, like word2vec
    with pytest.raises(UnknownNameError, match="zebra"):
        v.id("zebra")
    enc = E.encode_corpus(TOY, v)
    assert enc.raw_words == sum(map(len, TOY))
    assert enc.ids.tolist() == [0, 1, 2, 3, 0, 0, 4, 2, 3, 0, 5, 1, 5, 4, 0]
    assert enc.sentence.tolist() == [0] * 5 + [1] * 5 + [2] * 4 + [3]


def test_build_vocab_matches_gensim():
    from gensim.models import Word2Vec

    corpus = _zipf_corpus()
    ours = E.build_vocab(corpus, min_count=5)
    model = Word2Vec(min_count=5, vector_size=8, workers=1)
    model.build_vocab(corpus)
    theirs = {w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key}
    assert dict(zip(ours.words, ours.counts.tolist())) == theirs
    assert sorted(ours.counts.tolist(), reverse=True) == ours.counts.tolist()


def test_empty_corpus_and_bad_arguments():
    with pytest.raises(LmcourseError, match="empty"):
        E.build_vocab([[], []])
    with pytest.raises(LmcourseError, match="min_count"):
        E.build_vocab(TOY, min_count=100)
    with pytest.raises(ArgumentError):
        E.build_vocab(TOY, min_count=0)
    with pytest.raises(LmcourseError, match="no in-vocabulary"):
        E.encode_corpus([["zebra"]], E.build_vocab(TOY))
    with pytest.raises(ArgumentError):
        E.skipgram_pairs(np.arange(3), np.zeros(3), window=0)
    with pytest.raises(ArgumentError):
        E.to_keyed_vectors(["a", "b"], np.zeros((3, 4)))


def test_sizes_come_from_the_profile_table():
    from lmcourse.profiles import PROFILES, get_profile

    for name, prof in PROFILES.items():
        s = E.EmbeddingSizes.from_profile(name)
        assert s == E.EmbeddingSizes(**prof.embeddings)
        assert (s.dim, s.epochs) == (prof.embeddings["dim"], prof.embeddings["epochs"])
    assert E.EmbeddingSizes.from_profile(get_profile("cpu")).dim == 100
    assert E.EmbeddingSizes.from_profile(get_profile("smoke")) == E.EmbeddingSizes.from_profile("smoke")
    with pytest.raises(UnknownNameError, match="profile"):
        E.EmbeddingSizes.from_profile("huge")
    with pytest.raises(ArgumentError, match="unknown word-embedding size"):
        E.EmbeddingSizes.from_profile(get_profile("smoke").with_overrides(embeddings={"dim": 8, "epoch": 1}))
    # the skip-gram comparison runs over the profile's seeds: several where it is read as a finding
    for name, prof in PROFILES.items():
        assert E.EmbeddingSizes.from_profile(name).seeds == tuple(prof.embeddings.get("seeds", (0,)))
    assert len(set(E.EmbeddingSizes.from_profile("cpu").seeds)) >= 3


def test_load_sentences_smoke_slice():
    sents = E.load_sentences(E.EmbeddingSizes.from_profile("smoke"))
    assert 500 < len(sents) < 1500 and all(len(s) > 1 for s in sents)
    assert all(t == t.lower() for s in sents[:50] for t in s)


# ------------------------------------------------------------------------------------------- subsampling, noise
def test_keep_probabilities_formula_and_gensim_sample_int():
    from gensim.models import Word2Vec

    corpus = _zipf_corpus()
    sample = 0.01
    vocab = E.build_vocab(corpus, min_count=5)
    p = E.keep_probabilities(vocab.counts, sample)
    f = vocab.counts / vocab.counts.sum()
    expected = np.minimum(1.0, (np.sqrt(f / sample) + 1) * sample / f)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert (p < 1).any() and (p == 1).any()  # this corpus exercises both branches

    model = Word2Vec(min_count=5, sample=sample, vector_size=8, workers=1)
    model.build_vocab(corpus)
    theirs = np.array([model.wv.get_vecattr(w, "sample_int") for w in vocab.words], dtype=np.float64) / 2**32
    np.testing.assert_allclose(p, theirs, atol=1e-9)

    np.testing.assert_allclose(E.keep_probabilities(vocab.counts, sample, "paper"),
                               np.minimum(1.0, np.sqrt(sample / f)), rtol=1e-12)
    assert (E.keep_probabilities(vocab.counts, 0.0) == 1).all()
    with pytest.raises(UnknownNameError):
        E.keep_probabilities(vocab.counts, sample, "other")


def test_subsample_keeps_expected_fraction():
    counts = np.array([1000, 10])
    corpus = E.EncodedCorpus(np.array([0] * 1000 + [1] * 10), np.zeros(1010, dtype=np.int64), 1010)
    keep = np.array([0.3, 1.0])
    kept = np.concatenate([E.subsample(corpus, keep, np.random.default_rng(s)).ids for s in range(20)])
    assert (kept == 1).sum() == 200  # probability one: always kept
    assert abs((kept == 0).sum() / 20000 - 0.3) < 0.02
    assert counts.sum() == 1010


def test_noise_distribution_is_unigram_to_three_quarters_and_matches_gensim():
    from gensim.models import Word2Vec

    corpus = _zipf_corpus()
    vocab = E.build_vocab(corpus, min_count=5)
    q = E.noise_distribution(vocab.counts)
    np.testing.assert_allclose(q, vocab.counts**0.75 / (vocab.counts**0.75).sum(), rtol=1e-12)
    assert math.isclose(q.sum(), 1.0)
    model = Word2Vec(min_count=5, vector_size=8, workers=1, negative=5, ns_exponent=0.75)
    model.build_vocab(corpus)
    cum = model.cum_table.astype(np.float64)
    theirs = np.diff(np.concatenate([[0.0], cum])) / cum[-1]
    order = [model.wv.key_to_index[w] for w in vocab.words]
    np.testing.assert_allclose(q, theirs[order], atol=1e-8)


# ------------------------------------------------------------------------------------------- skip-gram pairs
def test_skipgram_pairs_full_window_matches_hand_enumeration():
    ids = np.array([10, 11, 12, 13, 20, 21])
    sent = np.array([0, 0, 0, 0, 1, 1])
    c, o = E.skipgram_pairs(ids, sent, window=2)
    expected = [(10, 11), (10, 12), (11, 10), (11, 12), (11, 13), (12, 10), (12, 11), (12, 13), (13, 11), (13, 12),
                (20, 21), (21, 20)]
    assert sorted(zip(c.tolist(), o.tolist())) == expected


def test_skipgram_pairs_dynamic_window_matches_hand_enumeration():
    ids = np.array([10, 11, 12, 13, 14])
    sent = np.zeros(5, dtype=np.int64)
    effective = np.array([1, 2, 1, 3, 1])  # the window each center uses
    c, o = E.skipgram_pairs(ids, sent, window=3, effective=effective)
    expected = [(10, 11), (11, 10), (11, 12), (11, 13), (12, 11), (12, 13), (13, 10), (13, 11), (13, 12), (13, 14),
                (14, 13)]
    assert sorted(zip(c.tolist(), o.tolist())) == expected


def test_skipgram_pairs_brute_force_random():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, 200)
    sent = np.sort(rng.integers(0, 20, 200))
    eff = rng.integers(1, 5, 200)
    c, o = E.skipgram_pairs(ids, sent, window=4, effective=eff)
    brute = [(ids[i], ids[j]) for i in range(200) for j in range(200)
             if i != j and abs(i - j) <= eff[i] and sent[i] == sent[j]]
    assert sorted(zip(c.tolist(), o.tolist())) == sorted((int(a), int(b)) for a, b in brute)


# ------------------------------------------------------------------------------------------- SGNS
def test_sgns_loss_equals_direct_formula():
    torch.manual_seed(0)
    u, v, n = torch.randn(7, 6), torch.randn(7, 6), torch.randn(7, 4, 6)
    direct = -(torch.log(torch.sigmoid((u * v).sum(-1)))
               + torch.log(torch.sigmoid(-torch.einsum("bkd,bd->bk", n, u))).sum(-1))
    torch.testing.assert_close(E.sgns_loss(u, v, n), direct, rtol=1e-5, atol=1e-6)
    model = E.SkipGramNS(20, 6)
    torch.nn.init.normal_(model.out.weight)
    c, o, neg = torch.randint(0, 20, (7,)), torch.randint(0, 20, (7,)), torch.randint(0, 20, (7, 4))
    ref = -(F.logsigmoid((model.inp.weight[c] * model.out.weight[o]).sum(-1))
            + F.logsigmoid(-torch.einsum("bkd,bd->bk", model.out.weight[neg], model.inp.weight[c])).sum(-1)).mean()
    torch.testing.assert_close(model(c, o, neg), ref)


def test_sgns_sgd_step_equals_autograd_sgd():
    torch.manual_seed(0)
    w_in, w_out = torch.randn(15, 8) * 0.3, torch.randn(15, 8) * 0.3
    c = torch.tensor([0, 1, 1, 4, 7, 0])  # repeated rows: updates must add up
    o = torch.tensor([2, 3, 3, 1, 0, 5])
    neg = torch.randint(0, 15, (6, 5))
    a_in, a_out = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    loss = E.sgns_loss(a_in[c], a_out[o], a_out[neg]).sum()
    loss.backward()
    lr = 0.1
    got = E.sgns_sgd_step(w_in, w_out, c, o, neg, lr)
    assert math.isclose(got, float(loss.detach()), rel_tol=1e-5)
    torch.testing.assert_close(w_in, (a_in - lr * a_in.grad).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_out, (a_out - lr * a_out.grad).detach(), rtol=1e-5, atol=1e-6)


def _toy_training_data(n_sent: int = 200):
    corpus = _zipf_corpus(n_sent=n_sent)
    vocab = E.build_vocab(corpus, min_count=1)
    return corpus, vocab, E.encode_corpus(corpus, vocab)


def test_sgns_training_decreases_loss_and_is_reproducible():
    _, vocab, enc = _toy_training_data()
    r = E.train_sgns(enc, vocab, _ctx(), dim=16, window=3, epochs=4, batch_size=256, lr=0.05, progress=False)
    assert r.losses[-1] < r.losses[0] - 0.1
    assert np.isfinite(r.vectors).all() and r.vectors.shape == (len(vocab), 16)
    assert r.words_per_second > 0 and r.pairs > 0
    r2 = E.train_sgns(enc, vocab, _ctx(), dim=16, window=3, epochs=4, batch_size=256, lr=0.05, progress=False)
    np.testing.assert_array_equal(r.vectors, r2.vectors)
    with pytest.raises(LmcourseError, match="empty"):
        E.train_sgns(E.EncodedCorpus(np.zeros(0, np.int64), np.zeros(0, np.int64), 0), vocab, _ctx(), progress=False)


def test_training_follows_the_context_seed_and_leaves_the_global_rng_alone():
    """Same ctx seed: identical vectors; another seed: other vectors (a helper that ignored ctx.seed, e.g.
    used a fixed seed, fails here); the caller's global torch RNG is not disturbed."""
    _, vocab, enc = _toy_training_data(80)
    co = E.cooccurrence(enc, len(vocab), window=3)

    def runs(seed):
        sgns = E.train_sgns(enc, vocab, _ctx(seed), dim=8, window=2, epochs=1, batch_size=128, progress=False)
        glove = E.train_glove(co, _ctx(seed), dim=8, epochs=2, batch_size=256, progress=False)
        return sgns.vectors, glove.vectors

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    s0, g0 = runs(0)
    assert torch.equal(torch.get_rng_state(), state)  # seeded() forks the RNG instead of reseeding it
    s0b, g0b = runs(0)
    s1, g1 = runs(1)
    np.testing.assert_array_equal(s0, s0b)
    np.testing.assert_array_equal(g0, g0b)
    assert not np.allclose(s0, s1) and not np.allclose(g0, g1)


def test_initial_vectors_are_those_of_the_seeded_global_rng():
    """The model is built under ``ctx.seeded()``: the numbers are those of ``torch.manual_seed(seed)``
    followed by the model's init, as before the run context existed."""
    _, vocab, enc = _toy_training_data(40)
    for seed in (0, 5):
        r = E.train_sgns(enc, vocab, _ctx(seed), dim=8, epochs=0, progress=False)  # no epoch: the init
        torch.manual_seed(seed)
        np.testing.assert_array_equal(r.vectors, E.SkipGramNS(len(vocab), 8, sparse=False).vectors())


def test_training_computes_on_the_context_device():
    """On a cpu context the vectors are computed there; on a ``meta`` context (tensors without data) the
    model and batches land on ``meta`` and reading a loss fails. A helper that ignored ``ctx.device``
    would silently train on the CPU and return vectors instead of raising."""
    _, vocab, enc = _toy_training_data(40)
    co = E.cooccurrence(enc, len(vocab), window=3)
    cpu = _ctx()
    assert E.train_sgns(enc, vocab, cpu, dim=8, epochs=1, progress=False).extra["device"] == "cpu"
    assert E.train_glove(co, cpu, dim=8, epochs=1, progress=False).extra["device"] == "cpu"
    meta = cpu.with_changes(device="meta")
    with pytest.raises(RuntimeError, match="meta"):
        E.train_sgns(enc, vocab, meta, dim=8, epochs=1, progress=False)
    with pytest.raises(RuntimeError, match="meta"):
        E.train_glove(co, meta, dim=8, epochs=1, progress=False)


def test_gensim_takes_seed_and_workers_from_the_context():
    corpus, _, _ = _toy_training_data(60)
    ctx = _ctx(3).with_changes(threads=1)
    model, res = E.train_gensim(corpus, ctx, dim=8, window=2, epochs=1, min_count=1)
    assert model.seed == 3 and model.workers == 1 and res.extra["workers"] == 1
    model2, _ = E.train_gensim(corpus, ctx, dim=8, window=2, epochs=1, min_count=1)
    np.testing.assert_array_equal(model.wv.vectors, model2.wv.vectors)  # one worker: deterministic


# ------------------------------------------------------------------------------------------- GloVe
def test_cooccurrence_matches_brute_force():
    vocab = E.build_vocab(TOY, min_count=1)
    enc = E.encode_corpus(TOY, vocab)
    for window, weighted in [(2, True), (3, False), (10, True)]:
        brute = np.zeros((len(vocab), len(vocab)))
        for s in TOY:
            for i, j in itertools.permutations(range(len(s)), 2):
                if abs(i - j) <= window:
                    brute[vocab.id(s[i]), vocab.id(s[j])] += 1.0 / abs(i - j) if weighted else 1.0
        co = E.cooccurrence(enc, len(vocab), window, distance_weighting=weighted)
        np.testing.assert_allclose(co.dense(), brute, rtol=1e-12)
        assert len(set(zip(co.rows.tolist(), co.cols.tolist()))) == len(co.values)  # duplicates summed
    with pytest.raises(ArgumentError):
        E.cooccurrence(enc, len(vocab), 0)


def test_glove_weight_and_loss_formula():
    x = torch.tensor([0.5, 1.0, 50.0, 100.0, 250.0])
    expected_f = torch.tensor([(xi / 100.0) ** 0.75 if xi < 100 else 1.0 for xi in x.tolist()])
    torch.testing.assert_close(E.glove_weight(x), expected_f)
    torch.manual_seed(0)
    model = E.GloVe(12, 5)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    i, j = torch.tensor([0, 3, 5, 11, 3]), torch.tensor([1, 3, 2, 0, 7])
    direct = sum(
        expected_f[k] * (model.w.weight[i[k]] @ model.wt.weight[j[k]] + model.b.weight[i[k], 0]
                         + model.bt.weight[j[k], 0] - math.log(x[k])) ** 2
        for k in range(5)
    )
    torch.testing.assert_close(model(i, j, x), direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.vectors(), (model.w.weight + model.wt.weight).detach().numpy())


def test_glove_training_decreases_loss():
    corpus = _zipf_corpus(n_sent=200)
    vocab = E.build_vocab(corpus, min_count=1)
    co = E.cooccurrence(E.encode_corpus(corpus, vocab), len(vocab), window=5)
    r = E.train_glove(co, _ctx(), dim=16, epochs=15, batch_size=512, progress=False)
    assert r.losses[-1] < 0.5 * r.losses[0]
    assert np.isfinite(r.vectors).all()


# ------------------------------------------------------------------------------------------- evaluation
def _benchmark_words(simlex: bool = False) -> list[str]:
    """The WordSim-353 words (and SimLex-999's), and those of the first analogy section (capitals)."""
    from gensim.test.utils import datapath

    words = set()
    for name in ["wordsim353.tsv", *(["simlex999.txt"] if simlex else [])]:
        with open(datapath(name), encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#"):
                    words.update(w.lower() for w in line.split("\t")[:2])
    with open(datapath("questions-words.txt"), encoding="utf-8") as f:
        for line in itertools.islice(f, 1, 300):  # the first section (capitals): a few dozen words
            words.update(w.lower() for w in line.split())
    return sorted(words)


def _benchmark_corpus(n_sent: int = 600) -> list[list[str]]:
    rng = np.random.default_rng(0)
    vocab = _benchmark_words()
    return [list(rng.choice(vocab, 12)) for _ in range(n_sent)]


def test_evaluation_on_wrapped_vectors_equals_gensim():
    from gensim.models import Word2Vec
    from gensim.test.utils import datapath

    corpus = _benchmark_corpus()
    model = Word2Vec(corpus, vector_size=16, min_count=1, sg=1, workers=1, epochs=1, seed=0)
    kv = E.to_keyed_vectors(model.wv.index_to_key, model.wv.vectors)
    ours = E.evaluate_vectors(kv)
    ref_ws = model.wv.evaluate_word_pairs(datapath("wordsim353.tsv"))
    ref_sl = model.wv.evaluate_word_pairs(datapath("simlex999.txt"))
    ref_an, _ = model.wv.evaluate_word_analogies(datapath("questions-words.txt"))
    assert ours["wordsim353_spearman"] == pytest.approx(ref_ws[1][0], abs=1e-12)
    assert ours["wordsim353_pearson"] == pytest.approx(ref_ws[0][0], abs=1e-12)
    assert ours["wordsim353_oov"] == pytest.approx(ref_ws[2] / 100, abs=1e-12)
    assert ours["simlex999_spearman"] == pytest.approx(ref_sl[1][0], abs=1e-12)
    assert ours["analogy_accuracy"] == pytest.approx(ref_an, abs=1e-12)
    assert 0.0 < ours["analogy_oov"] < 1.0 and ours["wordsim353_oov"] < 0.05


def test_nearest_words_and_pca():
    kv = E.to_keyed_vectors(["a", "b", "c"], np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.2]]))
    assert E.nearest_words(kv, ["a", "zzz"], topn=1) == {"a": ["b"]}
    x = np.random.default_rng(0).normal(size=(30, 5)) * np.array([5, 3, 1, 0.1, 0.1])
    y = E.pca_2d(x)
    from sklearn.decomposition import PCA

    ref = PCA(2).fit_transform(x)
    np.testing.assert_allclose(np.abs(y), np.abs(ref), atol=1e-8)  # same up to the sign of each axis


def test_word_pair_spearman_is_gensims_number_computed_independently():
    """On random vectors (some benchmark words missing, one present twice in two cases) the direct NumPy/scipy
    Spearman equals gensim's ``evaluate_word_pairs``; the same vectors attached to the wrong words give another
    number, which is what makes the notebook's check of the wrapping able to fail."""
    rng = np.random.default_rng(0)
    words = [w for w in _benchmark_words(simlex=True) if rng.random() < 0.8]  # ~20% of the words OOV
    words = [*words[:5], words[3].upper(), *words[5:]]  # a case variant after its lower-case twin
    vectors = rng.normal(size=(len(words), 12))
    kv = E.to_keyed_vectors(words, vectors)
    from gensim.test.utils import datapath

    for name, file in [("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")]:
        rho, used, total = E.word_pair_spearman(words, vectors, name)
        _, ref, oov = kv.evaluate_word_pairs(datapath(file))
        assert rho == pytest.approx(ref[0], abs=1e-6)
        assert total == {"wordsim353": 353, "simlex999": 999}[name]
        assert 1 - used / total == pytest.approx(oov / 100, abs=1e-12) and 0.2 < oov / 100 < 0.8
        shuffled = E.word_pair_spearman(words[::-1], vectors, name)[0]
        assert abs(shuffled - rho) > 1e-3
    with pytest.raises(UnknownNameError):
        E.word_pair_spearman(words, vectors, "men3000")
    with pytest.raises(ArgumentError):
        E.word_pair_spearman(words[:3], vectors)


def test_sgns_over_seeds_trains_each_seed_through_the_context():
    """Rows for (ours, gensim) x seeds, each equal to a direct run with ``ctx.with_changes(seed=s)``; the
    caller's context has another seed, so a helper that trained every seed with it (or with a fixed seed)
    fails, and so does one that mixed up the two implementations or skipped a seed."""
    corpus = _benchmark_corpus(300)
    vocab = E.build_vocab(corpus, min_count=1)
    enc = E.encode_corpus(corpus, vocab)
    sizes = E.EmbeddingSizes(wikitext_splits=(), glue_tasks=(), dim=8, epochs=1, min_count=1, window=3,
                             batch_size=512, seeds=(3, 4))
    ctx = _ctx(0).with_changes(threads=1)  # one gensim worker: deterministic
    rows = E.sgns_over_seeds(corpus, vocab, enc, ctx, sizes, sizes.seeds)
    assert [(r["model"], r["seed"]) for r in rows] == [(E.OURS_SGNS, 3), (E.GENSIM_SGNS, 3),
                                                       (E.OURS_SGNS, 4), (E.GENSIM_SGNS, 4)]
    run = ctx.with_changes(seed=3)
    ours = E.train_sgns(enc, vocab, run, dim=8, window=3, epochs=1, batch_size=512, progress=False)
    gmodel, _ = E.train_gensim(corpus, run, dim=8, window=3, epochs=1, min_count=1)
    direct = [E.evaluate_vectors(E.to_keyed_vectors(vocab.words, ours.vectors)), E.evaluate_vectors(gmodel.wv)]
    for row, ref in zip(rows[:2], direct):
        assert {m: row[m] for m in E.SEED_METRICS} == {m: ref[m] for m in E.SEED_METRICS}
    for model in (0, 1):  # another seed, other vectors, other scores
        assert rows[model]["wordsim353_spearman"] != rows[model + 2]["wordsim353_spearman"]
    assert all(r["train s"] > 0 and r["words/s"] > 0 and set(E.SEED_METRICS) <= set(r) for r in rows)


def test_random_baseline_is_one_seeded_draw_per_seed():
    words = _benchmark_words()
    rows = E.random_baseline(words, 16, (0, 1))
    assert [(r["model"], r["seed"]) for r in rows] == [(E.RANDOM_VECTORS, 0), (E.RANDOM_VECTORS, 1)]
    assert rows == E.random_baseline(words, 16, (0, 1))  # seeded
    assert rows[0]["wordsim353_spearman"] != rows[1]["wordsim353_spearman"]
    assert all(abs(r["wordsim353_spearman"]) < 0.3 for r in rows)  # random vectors know nothing of similarity
    assert "analogy_accuracy" not in rows[0] and "train s" not in rows[0]
    expected = E.evaluate_vectors(E.to_keyed_vectors(words, np.random.default_rng(1).normal(size=(len(words), 16))),
                                  analogies=False)
    assert {k: rows[1][k] for k in expected} == expected
