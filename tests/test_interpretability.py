"""lmcourse.interpretability: attributions against captum, the completeness axiom, rollout by hand, the
faithfulness curves on a model whose true attribution is known, probes and their control task."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from lmcourse import interpretability as ip
from lmcourse.errors import ArgumentError, UnknownNameError
from lmcourse.spread import compare

SENTENCES = ["a charming and often affecting journey .", "the plot is thin and the jokes fall flat ."]


@pytest.fixture(scope="module")
def tiny_classifier(tiny_bert):
    """The tiny random BERT with a random (scaled-up) 2-class head, in float64 and eval mode, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2,
                                                               attn_implementation="eager")
    model.classifier.weight.data *= 50  # random heads barely move the output; attributions need a signal
    return model.double().eval(), AutoTokenizer.from_pretrained(tiny_bert)


def _one(tokenizer, text=SENTENCES[0]):
    enc = ip.encode(tokenizer, [text])[0]
    return enc["input_ids"], enc["attention_mask"]


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_left", "riemann_right"])
def test_integrated_gradients_equals_captum(tiny_classifier, method):
    from captum.attr import LayerIntegratedGradients

    model, tok = tiny_classifier
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    base = ip.reference_ids(ids, tok)
    target = torch.tensor([1, 0])
    ours = ip.integrated_gradients(model, ids, mask, target, base, steps=16, method=method)
    lig = LayerIntegratedGradients(ip.captum_forward(model), model.get_input_embeddings())
    ref = lig.attribute(ids, baselines=base, additional_forward_args=(mask,), target=target, n_steps=16,
                        method=method).sum(-1) * mask
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-8)
    assert ours.abs().max() > 1e-6  # not a comparison of two zeros


def test_default_baseline_is_captums_default(tiny_classifier):
    from captum.attr import LayerIntegratedGradients

    model, tok = tiny_classifier
    ids, mask = _one(tok)
    ours = ip.integrated_gradients(model, ids, mask, 1, steps=8)
    ref = LayerIntegratedGradients(ip.captum_forward(model), model.get_input_embeddings()).attribute(
        ids, additional_forward_args=(mask,), target=1, n_steps=8).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-8)


def test_gradient_x_input_equals_captum(tiny_classifier):
    from captum.attr import LayerGradientXActivation

    model, tok = tiny_classifier
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ours = ip.gradient_x_input(model, ids, mask, torch.tensor([0, 1]))
    ref = LayerGradientXActivation(ip.captum_forward(model), model.get_input_embeddings()).attribute(
        ids, additional_forward_args=(mask,), target=torch.tensor([0, 1])).sum(-1) * mask
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_completeness_gap_shrinks_with_steps(tiny_classifier):
    model, tok = tiny_classifier
    ids, mask = _one(tok)
    base = ip.reference_ids(ids, tok)
    gaps = {}
    for steps in (2, 8, 32):
        attr = ip.integrated_gradients(model, ids, mask, 1, base, steps=steps)
        gaps[steps] = float(ip.completeness_gap(model, ids, mask, 1, attr, base).abs())
    fx = ip.predict_proba(model, ids, mask)[0, 1] - ip.predict_proba(model, base, mask)[0, 1]
    assert abs(fx) > 1e-4, "the test needs f(x) != f(baseline)"
    assert gaps[32] < 1e-8 and gaps[32] <= gaps[8] <= gaps[2]
    # the left Riemann sum converges only like 1/steps
    left = {s: float(ip.completeness_gap(model, ids, mask, 1, ip.integrated_gradients(
        model, ids, mask, 1, base, steps=s, method="riemann_left"), base).abs()) for s in (4, 64)}
    assert left[64] < left[4]


def test_integration_points_integrate_polynomials():
    for method, degree in [("gausslegendre", 7), ("riemann_trapezoid", 1), ("riemann_middle", 1)]:
        a, w = ip.integration_points(4, method)
        assert np.isclose(np.sum(w * a**degree), 1 / (degree + 1), atol=1e-12), method
    a, w = ip.integration_points(4, "riemann_left")
    assert not np.isclose(np.sum(w * a), 0.5)  # left sums are not exact for a line


# ------------------------------------------------------------------------------------------ attention
def _hand_rollout(att: np.ndarray) -> np.ndarray:
    """Abnar & Zuidema's recipe with explicit loops over layers, rows and columns (one example)."""
    n_layers, _, t, _ = att.shape
    result = np.eye(t)
    for layer in range(n_layers):
        a = att[layer].mean(0)
        a = 0.5 * a + 0.5 * np.eye(t)
        for i in range(t):
            a[i] = a[i] / a[i].sum()
        new = np.zeros((t, t))
        for i in range(t):
            for j in range(t):
                new[i, j] = sum(a[i, k] * result[k, j] for k in range(t))
        result = new
    return result


def test_rollout_equals_hand_computation_on_tiny_model(tiny_classifier):
    model, tok = tiny_classifier
    ids, mask = _one(tok)
    attns = ip.attentions(model, ids, mask)
    assert len(attns) == 2 and attns[0].shape[1] == 2
    ours = ip.attention_rollout(attns)[0].numpy()
    np.testing.assert_allclose(ours, _hand_rollout(torch.stack(attns)[:, 0].numpy()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.sum(-1), 1.0, atol=1e-12)  # rows stay distributions


def test_rollout_on_explicit_matrices():
    a1 = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]])
    a2 = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    att = np.stack([a1, a2])[:, None]  # (layers, heads=1, T, T)
    r1, r2 = 0.5 * a1 + 0.5 * np.eye(3), 0.5 * a2 + 0.5 * np.eye(3)
    np.testing.assert_allclose(ip.attention_rollout(torch.tensor(att))[0].numpy(), r2 @ r1, atol=1e-12)
    np.testing.assert_allclose(ip.attention_rollout(torch.tensor(att), add_residual=False)[0].numpy(), a2 @ a1,
                               atol=1e-12)
    two_heads = np.stack([np.stack([a1, a1.T / a1.T.sum(-1, keepdims=True)])])  # (1, 2, T, T)
    np.testing.assert_allclose(ip.raw_attention(torch.tensor(two_heads))[0].numpy(),
                               (a1[0] + (a1.T / a1.T.sum(-1, keepdims=True))[0]) / 2, atol=1e-12)


# ------------------------------------------------------------------------------------------ faithfulness
class BagOfEmbeddings(nn.Module):
    """logits (−z, z) with z = ∑_t w·e(token_t): each token's effect on the output is known exactly."""

    def __init__(self, vocab: int = 50, dim: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(vocab, dim)
        self.emb.weight.data = torch.randn(vocab, dim, generator=g, dtype=torch.float64)
        self.w = torch.randn(dim, generator=g, dtype=torch.float64)
        self.config = types.SimpleNamespace(pad_token_id=0)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **_):
        x = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        z = ((x @ self.w) * attention_mask).sum(-1)
        return types.SimpleNamespace(logits=torch.stack([-z, z], -1))


MASK = 1


def _synthetic_sentence():
    model = BagOfEmbeddings().eval()
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 3]])
    mask = torch.ones_like(ids)
    pred = int(ip.predict_proba(model, ids, mask).argmax(-1)[0])
    sign = 1.0 if pred == 1 else -1.0
    contrib = sign * ((model.emb(ids[0]) - model.emb.weight[MASK]) @ model.w).detach()  # what masking removes
    return model, ids, mask, pred, contrib


def test_oracle_attribution_gives_the_steepest_deletion_curve():
    model, ids, mask, pred, oracle = _synthetic_sentence()
    kw = dict(target=pred, replace_id=MASK)
    best = ip.aopc(ip.deletion_curve(model, ids, mask, oracle, **kw))
    reversed_ = ip.aopc(ip.deletion_curve(model, ids, mask, -oracle, **kw))
    randoms = [ip.aopc(ip.deletion_curve(model, ids, mask, ip.random_scores(ids.shape[1], s), **kw))
               for s in range(30)]
    assert best > max(randoms) and min(randoms) > reversed_
    ins_best = ip.aopc(ip.insertion_curve(model, ids, mask, oracle, **kw), "insertion")
    ins_random = [ip.aopc(ip.insertion_curve(model, ids, mask, ip.random_scores(ids.shape[1], s), **kw),
                          "insertion") for s in range(30)]
    assert ins_best > max(ins_random)


def test_integrated_gradients_recovers_the_oracle_on_a_linear_model():
    model, ids, mask, pred, oracle = _synthetic_sentence()
    base = ids.clone()
    base[0, 1:-1] = MASK
    attr = ip.integrated_gradients(model, ids, mask, pred, base, steps=2, output="logit")[0]
    torch.testing.assert_close(attr[1:-1], oracle[1:-1], rtol=0, atol=1e-12)


def test_faithfulness_matches_the_single_curves():
    model, ids, mask, _, oracle = _synthetic_sentence()
    rnd = ip.random_scores(ids.shape[1], 0)
    out = ip.faithfulness(model, ids, mask, {"oracle": oracle, "random": rnd}, replace_id=MASK, points=5)
    np.testing.assert_allclose(out["random"]["deletion"],
                               ip.deletion_curve(model, ids, mask, rnd, replace_id=MASK, points=5))
    np.testing.assert_allclose(out["oracle"]["insertion"],
                               ip.insertion_curve(model, ids, mask, oracle, replace_id=MASK, points=5))
    assert out["oracle"]["deletion_aopc"] == ip.aopc(out["oracle"]["deletion"])
    assert len(out["oracle"]["deletion"]) == 5


def test_perturbed_inputs_mask_in_order_and_keep_special_tokens():
    ids = torch.tensor([[101, 7, 8, 9, 102]])
    scores = torch.tensor([9.0, 0.1, 0.9, 0.5, 9.0])
    rows = ip.perturbed_inputs(ids, None, scores, "deletion", replace_id=103)
    assert rows.tolist() == [[101, 7, 8, 9, 102], [101, 7, 103, 9, 102], [101, 7, 103, 103, 102],
                             [101, 103, 103, 103, 102]]
    rows = ip.perturbed_inputs(ids, None, scores, "insertion", replace_id=103)
    assert rows.tolist() == [[101, 103, 103, 103, 102], [101, 103, 8, 103, 102], [101, 103, 8, 9, 102],
                             [101, 7, 8, 9, 102]]


def test_aopc_of_hand_made_curves():
    assert ip.aopc([1.0, 0.5, 0.25, 0.0]) == pytest.approx((0 + 0.5 + 0.75 + 1.0) / 4)
    assert ip.aopc([0.2, 0.6, 1.0], "insertion") == pytest.approx((0 + 0.4 + 0.8) / 3)
    assert ip.aopc([0.5, 0.7]) == pytest.approx(-0.1)  # deleting evidence against the class raises it


def test_methods_compared_per_sentence_with_a_paired_t_interval():
    """The comparison notebook 12 makes: two methods' AOPC on the same sentences, paired by sentence."""
    model = BagOfEmbeddings().eval()
    g = torch.Generator().manual_seed(1)
    oracle_aopc, random_aopc = [], []
    for _ in range(12):  # a dozen sentences of 10 random words between [CLS] and [SEP]
        ids = torch.cat([torch.tensor([2]), torch.randint(4, 50, (10,), generator=g), torch.tensor([3])])[None]
        mask = torch.ones_like(ids)
        pred = int(ip.predict_proba(model, ids, mask).argmax(-1)[0])
        sign = 1.0 if pred == 1 else -1.0
        oracle = sign * ((model.emb(ids[0]) - model.emb.weight[MASK]) @ model.w).detach()
        kw = dict(target=pred, replace_id=MASK)
        oracle_aopc.append(ip.aopc(ip.deletion_curve(model, ids, mask, oracle, **kw)))
        random_aopc.append(ip.aopc(ip.deletion_curve(model, ids, mask, ip.random_scores(ids.shape[1], 0), **kw)))
    clear = compare(oracle_aopc, random_aopc, ("oracle", "random"), paired=True)
    assert clear.measured and clear.significant and clear.better and clear.difference > 0
    assert clear.interval[0] > 0 and clear.method == "paired t" and clear.n == 12
    same = compare(random_aopc, random_aopc, ("random", "random"), paired=True)
    assert same.measured and not same.significant and same.difference == 0
    # pairing is what makes a small, consistent gain visible against a large sentence-to-sentence spread
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    shifted = base + 0.2 + rng.normal(scale=0.05, size=40)
    assert compare(shifted, base, paired=True).significant
    assert not compare(shifted, base, paired=False).significant
    noise = base + rng.normal(scale=0.1, size=40)
    assert not compare(noise, base, paired=True).significant


def test_shap_values_are_aligned_and_efficient(tiny_classifier):
    model, tok = tiny_classifier
    values = ip.shap_attributions(model.float(), tok, SENTENCES, targets=[1, 1], max_evals=64)
    model.double()
    for text, v in zip(SENTENCES, values):
        ids, mask = _one(tok, text)
        assert v.shape == (ids.shape[1],)
        masked = ids.clone()
        masked[0, 1:-1] = tok.mask_token_id
        p = ip.predict_proba(model, torch.cat([ids, masked]), mask.expand(2, -1))[:, 1]
        assert v.sum() == pytest.approx(p[0] - p[1], abs=1e-6)  # SHAP's efficiency: Σφ = f(x) − f(masked)


# ------------------------------------------------------------------------------------------ probing
def test_probe_finds_the_layer_that_holds_the_label_and_control_is_lower():
    rng = np.random.default_rng(0)
    n, d = 400, 16
    y = rng.integers(0, 2, size=n)
    types_ = rng.integers(0, 40, size=n)
    X = rng.normal(size=(3, n, d))
    X[1, :, 0] += 3.0 * (2 * y - 1)  # layer 1 holds the label on one direction
    X[2, :, :] += 3.0 * np.eye(d)[types_ % d]  # layer 2 holds (part of) the type
    res = ip.probe_selectivity(X[:, :300], y[:300], X[:, 300:], y[300:], types_[:300], types_[300:])
    assert res["task"][1] > 0.9 and res["task"][0] < 0.65
    assert res["selectivity"][1] > 0.3
    np.testing.assert_allclose(res["selectivity"], res["task"] - res["control"])
    assert res["control"][2] > res["control"][0]  # a control is learnable where the type is encoded
    many = ip.probe_selectivity(X[:, :300], y[:300], X[:, 300:], y[300:], types_[:300], types_[300:], seeds=(0, 1, 2))
    assert many["control_runs"].shape == (3, 3)
    np.testing.assert_allclose(many["control_runs"][0], res["control"])  # seed 0 is the single-seed control
    np.testing.assert_allclose(many["control_std"], many["control_runs"].std(0, ddof=1))
    assert (many["control_std"] > 0).any() and np.isnan(res["control_std"]).all()


def test_control_labels_are_fixed_per_type_and_follow_the_label_distribution():
    types_ = [i % 500 for i in range(5000)]
    labels = np.array([0] * 4000 + [1] * 1000)
    c = ip.control_labels(types_, labels, seed=3)
    assert all(len(set(c[np.array(types_) == t])) == 1 for t in range(0, 500, 50))
    assert abs(c.mean() - 0.2) < 0.06


def test_length_bins_and_word_presence():
    assert ip.length_bins(["a b", "a b c d", "a b c d e f"], [3, 5]).tolist() == [0, 1, 2]
    assert ip.word_presence(["Not bad", "nothing", "it is not"], "not").tolist() == [1, 0, 1]


def test_hidden_states_shape(tiny_classifier):
    model, tok = tiny_classifier
    h = ip.hidden_states(model, tok, SENTENCES * 3, pooling="mean", batch_size=4)
    assert h.shape == (3, 6, 32)
    np.testing.assert_allclose(h[:, 0], h[:, 2])  # the same sentence in another batch: the same vector
    c = ip.hidden_states(model, tok, SENTENCES, pooling="cls")
    assert not np.allclose(c, h[:, :2])


# ------------------------------------------------------------------------------------------ pictures
def test_heatmaps(tmp_path):
    page = ip.render_token_heatmap(["[CLS]", "<b>", "good"], [5.0, -0.5, 1.0], title="t")
    assert page.count("<span") == 3 and "&lt;b&gt;" in page and "rgba(214,38,40,1.00)" in page
    assert "rgba(30,119,181,0.50)" in page  # negative half of the max: blue at half opacity
    assert "rgba(214,38,40,0.00)" in page  # [CLS] is left out of the colour scale and uncoloured
    both = ip.side_by_side_html([page, page], ["most", "least"])
    assert both.count("<td") == 2
    fig = ip.plot_token_heatmaps([("a", ["x", "y"], [1.0, -1.0])] * 3, columns=2, path=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------------------------------ errors
def test_clear_errors(tiny_classifier):
    model, tok = tiny_classifier
    ids, mask = _one(tok)
    with pytest.raises(UnknownNameError, match="integration method"):
        ip.integrated_gradients(model, ids, mask, 1, method="simpson")
    with pytest.raises(ArgumentError, match="steps"):
        ip.integration_points(0)
    with pytest.raises(ArgumentError, match="out of range"):
        ip.gradient_x_input(model, ids, mask, 2)
    with pytest.raises(ArgumentError, match="one score per token"):
        ip.deletion_curve(model, ids, mask, torch.ones(3))
    with pytest.raises(ArgumentError, match="at least 2 points"):
        ip.aopc([1.0])
    with pytest.raises(UnknownNameError, match="curve kind"):
        ip.aopc([1.0, 0.0], "sideways")
    with pytest.raises(ArgumentError, match="shape"):
        ip.attention_rollout(torch.ones(2, 3, 4))
    with pytest.raises(ArgumentError, match="single class"):
        ip.layer_probe(np.ones((1, 4, 2)), [1, 1, 1, 1], np.ones((1, 4, 2)), [0, 1, 0, 1])
    with pytest.raises(ArgumentError, match="baseline_ids"):
        ip.integrated_gradients(model, ids, mask, 1, baseline_ids=ids[:, :3])
    model.train()
    try:
        with pytest.raises(ArgumentError, match="eval"):
            ip.integrated_gradients(model, ids, mask, 1)
    finally:
        model.eval()


# ------------------------------------------------------------------------------------------ review checks (#40)
def test_exact_shapley_equals_shaps_kernel_shap_over_every_coalition(tiny_classifier):
    """Our Shapley values over all coalitions against shap (Kernel SHAP given every coalition), and the
    efficiency the exact values have by the formula (not by construction, as the Partition explainer's)."""
    model, tok = tiny_classifier
    ids, mask = _one(tok)
    ours = ip.exact_shapley(model, ids, mask, 1, tok.mask_token_id)
    ref = ip.shap_exact(model, ids, mask, 1, tok.mask_token_id)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert np.abs(ours).max() > 1e-6 and ours[0] == 0 and ours[-1] == 0
    masked = ids.clone()
    masked[0, 1:-1] = tok.mask_token_id
    p = ip.predict_proba(model, torch.cat([ids, masked]), mask.expand(2, -1))[:, 1]
    assert ours.sum() == pytest.approx(p[0] - p[1], abs=1e-12)
    with pytest.raises(ArgumentError, match="2\\^"):
        ip.exact_shapley(model, ids, mask, 1, tok.mask_token_id, max_players=3)


def test_exact_shapley_is_the_weighted_average_over_coalitions():
    """Three players, the formula typed out by hand: a Shapley value weights each coalition size equally."""
    model, ids, mask, pred, _ = _synthetic_sentence()
    ids = ids[:, [0, 1, 2, 3, -1]]
    mask = torch.ones_like(ids)
    phi = ip.exact_shapley(model, ids, mask, pred, MASK)

    def v(keep):
        row = ids.clone()
        for j, pos in enumerate((1, 2, 3)):
            if j not in keep:
                row[0, pos] = MASK
        return float(ip.predict_proba(model, row, mask)[0, pred])

    # player 0: weights 1/3 (empty), 1/6 ({1}), 1/6 ({2}), 1/3 ({1, 2})
    hand = ((v({0}) - v(set())) / 3 + (v({0, 1}) - v({1})) / 6 + (v({0, 2}) - v({2})) / 6
            + (v({0, 1, 2}) - v({1, 2})) / 3)
    assert phi[1] == pytest.approx(hand, abs=1e-12)


def test_eraser_scores_by_hand_and_the_oracle_is_most_comprehensive():
    model, ids, mask, pred, _ = _synthetic_sentence()
    model.w = model.w * 0.1  # a probability away from saturation, so that removing tokens moves it
    sign = 1.0 if pred == 1 else -1.0
    removal = sign * (model.emb(ids[0]) @ model.w).detach()  # what removing a token takes from the logit
    rnd = {f"r{s}": ip.random_scores(ids.shape[1], s) for s in range(20)}
    out = ip.eraser_scores(model, ids, mask, {"oracle": removal, "reversed": -removal, **rnd}, target=pred)
    counts = ip.eraser_counts(10)
    assert counts == [1, 1, 1, 2, 5]
    order = torch.argsort(-removal[1:-1], stable=True) + 1
    f = float(ip.predict_proba(model, ids, mask)[0, pred])
    for b, k in enumerate(counts):
        keep = [p for p in range(ids.shape[1]) if p not in set(order[:k].tolist())]
        rest = float(ip.predict_proba(model, ids[:, keep], mask[:, keep])[0, pred])
        alone = [0, *sorted(order[:k].tolist()), ids.shape[1] - 1]
        only = float(ip.predict_proba(model, ids[:, alone], mask[:, alone])[0, pred])
        assert out["oracle"]["comprehensiveness_bins"][b] == pytest.approx(f - rest, abs=1e-12)
        assert out["oracle"]["sufficiency_bins"][b] == pytest.approx(f - only, abs=1e-12)
    comp = [out[f"r{s}"]["comprehensiveness"] for s in range(20)]
    assert out["oracle"]["comprehensiveness"] > max(comp) and min(comp) > out["reversed"]["comprehensiveness"]
    assert out["oracle"]["sufficiency"] < min(out[f"r{s}"]["sufficiency"] for s in range(20))
    with pytest.raises(ArgumentError, match="fractions"):
        ip.eraser_counts(10, (0.0, 0.5))


def test_mask_baseline_and_baseline_errors(tiny_classifier):
    _, tok = tiny_classifier
    ids, _ = _one(tok)
    base = ip.reference_ids(ids, tok, token="mask")
    assert base[0, 0] == ids[0, 0] and base[0, -1] == ids[0, -1]
    assert (base[0, 1:-1] == tok.mask_token_id).all()
    assert (ip.reference_ids(ids, tok)[0, 1:-1] == tok.pad_token_id).all()
    with pytest.raises(UnknownNameError, match="baseline token"):
        ip.reference_ids(ids, tok, token="zero")


def test_near_duplicates_and_seen_type_share():
    against = ["a charming and often affecting journey", "thin plot"]
    texts = ["often affecting journey , really", "charming and often", "thin plot", "plot thin", "a new film here"]
    assert ip.near_duplicates(texts, against, n=3).tolist() == [True, True, True, False, False]
    assert ip.near_duplicates(["and often affecting"], against, n=4).tolist() == [True]  # short: a sub-phrase
    assert ip.seen_type_share(["a", "b", "a"], ["a", "c", "b", "d"]) == pytest.approx(0.5)
    with pytest.raises(ArgumentError):
        ip.seen_type_share(["a"], [])


def test_attentions_from_queries_keys_equal_output_attentions(tiny_classifier):
    model, tok = tiny_classifier
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    ours = ip.attentions_from_queries_keys(model, enc["input_ids"], enc["attention_mask"])
    theirs = ip.attentions(model, enc["input_ids"], enc["attention_mask"])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_captum_convergence_delta_is_our_completeness_gap(tiny_classifier):
    model, tok = tiny_classifier
    ids, mask = _one(tok)
    base = ip.reference_ids(ids, tok, token="mask")
    attr, delta = ip.captum_integrated_gradients(model, ids, mask, 1, base, steps=2, method="riemann_left")
    ours = ip.integrated_gradients(model, ids, mask, 1, base, steps=2, method="riemann_left")
    torch.testing.assert_close(attr, ours, rtol=0, atol=1e-10)
    gap = ip.completeness_gap(model, ids, mask, 1, ours, base)
    torch.testing.assert_close(delta.to(gap.dtype), gap, rtol=0, atol=1e-10)
    assert gap.abs().max() > 1e-8  # two left Riemann points leave a gap to compare


def test_probe_follows_the_probe_protocol_and_reports_the_seen_share():
    from lmcourse.readout import fit_probe

    rng = np.random.default_rng(1)
    n, d = 240, 6
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(2, n, d))
    X[1, :, 0] += 2.0 * (2 * y - 1)
    types_ = np.arange(n) % 30
    res = ip.probe_selectivity(X[:, :160], y[:160], X[:, 160:], y[160:], types_[:160], types_[160:], seeds=(0, 1))
    for layer in range(2):  # C by cross-validation inside probe training, the control at the task's C
        assert res["C"][layer] == fit_probe(X[layer, :160], y[:160]).C
    assert res["seen_share"] == 1.0
    unseen = ip.probe_selectivity(X[:, :160], y[:160], X[:, 160:], y[160:], types_[:160], types_[160:] + 100)
    assert unseen["seen_share"] == 0.0
    fixed = ip.layer_probe(X[:, :160], y[:160], X[:, 160:], y[160:], C=1.0)
    assert fixed.shape == (2,) and fixed[1] > 0.8
