"""lmcourse.readout: mean pooling against sentence-transformers' masked mean (by hand and all-MiniLM-L6-v2's own
Pooling module), frozen features against one-example-at-a-time runs, the pair features against their formulas,
the probe's C chosen by cross-validation inside the training examples only (the dev labels cannot move it),
the TF-IDF baseline on the very same protocol and grid, and one pooled classifier for every body."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lmcourse import readout as R
from lmcourse.context import resolve_context
from lmcourse.data import load_glue
from lmcourse.errors import ArgumentError
from lmcourse.readout import (
    PAIR_FEATURES,
    PROBE_CS,
    PooledClassifier,
    embed_texts,
    encoder_features,
    fit_probe,
    infersent_pair_features,
    linear_probe,
    load_encoder,
    mean_pool,
    pair_features,
    probe_score,
    senteval_pair_features,
    sequence_hidden,
    tfidf_features,
    tfidf_probe,
)

SMOKE = resolve_context("smoke", seed=0, device="cpu", bf16=False)
TEXTS = ["a wonderful, moving film", "dull and far too long", "The cat sat on the mat.", "ok",
         "an unexpectedly long sentence, with commas, clauses and a few rare words such as perspicacious"]


def _sentence_transformers_mean(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' Pooling (mode "mean"), written out: the masked sum over the summed mask,
    the mask clamped at 1e-9."""
    mask = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).to(token_embeddings.dtype)
    return torch.sum(token_embeddings * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)


# ------------------------------------------------------------------------------------------ pooling
def test_mean_pool_is_the_masked_mean_of_real_tokens():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 6, 5, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), _sentence_transformers_mean(hidden, mask))
    expected = torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0), hidden[2, 0], hidden[3, :3].mean(0)])
    torch.testing.assert_close(mean_pool(hidden, mask), expected)
    torch.testing.assert_close(mean_pool(hidden, None), hidden.mean(1))
    # what sits under the padding does not matter
    noisy = hidden.clone()
    noisy[mask == 0] = 1e6
    torch.testing.assert_close(mean_pool(noisy, mask), expected)


def test_mean_pool_gives_zero_for_a_row_of_padding_in_every_dtype():
    hidden = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        pooled = mean_pool(hidden.to(dtype), mask)
        assert pooled.dtype == dtype and torch.isfinite(pooled).all(), dtype
        assert torch.count_nonzero(pooled[1]) == 0
        torch.testing.assert_close(pooled[0].float(), hidden[0, :2].to(dtype).float().mean(0), atol=1e-2, rtol=1e-2)
    # the reason the clamp is 1 and not sentence-transformers' 1e-9: in float16 1e-9 is 0, and 0 / 0 is NaN
    assert torch.isnan(_sentence_transformers_mean(hidden.half(), mask)[1]).all()


def test_mean_pool_equals_minilm_own_pooling_module():
    """all-MiniLM-L6-v2 ships its sentence-transformers Pooling module (mean): our pooling of its token
    embeddings and our frozen features equal that module's sentence embedding (before its Normalize)."""
    from sentence_transformers import SentenceTransformer

    from lmcourse.models import resolve

    st = SentenceTransformer(resolve("minilm-l6"), device="cpu")
    assert st[1].get_config_dict()["pooling_mode"] == "mean"
    features = st.tokenize(TEXTS)
    with torch.no_grad():
        out = st[1](st[0](dict(features)))
    reference = out["sentence_embedding"]
    torch.testing.assert_close(mean_pool(out["token_embeddings"], features["attention_mask"]), reference)
    tok, net = load_encoder("minilm-l6")
    ours = embed_texts(net, tok, TEXTS, SMOKE, max_length=st.max_seq_length, batch_size=2)
    torch.testing.assert_close(torch.from_numpy(ours), reference, atol=1e-5, rtol=1e-4)
    normalised = embed_texts(net, tok, TEXTS, SMOKE, max_length=st.max_seq_length, normalize=True)
    np.testing.assert_allclose(normalised, st.encode(TEXTS, convert_to_numpy=True), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------ features
def test_embed_texts_is_per_text_in_order_and_deterministic(tiny_bert):
    tok, enc = load_encoder(tiny_bert)
    enc.train()  # embed_texts freezes it: eval mode, so dropout cannot make two calls differ
    first = embed_texts(enc, tok, TEXTS, SMOKE, max_length=24, batch_size=2)
    assert not enc.training and first.dtype == np.float32 and first.shape == (len(TEXTS), 32)
    np.testing.assert_array_equal(embed_texts(enc, tok, TEXTS, SMOKE, max_length=24, batch_size=2), first)
    reversed_rows = embed_texts(enc, tok, TEXTS[::-1], SMOKE, max_length=24, batch_size=3)
    np.testing.assert_allclose(reversed_rows[::-1], first, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        for i, text in enumerate(TEXTS):  # one text, no padding: the plain mean of its hidden states
            alone = enc(**tok(text, truncation=True, max_length=24, return_tensors="pt")).last_hidden_state[0].mean(0)
            np.testing.assert_allclose(first[i], alone.numpy(), atol=1e-5, rtol=1e-4)
    assert embed_texts(enc, tok, [], SMOKE, max_length=24).shape == (0, 32)


def test_encoder_features_equal_one_example_at_a_time(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    tok, enc = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()

    def pooled(text: str) -> torch.Tensor:  # one sentence, no padding: the plain mean of its hidden states
        with torch.no_grad():
            return enc(**tok(text, truncation=True, max_length=24, return_tensors="pt")).last_hidden_state[0].mean(0)

    for task in ["sst2", "mrpc"]:
        ds = load_glue(task, "validation").select(range(11))
        feats = encoder_features(enc, tok, ds, task, SMOKE, max_length=24, batch_size=4)
        assert feats.dtype == np.float32
        for i in range(11):
            if task == "sst2":
                ref = pooled(ds[i]["sentence"])
            else:  # InferSent's pair features (the default) of the two sentences, each encoded on its own
                u, v = pooled(ds[i]["sentence1"]), pooled(ds[i]["sentence2"])
                ref = torch.cat([u, v, (u - v).abs(), u * v])
            np.testing.assert_allclose(feats[i], ref.numpy(), atol=1e-5, rtol=1e-4)
        assert feats.shape == (11, 32 if task == "sst2" else 4 * 32)
    ds = load_glue("mrpc", "validation").select(range(6))
    u = embed_texts(enc, tok, list(ds["sentence1"]), SMOKE, max_length=24)
    v = embed_texts(enc, tok, list(ds["sentence2"]), SMOKE, max_length=24)
    senteval = encoder_features(enc, tok, ds, "mrpc", SMOKE, max_length=24, pair="senteval")
    np.testing.assert_allclose(senteval, np.concatenate([np.abs(u - v), u * v], axis=1), atol=1e-6)


def test_encoder_features_follow_the_context_autocast_policy(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    tok, enc = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()
    ds = load_glue("sst2", "validation").select(range(8))
    fp32 = encoder_features(enc, tok, ds, "sst2", SMOKE, max_length=24)
    bf16 = encoder_features(enc, tok, ds, "sst2", SMOKE.with_changes(bf16=True), max_length=24)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # the passes ran in bf16
    rel = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert rel.max() < 0.05
    forced = embed_texts(enc, tok, list(ds["sentence"]), SMOKE.with_changes(bf16=True), max_length=24,
                         autocast=False)
    np.testing.assert_array_equal(forced, fp32)  # autocast=False: float32 whatever the context says


def test_pair_features_equal_their_formulas():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    for i in range(5):  # InferSent (Conneau et al. 2017): (u, v, |u - v|, u * v)
        np.testing.assert_array_equal(infersent_pair_features(u, v)[i],
                                      [*u[i], *v[i], *[abs(a - b) for a, b in zip(u[i], v[i])],
                                       *[a * b for a, b in zip(u[i], v[i])]])
        # SentEval's MRPC (Conneau & Kiela 2018): (|u - v|, u * v)
        np.testing.assert_array_equal(senteval_pair_features(u, v)[i],
                                      [*[abs(a - b) for a, b in zip(u[i], v[i])], *[a * b for a, b in zip(u[i], v[i])]])
    np.testing.assert_array_equal(senteval_pair_features(u, v), senteval_pair_features(v, u))  # symmetric
    assert not np.array_equal(infersent_pair_features(u, v), infersent_pair_features(v, u))
    assert set(PAIR_FEATURES) == {"infersent", "senteval"}
    np.testing.assert_array_equal(pair_features(u, v), infersent_pair_features(u, v))  # today's default
    np.testing.assert_array_equal(pair_features(u, v, "senteval"), senteval_pair_features(u, v))
    with pytest.raises(ArgumentError, match="unknown pair features"):
        pair_features(u, v, "skipthought")
    with pytest.raises(ArgumentError, match="same shape"):
        pair_features(u, v[:3])


# ------------------------------------------------------------------------------------------ the probe
def _noisy(n: int, d: int, seed: int):
    """Few noisy examples of a weak linear signal: the grid's C values score differently under CV."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.5, size=n) > 0).astype(int)
    return x, y


def test_fit_probe_chooses_c_by_stratified_cv_inside_train():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x, y = _noisy(90, 20, 0)
    probe = fit_probe(x, y, seed=3)
    assert probe.cs == PROBE_CS and probe.folds == 3 and len(probe.cv_scores) == len(PROBE_CS)
    assert PROBE_CS[int(np.argmax(probe.cv_scores))] == probe.C  # the best mean CV score; ties: stronger
    assert len(set(probe.cv_scores)) > 1  # the grid matters on this data
    # the same folds by hand: shuffled stratified 3-fold from the seed, accuracy, on standardised features
    z = (x - x.mean(0)) / x.std(0)
    by_hand = []
    for c in PROBE_CS:
        accs = [np.mean(LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(z[tr], y[tr]).predict(z[te]) == y[te])
                for tr, te in StratifiedKFold(3, shuffle=True, random_state=3).split(z, y)]
        by_hand.append(np.mean(accs))
    # equal up to one example in all 90 (scikit-learn warm-starts along the grid and stops at its tolerance)
    np.testing.assert_allclose(probe.cv_scores, by_hand, atol=1.01 / 90)
    assert PROBE_CS[int(np.argmax(by_hand))] == probe.C
    # reproducible given the seed; another seed draws other folds
    again = fit_probe(x, y, seed=3)
    assert again.C == probe.C and again.cv_scores == probe.cv_scores
    np.testing.assert_array_equal(again.predict(x), probe.predict(x))
    assert any(fit_probe(x, y, seed=s).cv_scores != probe.cv_scores for s in (4, 5, 6))


def test_probe_selection_never_sees_the_dev_set(monkeypatch):
    """The C that linear_probe uses, and its CV scores, are the same whatever the dev labels and features
    are; and its score is fit_probe on the training examples, scored on dev."""
    seen = []
    real = R.fit_probe

    def spy(*args, **kwargs):
        probe = real(*args, **kwargs)
        seen.append(probe)
        return probe

    monkeypatch.setattr(R, "fit_probe", spy)
    x, y = _noisy(200, 20, 1)
    train_x, train_y, dev_x, dev_y = x[:80], y[:80], x[80:], y[80:]
    rng = np.random.default_rng(7)
    score = linear_probe(train_x, train_y, dev_x, dev_y, "sst2", seed=2)
    for _ in range(5):
        linear_probe(train_x, train_y, dev_x, rng.permutation(dev_y), "sst2", seed=2)
    linear_probe(train_x, train_y, dev_x, 1 - dev_y, "sst2", seed=2)
    linear_probe(train_x, train_y, rng.normal(size=dev_x.shape), dev_y, "sst2", seed=2)
    assert len(seen) == 8
    assert {p.C for p in seen} == {seen[0].C} and {p.cv_scores for p in seen} == {seen[0].cv_scores}
    assert seen[0].C == real(train_x, train_y, seed=2).C
    assert score == pytest.approx(probe_score("sst2", real(train_x, train_y, seed=2).predict(dev_x), dev_y))


def test_linear_probe_learns_signal_and_never_looks_at_eval_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)
    score = linear_probe(x[:200], y[:200], x[200:], y[200:], "sst2")
    assert score > 0.95
    # labels that are noise: the probe is at chance on average over draws
    noise = [linear_probe(x[:200], rng.integers(0, 2, 200), x[200:], y[200:], "sst2") for _ in range(10)]
    assert abs(np.mean(noise) - 0.5) < 0.08
    # the predictions do not depend on the eval labels: flipping them turns accuracy a into 1 - a
    flipped = linear_probe(x[:200], y[:200], x[200:], 1 - y[200:], "sst2")
    assert score + flipped == pytest.approx(1.0)
    # one class among the training labels: that class everywhere, no C chosen
    assert linear_probe(x[:5], np.ones(5, int), x[200:], y[200:], "sst2") == pytest.approx(y[200:].mean())
    assert fit_probe(x[:5], np.ones(5, int)).C is None
    # a class with one example: no stratified split, scikit-learn's default C
    assert fit_probe(x[:6], np.array([0, 1, 1, 1, 1, 1])).C == 1.0
    assert fit_probe(x[:6], np.array([0, 0, 1, 1, 1, 1])).folds == 2
    with pytest.raises(ArgumentError, match="regression"):
        linear_probe(x[:10], y[:10], x[10:20], y[10:20], "stsb")
    with pytest.raises(ArgumentError, match="positive C"):
        fit_probe(x[:10], y[:10], cs=())


def test_linear_probe_fits_on_one_blas_thread(monkeypatch):
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_info

    seen = []
    fit = StandardScaler.fit

    def spy(self, *args, **kwargs):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(StandardScaler, "fit", spy)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # torch's count is not the probe's: a second BLAS thread only slows it down
        x = np.random.default_rng(0).normal(size=(60, 3))
        linear_probe(x[:40], (x[:40, 0] > 0).astype(int), x[40:], (x[40:, 0] > 0).astype(int), "sst2")
    finally:
        torch.set_num_threads(threads)
    assert seen and all(s == {1} for s in seen)  # the fit ran with one BLAS thread


def test_tfidf_baseline_uses_the_probe_protocol_and_grid(monkeypatch):
    from lmcourse.transfer import baseline_curve, nested_subset

    calls = []
    real = R.fit_probe

    def spy(x, y, **kwargs):
        probe = real(x, y, **kwargs)
        calls.append({"sparse": hasattr(x, "tocsr"), "n": x.shape[0], **kwargs, "probe": probe})
        return probe

    monkeypatch.setattr(R, "fit_probe", spy)
    train = load_glue("sst2", "train").select(range(240))
    dev = load_glue("sst2", "validation").select(range(80))
    score = tfidf_probe("sst2", train, dev, seed=4)
    (tfidf_call,) = calls
    assert tfidf_call["sparse"] and tfidf_call["n"] == 240 and tfidf_call["seed"] == 4
    assert tuple(tfidf_call.get("cs", PROBE_CS)) == PROBE_CS and tfidf_call["standardize"] is False
    probe = tfidf_call["probe"]
    assert probe.cs == PROBE_CS and probe.folds == 3 and PROBE_CS[int(np.argmax(probe.cv_scores))] == probe.C
    x_train, x_dev = tfidf_features("sst2", train, dev)
    expected = real(x_train, train["label"], seed=4, standardize=False)
    assert (expected.C, expected.cv_scores) == (probe.C, probe.cv_scores)
    assert score == pytest.approx(probe_score("sst2", expected.predict(x_dev), dev["label"]))
    # the dev labels cannot move its choice either
    shuffled = dev.add_column("shuffled", list(np.random.default_rng(0).permutation(dev["label"])))
    tfidf_probe("sst2", train, shuffled.remove_columns("label").rename_column("shuffled", "label"), seed=4)
    assert (calls[-1]["probe"].C, calls[-1]["probe"].cv_scores) == (probe.C, probe.cv_scores)
    # the probe on dense features: same grid, same folds, same seed
    x, y = _noisy(60, 4, 2)
    linear_probe(x[:40], y[:40], x[40:], y[40:], "sst2", seed=4)
    assert calls[-1]["probe"].cs == probe.cs and calls[-1]["probe"].folds == 3 and calls[-1]["seed"] == 4
    # notebook 14's curve: the TF-IDF rows are this baseline at every n and seed
    calls.clear()
    rows = baseline_curve("sst2", train, dev, sizes=[240], seeds=[4])
    part = train.select(nested_subset(240, 240, 4).tolist())  # the curve's subset, in its order
    assert next(r["score"] for r in rows if r["init"] == "TF-IDF + LR") == pytest.approx(
        tfidf_probe("sst2", part, dev, seed=4))
    assert [c["probe"].cs for c in calls] == [PROBE_CS, PROBE_CS]
    with pytest.raises(ArgumentError, match="regression"):
        tfidf_probe("stsb", train, dev)


def test_tfidf_features_of_pairs_add_the_shared_words():
    train = load_glue("mrpc", "train").select(range(50))
    dev = load_glue("mrpc", "validation").select(range(10))
    x_train, x_dev = tfidf_features("mrpc", train, dev)
    one, _ = tfidf_features("sst2", train.rename_column("sentence1", "sentence"), dev.rename_column("sentence1",
                                                                                                      "sentence"))
    width = x_train.shape[1] // 3
    assert x_train.shape == (50, 3 * width) and x_dev.shape == (10, 3 * width)
    a, b = x_train[:, :width], x_train[:, width:2 * width]
    np.testing.assert_allclose(x_train[:, 2 * width:].toarray(), a.multiply(b).toarray())
    assert one.shape[0] == 50


# ------------------------------------------------------------------------------------------ classifier
def test_pooled_classifier_is_mean_pool_then_linear_on_a_hf_encoder(tiny_bert):
    _, enc = load_encoder(tiny_bert)
    torch.manual_seed(0)
    head = PooledClassifier(enc, 3).eval()
    ids = torch.randint(5, 120, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    labels = torch.tensor([0, 2, 1, 2])
    out = head(input_ids=ids, attention_mask=mask, labels=labels)
    with torch.no_grad():
        rows = [head.classifier(enc(input_ids=ids[i:i + 1, :int(mask[i].sum())]).last_hidden_state[0].mean(0))
                for i in range(4)]
    expected = torch.stack(rows)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels), atol=1e-5, rtol=1e-5)
    assert head.body is head.encoder is enc and head.config is enc.config
    assert head.classifier.bias.abs().sum() == 0 and head.classifier.weight.std().item() == pytest.approx(0.02, rel=0.3)
    reg = PooledClassifier(enc, 1, regression=True).eval()
    y = torch.tensor([0.5, 3.0, 1.0, 2.0])
    out = reg(input_ids=ids, attention_mask=mask, labels=y)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), y))
    with pytest.raises(ArgumentError, match="no readout"):
        sequence_hidden(torch.nn.Linear(2, 2), ids, mask)


def test_old_names_are_the_readout_ones():
    """Notebooks 10 and 14 still read these through their old modules (08 reads readout.mean_pool itself)."""
    from lmcourse import objectives as OB
    from lmcourse import transfer as TR

    assert TR.mean_pool is OB.mean_over_tokens is mean_pool
    assert TR.MeanPoolingClassifier is TR.PooledClassifier is OB.PooledClassifier is PooledClassifier
    assert TR.load_encoder is load_encoder and TR.encoder_features is encoder_features
    assert TR.linear_probe is linear_probe and TR.PROBE_METRIC == R.PROBE_METRIC == "accuracy"
    assert OB.sequence_hidden is sequence_hidden and OB.hidden_size is R.hidden_size
