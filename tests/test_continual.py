"""lmcourse.continual: transfer metrics against hand-computed matrices, the diagonal Fisher against per-example
gradients from torch.func, the EWC penalty against its formula, the replay sampler's proportions, and the
LoRA-per-task path leaving earlier tasks' outputs exactly unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcourse.continual import (
    LoRAPerTask,
    ReplayBuffer,
    SequenceResult,
    TaskData,
    TrainConfig,
    build_model,
    collate,
    diagonal_fisher,
    diagonal_scores,
    ewc_penalty,
    initial_scores,
    mixed_batches,
    paired_values,
    run_joint,
    run_sequence,
    train_examples,
    transfer_comparison,
    transfer_metrics,
)
from lmcourse.errors import ArgumentError, UnknownNameError
from lmcourse.spread import Family, compare, verdict_metrics


# ------------------------------------------------------------------------------------------ metrics
def test_transfer_metrics_by_hand():
    R = [[0.90, 0.50, 0.40],
         [0.70, 0.80, 0.55],
         [0.60, 0.70, 0.85]]
    b = [0.5, 0.5, 0.45]
    m = transfer_metrics(R, b)
    assert m["average_accuracy"] == pytest.approx((0.60 + 0.70 + 0.85) / 3, abs=1e-12)
    assert m["backward_transfer"] == pytest.approx(((0.60 - 0.90) + (0.70 - 0.80)) / 2, abs=1e-12)
    assert m["forward_transfer"] == pytest.approx(((0.50 - 0.50) + (0.55 - 0.45)) / 2, abs=1e-12)
    assert transfer_metrics(R)["forward_transfer"] is None  # no b: no forward transfer
    assert transfer_metrics(np.asarray(R))["backward_transfer"] == pytest.approx(-0.2, abs=1e-12)
    assert m["forgetting"] == pytest.approx(((0.90 - 0.60) + (0.80 - 0.70)) / 2, abs=1e-12)


def test_forgetting_is_the_drop_from_the_best_score_after_training():
    """Chaudhry et al. (2018): a task that improved after it was trained and then fell counts its whole fall,
    where BWT reads only the drop from the diagonal."""
    R = [[0.60, 0.50, 0.40],
         [0.90, 0.80, 0.55],  # task 0 improved while task 1 trained
         [0.50, 0.85, 0.85]]  # task 1 improved at the end: negative forgetting, as in the paper's definition
    m = transfer_metrics(R)
    assert m["forgetting"] == pytest.approx(((0.90 - 0.50) + (0.80 - 0.85)) / 2, abs=1e-12)
    assert m["backward_transfer"] == pytest.approx(((0.50 - 0.60) + (0.85 - 0.80)) / 2, abs=1e-12)


def test_transfer_metrics_two_tasks_and_no_forgetting():
    m = transfer_metrics([[0.8, 0.6], [0.7, 0.9]], [0.5, 0.5])
    assert m == pytest.approx({"average_accuracy": 0.8, "backward_transfer": -0.1, "forward_transfer": 0.1,
                               "forgetting": 0.1})
    # a model that never changes its earlier scores (LoRA per task) has zero backward transfer
    R = np.array([[0.8, 0.5, 0.5], [0.8, 0.7, 0.5], [0.8, 0.7, 0.6]])
    assert transfer_metrics(R)["backward_transfer"] == 0.0


@pytest.mark.parametrize("R, b, match", [
    ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], None, "square"),
    ([0.5, 0.6], None, "square"),
    ([[0.7]], None, "at least 2 tasks"),
    ([[0.7, float("nan")], [0.6, 0.8]], None, "non-finite"),
    ([[0.7, 0.5], [0.6, 0.8]], [0.5, 0.5, 0.5], "one score per task"),
])
def test_transfer_metrics_errors(R, b, match):
    with pytest.raises(ArgumentError, match=match):
        transfer_metrics(R, b)


# ------------------------------------------------------------------------------------------ comparisons
def _result(method, order, seed, diag, last):
    """A fake run: ``diag`` on the diagonal, ``last`` as the final row's off-diagonal entries."""
    T = len(order)
    R = np.full((T, T), 0.5)
    R[np.arange(T), np.arange(T)] = diag
    R[T - 1, :T - 1] = last
    return SequenceResult(method, tuple(order), seed, R, np.full(T, 0.5), 1.0)


def test_diagonal_scores_and_pairing_by_seed_and_order():
    runs = [_result("naive", ("a", "b"), 1, [0.9, 0.8], [0.6]), _result("naive", ("b", "a"), 0, [0.7, 0.95], [0.5]),
            _result("naive", ("a", "b"), 0, [0.85, 0.75], [0.55]),
            _result("replay", ("a", "b"), 0, [0.85, 0.7], [0.8]), _result("replay", ("b", "a"), 0, [0.7, 0.9], [0.65]),
            _result("replay", ("a", "b"), 1, [0.9, 0.8], [0.85])]
    assert diagonal_scores(runs[:3], "a") == [0.9, 0.95, 0.85]  # R[i, i] wherever the task stood in the order
    rep, nai = paired_values(runs, "replay", "naive", "backward_transfer")
    # sorted by (seed, order): (0, a→b), (0, b→a), (1, a→b), whatever order the runs were listed in
    assert rep == pytest.approx([0.8 - 0.85, 0.65 - 0.7, 0.85 - 0.9])
    assert nai == pytest.approx([0.55 - 0.85, 0.5 - 0.7, 0.6 - 0.9])
    joint = [SequenceResult("joint", ("a", "b"), s, np.full((2, 2), v), np.full(2, 0.5), 1.0)
             for s, v in ((1, 0.9), (0, 0.8))]
    j, n = paired_values(runs + joint, "joint", "naive", "average_accuracy", by="seed")
    assert j == pytest.approx([0.8, 0.9])
    assert n == pytest.approx([np.mean([(0.55 + 0.75) / 2, (0.5 + 0.95) / 2]), (0.6 + 0.8) / 2])
    with pytest.raises(ArgumentError, match="several runs"):
        paired_values(runs + joint, "naive", "joint", "average_accuracy", by="seed")
    with pytest.raises(ArgumentError, match="same seed and orders"):
        paired_values(runs[:3] + runs[4:], "replay", "naive", "average_accuracy")
    with pytest.raises(UnknownNameError, match="pairing"):
        paired_values(runs, "replay", "naive", "average_accuracy", by="order")
    with pytest.raises(ArgumentError, match="not in"):
        diagonal_scores(runs, "c")


def test_transfer_comparison_is_not_measured_when_a_task_was_never_learned():
    a, b = [-0.01, 0.0, -0.02, 0.01], [-0.20, -0.25, -0.18, -0.22]
    plain = compare(a, b, ("replay", "naive"), paired=True)
    ok = transfer_comparison(a, b, ("replay", "naive"), paired=True)
    assert ok.measured and ok.significant and ok.better and ok.interval == plain.interval
    assert ok.verdict_text() == plain.verdict_text()
    dead = transfer_comparison(a, b, ("replay", "naive"), paired=True, unlearned=[("naive", "cola")])
    assert not dead.measured and not dead.significant and dead.dead_arms == ("naive",)
    assert "not measured" in dead.verdict and "naive did not learn cola" in dead.verdict
    assert dead.interval == plain.interval and verdict_metrics(dead)["measured"] == 0
    fam = Family("test_continual/bwt")
    fam.add("ok", ok)
    fam.add("dead", dead)
    assert fam.gains() == {"ok": True, "dead": False}
    single = transfer_comparison([0.1], [0.0], ("replay", "naive"), unlearned=[("replay", "cola")])
    assert not single.measured and "single run" in single.verdict
    with pytest.raises(ArgumentError, match="not compared"):
        transfer_comparison(a, b, ("replay", "naive"), unlearned=[("ewc", "cola")])
    with pytest.raises(ArgumentError, match="constant predictor"):
        transfer_comparison(a, b, ("replay", "naive"), chance=0.5)


# ------------------------------------------------------------------------------------------ EWC
def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _nll(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")


def _data(n: int = 24, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_diagonal_fisher_equals_per_example_gradients_squared():
    from torch.func import functional_call, grad, vmap

    model = _mlp()
    x, y = _data()
    batches = [{"x": x[s:s + 8], "y": y[s:s + 8]} for s in range(0, len(x), 8)]
    ours = diagonal_fisher(model, batches, _nll)

    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    for name in params:
        exact = (per_example[name] ** 2).mean(0).float()
        torch.testing.assert_close(ours[name], exact, rtol=1e-5, atol=1e-9)
        # the square of the batch-mean gradient is a different (and wrong) quantity
        batch_sq = per_example[name].mean(0).float() ** 2
        assert not torch.allclose(ours[name], batch_sq, rtol=1e-2, atol=1e-9), name


def test_diagonal_fisher_restricted_params_and_errors():
    model = _mlp()
    x, y = _data(6)
    only = {"2.weight": model[2].weight}
    f = diagonal_fisher(model, [{"x": x, "y": y}], _nll, only)
    assert set(f) == {"2.weight"} and f["2.weight"].shape == model[2].weight.shape
    with pytest.raises(ArgumentError, match="no examples"):
        diagonal_fisher(model, [], _nll)
    with pytest.raises(ArgumentError, match="no parameters"):
        diagonal_fisher(model, [{"x": x, "y": y}], _nll, {})


def test_ewc_penalty_by_hand_and_its_gradient():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    anchor = {n: p.detach().clone() + 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    lam = 7.0
    hand = 0.0
    for n, p in model.named_parameters():
        rows = zip(fisher[n].flatten().tolist(), p.detach().flatten().tolist(), anchor[n].flatten().tolist())
        for fv, pv, av in rows:
            hand += fv * (pv - av) ** 2
    pen = ewc_penalty(model, fisher, anchor, lam)
    assert pen.item() == pytest.approx(0.5 * lam * hand, rel=1e-6)
    pen.backward()  # ∂/∂θ = λ F (θ − θ*)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, lam * fisher[n] * (p.detach() - anchor[n]))
    at_anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert ewc_penalty(model, fisher, at_anchor, lam).item() == 0.0
    with pytest.raises(ArgumentError, match="no parameter or anchor"):
        ewc_penalty(model, {"nope": torch.ones(1)}, anchor, lam)


# ------------------------------------------------------------------------------------------ replay
def _examples(task: str, n: int, start: int = 0) -> list[dict]:
    return [{"input_ids": [101, start + i, 102], "token_type_ids": [0, 0, 0], "label": i % 2, "task": task}
            for i in range(n)]


def test_replay_buffer_capacity_and_sampling_split():
    buf = ReplayBuffer(capacity_per_task=20, seed=0)
    buf.add("a", _examples("a", 100))
    buf.add("b", _examples("b", 8))  # fewer than the capacity: all kept
    assert len(buf.store["a"]) == 20 and len(buf.store["b"]) == 8 and len(buf) == 28
    assert len({e["input_ids"][1] for e in buf.store["a"]}) == 20  # without replacement
    draws = buf.sample(20000, np.random.default_rng(1))
    share_a = np.mean([e["task"] == "a" for e in draws])
    assert abs(share_a - 0.5) < 0.02  # tasks uniformly, not in proportion to what is stored (20:8)
    with pytest.raises(ArgumentError, match="empty"):
        ReplayBuffer(5).sample(3)


@pytest.mark.parametrize("fraction", [0.25, 0.3])
def test_mixed_batches_replayed_share_and_split(fraction):
    buf = ReplayBuffer(capacity_per_task=50, seed=0)
    for t in ("a", "b", "c"):
        buf.add(t, _examples(t, 200))
    current = _examples("cur", 8000)
    batches = list(mixed_batches(current, buf, batch_size=16, replay_fraction=fraction, seed=3))
    flat = [e for b in batches for e in b]
    replayed = [e for e in flat if e["task"] != "cur"]
    assert sorted(e["input_ids"][1] for e in flat if e["task"] == "cur") == list(range(8000))  # each once
    assert all(len(b) == 16 for b in batches[:-1])
    assert abs(len(replayed) / len(flat) - fraction) < 0.01
    for t in ("a", "b", "c"):
        assert abs(np.mean([e["task"] == t for e in replayed]) - 1 / 3) < 0.03
    # a pass over few examples (many short last batches) keeps the share too
    short = [e for s in range(400) for b in mixed_batches(current[:20], buf, 16, fraction, s) for e in b]
    assert abs(np.mean([e["task"] != "cur" for e in short]) - fraction) < 0.01
    plain = list(mixed_batches(current[:40], ReplayBuffer(5), 16, fraction, 0))
    assert [len(b) for b in plain] == [16, 16, 8]  # an empty buffer: plain batches
    with pytest.raises(ArgumentError, match="replay_fraction"):
        next(mixed_batches(current, buf, 16, 1.0, 0))


# ------------------------------------------------------------------------------------------ models
def _task(name: str, n: int, seed: int) -> list[dict]:
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(g.integers(4, 10))
        ids = [101, *g.integers(1000, 1100, size=k).tolist(), 102]
        out.append({"input_ids": ids, "token_type_ids": [0] * len(ids), "label": int(ids[1] % 2), "task": name})
    return out


def _tasks(n: int = 24) -> list[TaskData]:
    return [TaskData(t, 2, _task(t, n, i), _task(t, 8, 10 + i), _task(t, 16, 20 + i)) for i, t in enumerate("ab")]


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_bert)


CFG = TrainConfig(learning_rate=1e-2, head_lr=1e-2, batch_size=8, checks=1, eval_batch_size=16, lora_lr=5e-2,
                  ewc_lambda=10.0, fisher_samples=4, lora_r=2, lora_alpha=4)


def test_lora_per_task_leaves_earlier_tasks_unchanged(encoder):
    tasks = _tasks()
    model = build_model(encoder, tasks, seed=0)
    lora = LoRAPerTask(model, r=2, alpha=4)
    probe = collate(tasks[0].dev)
    base = {n: p.detach().clone() for n, p in model.encoder.named_parameters() if "lora_" not in n}
    with torch.no_grad():
        pretrained = model.eval().pooled(probe)
    outs = {}
    for i, t in enumerate(tasks):
        lora.new_adapter(i)
        train_examples(model, lambda ep, t=t: mixed_batches(t.train, None, 8, 0.0, ep), [t.name],
                       {t.name: t.heldout}, CFG, seed=i, lr=CFG.lora_lr)
        lora.save(t.name)
        with torch.no_grad():
            outs[t.name] = model.eval().logits(probe, t.name).clone()
    lora.activate("a")
    with torch.no_grad():
        torch.testing.assert_close(model.eval().logits(probe, "a"), outs["a"], rtol=0, atol=0)
        assert not torch.allclose(outs["a"], outs["b"])  # the two adapters (and heads) differ
        lora.activate(None)
        torch.testing.assert_close(model.eval().pooled(probe), pretrained, rtol=0, atol=0)
    for n, p in model.encoder.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), n
    expected = sum(2 * (32 + 32) for _ in range(2 * 2))  # 2 layers x (query, value) x r (d_in + d_out)
    assert lora.adapter_params() == expected


def test_run_sequence_every_method(encoder):
    tasks = _tasks()
    results = {m: run_sequence(encoder, tasks, m, CFG, seed=0, replay_per_task=6) for m in
               ("naive", "replay", "ewc", "lora")}
    for m, r in results.items():
        assert r.R.shape == (2, 2) and r.random_init.shape == (2,) and r.order == ("a", "b"), m
        assert set(r.metrics) == {"average_accuracy", "backward_transfer", "forward_transfer", "forgetting"}
    lora = results["lora"]
    assert lora.R[1, 0] == lora.R[0, 0] and lora.metrics["backward_transfer"] == 0.0
    bf16 = run_sequence(encoder, tasks, "lora", dataclasses.replace(CFG, bf16=True), seed=0)  # under autocast too
    assert bf16.R[1, 0] == bf16.R[0, 0]
    # every method starts from the same model: the same scores before training
    for r in results.values():
        np.testing.assert_array_equal(r.random_init, results["naive"].random_init)
    # the first stage shared between naive, replay and EWC gives the same numbers as training it again
    cache: dict = {}
    for m in ("naive", "ewc", "replay"):
        again = run_sequence(encoder, tasks, m, CFG, seed=0, replay_per_task=6, first_task_cache=cache,
                             random_init=initial_scores(encoder, tasks, 0, CFG))
        np.testing.assert_allclose(again.R, results[m].R, rtol=0, atol=1e-12)
        np.testing.assert_allclose(again.random_init, results[m].random_init, rtol=0, atol=0)
    assert len(cache) == 1 and again.details["train"][0].get("reused")
    # a task's starting head does not depend on the order of the tasks
    flipped = initial_scores(encoder, tasks[::-1], 0, CFG)
    assert flipped == initial_scores(encoder, tasks, 0, CFG)
    joint = run_joint(encoder, tasks, CFG, seed=0)
    assert joint.R.shape == (2, 2) and (joint.R[0] == joint.R[1]).all()
    with pytest.raises(UnknownNameError, match="unknown continual method"):
        run_sequence(encoder, tasks, "gem", CFG, seed=0)
    with pytest.raises(ArgumentError, match="replay_per_task"):
        run_sequence(encoder, tasks, "replay", CFG, seed=0)


def test_naive_sequence_moves_the_first_head_outputs(encoder):
    """The control of the LoRA test: plain sequential training does change task a's outputs."""
    tasks = _tasks()
    model = build_model(encoder, tasks, seed=0)
    probe = collate(tasks[0].dev)
    outs = []
    for i, t in enumerate(tasks):
        train_examples(model, lambda ep, t=t: mixed_batches(t.train, None, 8, 0.0, ep), [t.name],
                       {t.name: t.heldout}, CFG, seed=i)
        with torch.no_grad():
            outs.append(model.eval().logits(probe, "a").clone())
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def test_per_example_nll_routes_each_example_to_its_head(encoder):
    tasks = _tasks(4)
    model = build_model(encoder, tasks, seed=0).eval()
    mixed = collate(tasks[0].dev[:3] + tasks[1].dev[:2])
    with torch.no_grad():
        nll = model.per_example_nll(mixed)
        la = F.cross_entropy(model.logits(mixed, "a")[:3], mixed["labels"][:3], reduction="none")
        lb = F.cross_entropy(model.logits(mixed, "b")[3:], mixed["labels"][3:], reduction="none")
    torch.testing.assert_close(nll, torch.cat([la, lb]))


def test_load_task_data_splits_train_and_keeps_dev_fixed(tiny_bert, data_dir):
    from transformers import AutoTokenizer

    from lmcourse.continual import load_task_data

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    a = load_task_data("rte", tok, n_train=20, n_heldout=8, n_dev=10, max_length=32, seed=0)
    b = load_task_data("rte", tok, n_train=20, n_heldout=8, n_dev=10, max_length=32, seed=1)
    assert (len(a.train), len(a.heldout), len(a.dev)) == (20, 8, 10) and a.num_labels == 2
    key = lambda e: tuple(e["input_ids"])  # noqa: E731
    assert not {key(e) for e in a.train} & {key(e) for e in a.heldout}  # selection data is not trained on
    assert [key(e) for e in a.dev] == [key(e) for e in b.dev]  # the reported dev subset is the same for every seed
    assert [key(e) for e in a.train] != [key(e) for e in b.train]
    assert all(len(e["input_ids"]) <= 32 and e["task"] == "rte" for e in a.train)
    assert any(1 in e["token_type_ids"] for e in a.train)  # a sentence pair
    assert 0.0 <= a.majority_dev <= 1.0
    with pytest.raises(ArgumentError, match="regression"):
        load_task_data("stsb", tok, n_train=10, n_heldout=4, n_dev=4, max_length=32)
    with pytest.raises(ArgumentError, match="n_heldout"):
        load_task_data("rte", tok, n_train=10, n_heldout=0, n_dev=4, max_length=32)
    with pytest.raises(ArgumentError, match="too few"):
        load_task_data("rte", tok, n_train=10**6, n_heldout=4, n_dev=4, max_length=32)
