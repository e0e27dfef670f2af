"""Continual learning: one encoder trained on one task after another, how much it forgets, and three ways
not to.

A model fine-tuned on task 1 and then on task 2 usually gets worse at task 1: *catastrophic forgetting*
(McCloskey & Cohen 1989; French 1999). This module measures it and implements the classic remedies:

- :func:`transfer_metrics`: from the accuracy matrix ``R[i, j]`` (score on task ``j`` after training task
  ``i``), average accuracy, backward transfer (negative: forgetting) and forward transfer (Lopez-Paz &
  Ranzato 2017, "Gradient Episodic Memory for Continual Learning");
- :class:`ReplayBuffer` + :func:`mixed_batches`: experience replay, a few stored examples of earlier tasks
  mixed into every batch of the later ones;
- :func:`diagonal_fisher` + :func:`ewc_penalty`: elastic weight consolidation (Kirkpatrick et al. 2017), a
  quadratic pull back towards the weights that mattered for earlier tasks;
- :class:`LoRAPerTask`: one LoRA adapter per task on a frozen encoder (:mod:`lmcourse.peft`, chapter 08):
  no forgetting by construction, at the price of an adapter per task;
- :func:`diagonal_scores`, :func:`paired_values`, :func:`transfer_comparison`: the inputs of the chapter's
  comparisons (:func:`lmcourse.spread.compare`): each task's ``R[i, i]`` against its majority class, runs
  paired by seed and order, and a BWT comparison that is *not measured* when a task it reads was never learned.

The model is plain PyTorch (no ``Trainer``): a shared encoder (``AutoModel``) and one linear head per task
(:class:`MultiTaskClassifier`, mean-pooled readout), so that a batch may mix tasks (replay, joint training).
Every task is scored by accuracy, so all entries of ``R`` are on one scale (CoLA's GLUE metric is the Matthews
correlation; accuracy is used here on purpose). Model selection (which checkpoint of a task's training is
kept) uses a held-out slice of that task's *training* data; the dev sets only fill ``R``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.errors import ArgumentError, UnknownNameError
from lmcourse.readout import mean_pool
from lmcourse.spread import Comparison, compare

METHODS = ("naive", "replay", "ewc", "lora")


# ------------------------------------------------------------------------------------------ metrics
def transfer_metrics(R: Any, random_init: Any = None) -> dict[str, float | None]:
    """Average accuracy, backward and forward transfer of a ``T × T`` accuracy matrix (Lopez-Paz & Ranzato 2017).

    ``R[i, j]`` is the score on task ``j`` after training on tasks ``0..i`` (in order); ``random_init[j]`` is
    task ``j``'s score before any training (``b`` in the paper). With ``T`` tasks:

    - ``average_accuracy`` = 1/T Σ_i R[T-1, i] (every task, at the end);
    - ``backward_transfer`` = 1/(T-1) Σ_{i<T-1} (R[T-1, i] − R[i, i]) (negative: forgetting);
    - ``forward_transfer`` = 1/(T-1) Σ_{i≥1} (R[i-1, i] − b_i): what earlier tasks did for a task not yet
      trained; ``None`` when ``random_init`` is ``None`` (it cannot be computed without ``b``);
    - ``forgetting`` = 1/(T-1) Σ_{j<T-1} max_{j≤l≤T-2} (R[l, j] − R[T-1, j]) (Chaudhry et al. 2018, "Riemannian
      Walk"): the drop from the best score a task had after it was trained, not only from ``R[j, j]`` (a task that
      improved and then fell counts its whole fall; positive: forgotten).
    """
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ArgumentError(f"R must be a square T x T matrix (row: after training task i, column: task j), "
                            f"got shape {R.shape}")
    T = R.shape[0]
    if T < 2:
        raise ArgumentError(f"transfer needs at least 2 tasks, got a {T} x {T} matrix")
    if not np.isfinite(R).all():
        raise ArgumentError("R has non-finite entries: every task must be scored after every training stage")
    out: dict[str, float | None] = {
        "average_accuracy": float(R[T - 1].mean()),
        "backward_transfer": float(np.mean([R[T - 1, i] - R[i, i] for i in range(T - 1)])),
        "forward_transfer": None,
        "forgetting": float(np.mean([R[j:T - 1, j].max() - R[T - 1, j] for j in range(T - 1)])),
    }
    if random_init is not None:
        b = np.asarray(random_init, dtype=float)
        if b.shape != (T,):
            raise ArgumentError(f"random_init must hold one score per task ({T}), got shape {b.shape}")
        out["forward_transfer"] = float(np.mean([R[i - 1, i] - b[i] for i in range(1, T)]))
    return out


# ------------------------------------------------------------------------------------------ data
@dataclass
class TaskData:
    """One task's tokenised examples: ``train`` (trained on), ``heldout`` (from train: model selection only)
    and ``dev`` (reported, fills ``R``). An example is a dict with ``input_ids``, ``token_type_ids``,
    ``label`` and ``task``."""

    name: str
    num_labels: int
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    majority_dev: float = float("nan")  # dev accuracy of always answering the most frequent training label


def _encode(dataset, tokenizer, task: str, columns: Sequence[str], max_length: int) -> list[dict[str, Any]]:
    texts = [list(dataset[c]) for c in columns]
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return [{"input_ids": ids, "token_type_ids": tt, "label": int(y), "task": task}
            for ids, tt, y in zip(enc["input_ids"], types, dataset["label"])]


def load_task_data(task: str, tokenizer, *, n_train: int | None, n_heldout: int, n_dev: int | None,
                   max_length: int, seed: int = 0) -> TaskData:
    """A seeded subset of a GLUE task's train split, split into ``n_train`` to train on and ``n_heldout`` held
    out (for model selection), and a fixed subset of its dev split (the same for every seed)."""
    from lmcourse.data import get_task, load_glue

    spec = get_task(task)
    if spec.is_regression:
        raise ArgumentError(f"{spec.name} is a regression task; continual learning here needs classification "
                            "tasks (their accuracies fill R)")
    if n_heldout < 1:
        raise ArgumentError(f"n_heldout must be at least 1 (model selection needs held-out training data), "
                            f"got {n_heldout}")
    train = load_glue(spec.name, "train").shuffle(seed=seed)
    want = len(train) - n_heldout if n_train is None else n_train
    if want + n_heldout > len(train) or want < 1:
        raise ArgumentError(f"{spec.name} has {len(train)} training examples: too few for n_train={n_train} "
                            f"plus n_heldout={n_heldout}")
    heldout = train.select(range(n_heldout))
    train = train.select(range(n_heldout, n_heldout + want))
    dev = load_glue(spec.name, spec.eval_splits[0])
    if n_dev is not None and n_dev < len(dev):
        dev = dev.shuffle(seed=0).select(range(int(n_dev)))
    enc = [_encode(d, tokenizer, spec.name, spec.input_columns, max_length) for d in (train, heldout, dev)]
    labels = np.asarray(train["label"])
    majority = int(np.bincount(labels, minlength=spec.num_labels).argmax())
    return TaskData(spec.name, spec.num_labels, *enc, majority_dev=float((np.asarray(dev["label"]) == majority).mean()))


def collate(examples: Sequence[Mapping[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """Pad a list of examples to their longest: ``input_ids``, ``token_type_ids``, ``attention_mask``,
    ``labels`` (tensors) and ``tasks`` (a list of task names, one per example)."""
    if not examples:
        raise ArgumentError("collate() got no examples")
    n = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    types = torch.zeros((len(examples), n), dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        ids[i, :k] = torch.as_tensor(e["input_ids"])
        types[i, :k] = torch.as_tensor(e["token_type_ids"])
        mask[i, :k] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "labels": torch.as_tensor([int(e["label"]) for e in examples]), "tasks": [e["task"] for e in examples]}


def eval_batches(examples: Sequence[Mapping[str, Any]], batch_size: int = 64, pad_id: int = 0) -> list[dict]:
    """Collated batches in length order (little padding); the order does not change an accuracy."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    return [collate([examples[i] for i in order[s:s + batch_size]], pad_id) for s in range(0, len(order), batch_size)]


# ------------------------------------------------------------------------------------------ model
class MultiTaskClassifier(nn.Module):
    """A shared encoder and one linear head per task over the mean of the last hidden states (padding excluded).

    A batch may mix tasks (``batch["tasks"]``): each example goes through its own task's head."""

    def __init__(self, encoder: nn.Module, tasks: Mapping[str, int]):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, n) for t, n in tasks.items()})

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def pooled(self, batch: Mapping[str, Any]) -> Tensor:
        dev = self.device
        types = batch.get("token_type_ids")
        mask = batch["attention_mask"].to(dev)
        out = self.encoder(input_ids=batch["input_ids"].to(dev), attention_mask=mask,
                           token_type_ids=None if types is None else types.to(dev)).last_hidden_state
        return mean_pool(out, mask)

    def logits(self, batch: Mapping[str, Any], task: str) -> Tensor:
        """Logits of every example of ``batch`` under ``task``'s head."""
        return self.heads[task](self.pooled(batch))

    def per_example_nll(self, batch: Mapping[str, Any]) -> Tensor:
        """``-log p(y_n | x_n)`` of each example under its own task's head (shape ``[batch]``)."""
        h = self.pooled(batch)
        labels = batch["labels"].to(h.device)
        tasks = list(batch["tasks"])
        nll = h.new_zeros(len(tasks))
        for t in dict.fromkeys(tasks):
            idx = torch.tensor([i for i, s in enumerate(tasks) if s == t], device=h.device)
            nll = nll.index_put((idx,), F.cross_entropy(self.heads[t](h[idx]), labels[idx], reduction="none"))
        return nll

    def loss(self, batch: Mapping[str, Any]) -> Tensor:
        return self.per_example_nll(batch).mean()


def build_model(encoder: nn.Module, tasks: Sequence[TaskData] | Mapping[str, int], seed: int,
                device: str | torch.device | None = None) -> MultiTaskClassifier:
    """A fresh :class:`MultiTaskClassifier`: a deep copy of ``encoder`` and heads initialised from ``seed`` and
    the task's name, so that a task's starting head is the same whatever the order of the tasks."""
    spec = tasks if isinstance(tasks, Mapping) else {t.name: t.num_labels for t in tasks}
    model = MultiTaskClassifier(copy.deepcopy(encoder), spec)
    with torch.random.fork_rng():
        for name, head in model.heads.items():
            torch.manual_seed(seed * 100_003 + zlib.crc32(name.encode()) % 100_000)
            head.reset_parameters()
    return model.to(device) if device is not None else model


def _autocast(model: nn.Module, bf16: bool):
    """bfloat16 autocast on the model's device (about twice as fast on a CPU with AVX-512 bf16), or nothing."""
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bool(bf16))


@torch.inference_mode()
def accuracy(model: MultiTaskClassifier, batches: Iterable[Mapping[str, Any]], task: str, bf16: bool = False
             ) -> float:
    """Accuracy of ``task``'s head on collated batches (eval mode: no dropout; ``bf16``: under autocast)."""
    was = model.training
    model.eval()
    right = total = 0
    for b in batches:
        with _autocast(model, bf16):
            pred = model.logits(b, task).argmax(-1).cpu()
        right += int((pred == b["labels"]).sum())
        total += len(b["labels"])
    model.train(was)
    return right / total


# ------------------------------------------------------------------------------------------ replay
class ReplayBuffer:
    """Up to ``capacity_per_task`` examples of every task seen so far, a uniform random sample of each.

    :meth:`sample` draws a task uniformly among those stored, then an example uniformly within it: every earlier
    task gets the same share of the replayed examples, however many there are of each."""

    def __init__(self, capacity_per_task: int, seed: int = 0):
        if capacity_per_task < 0:
            raise ArgumentError(f"capacity_per_task must be >= 0, got {capacity_per_task}")
        self.capacity_per_task = int(capacity_per_task)
        self.rng = np.random.default_rng(seed)
        self.store: dict[str, list[dict[str, Any]]] = {}

    def add(self, task: str, examples: Sequence[dict[str, Any]]) -> None:
        k = min(self.capacity_per_task, len(examples))
        if k == 0:
            return
        keep = self.rng.choice(len(examples), size=k, replace=False)
        self.store[task] = [examples[int(i)] for i in keep]

    @property
    def tasks(self) -> list[str]:
        return list(self.store)

    def __len__(self) -> int:
        return sum(len(v) for v in self.store.values())

    def sample(self, k: int, rng: np.random.Generator | None = None) -> list[dict[str, Any]]:
        """``k`` examples (with replacement): task uniformly, then example uniformly within the task."""
        if k and not self.store:
            raise ArgumentError("the replay buffer is empty: add examples of a task before sampling from it")
        rng = rng or self.rng
        tasks = self.tasks
        out = []
        for t in rng.integers(0, len(tasks), size=k):
            pool = self.store[tasks[int(t)]]
            out.append(pool[int(rng.integers(0, len(pool)))])
        return out


def mixed_batches(current: Sequence[dict[str, Any]], buffer: ReplayBuffer | None, batch_size: int,
                  replay_fraction: float, seed: int) -> Iterator[list[dict[str, Any]]]:
    """One pass over ``current`` (shuffled) in batches of ``batch_size``, a ``replay_fraction`` of each batch
    drawn from ``buffer``.

    A batch holds ``k`` replayed and ``batch_size - k`` current examples, with ``k = floor(f B)`` plus one with
    probability ``f B - floor(f B)``: over many batches the replayed share is exactly ``f`` in expectation (the
    last, short batch gets the same share of its own size). An empty (or missing) buffer gives plain batches."""
    if not 0.0 <= replay_fraction < 1.0:
        raise ArgumentError(f"replay_fraction must be in [0, 1), got {replay_fraction}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be positive, got {batch_size}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(current))
    use_replay = buffer is not None and len(buffer) > 0 and replay_fraction > 0

    def draw(x: float) -> int:  # x rounded down or up, so that its mean is x
        return math.floor(x) + int(rng.random() < x - math.floor(x))

    start = 0
    while start < len(order):
        k = min(batch_size - 1, draw(replay_fraction * batch_size)) if use_replay else 0
        take = order[start:start + batch_size - k]
        if use_replay and len(take) < batch_size - k:  # the last, short batch: the same share f of replay
            k = draw(replay_fraction / (1 - replay_fraction) * len(take))
        start += len(take)
        batch = [current[int(i)] for i in take]
        if k:
            batch += buffer.sample(k, rng)
        yield batch


# ------------------------------------------------------------------------------------------ EWC
def _slice(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    return {k: (v[i:i + 1] if isinstance(v, Tensor | list | tuple) else v) for k, v in batch.items()}


def _batch_size(batch: Mapping[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, Tensor | list | tuple):
            return len(v)
    raise ArgumentError("a batch must hold at least one tensor or list with one entry per example")


def diagonal_fisher(model: nn.Module, batches: Iterable[Mapping[str, Any]],
                    nll: Callable[[nn.Module, Mapping[str, Any]], Tensor],
                    params: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The diagonal of the empirical Fisher information: ``F_k = 1/N Σ_n (∂ log p(y_n | x_n) / ∂θ_k)²``.

    Each example's gradient is computed on its own (the batch is split into single examples) and squared;
    squaring the gradient of the batch's *mean* loss would instead give ``(1/N Σ_n g_n)²``, the squared mean
    gradient, which drops the per-example variance EWC relies on and is much smaller (near a minimum the mean
    gradient is near zero while the per-example ones are not). ``nll(model, batch)`` returns the negative
    log-likelihood of the batch's examples (one value each, or their sum); the labels are the true ones: this is
    the *empirical* Fisher, not the true Fisher (which samples ``y`` from the model's own ``p(y | x)``). The two
    differ (Kunstner et al. 2019, "Limitations of the empirical Fisher approximation"), and on a model that fits
    its training labels well the empirical one is small, because the per-example gradients are: that is why
    notebook 13's λ grid reaches 1e5–1e6. ``params``
    (name → parameter) default to every parameter that requires grad. The model is put in eval mode (no
    dropout) for the computation and restored afterwards."""
    named = dict(params) if params is not None else {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not named:
        raise ArgumentError("diagonal_fisher() got no parameters (none requires grad)")
    names, tensors = list(named), list(named.values())
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
    was = model.training
    model.eval()
    count = 0
    try:
        for batch in batches:
            for i in range(_batch_size(batch)):
                value = nll(model, _slice(batch, i)).sum()
                grads = torch.autograd.grad(value, tensors, allow_unused=True)
                for n, g in zip(names, grads):
                    if g is not None:
                        fisher[n] += g.detach().float() ** 2
                count += 1
    finally:
        model.train(was)
    if count == 0:
        raise ArgumentError("diagonal_fisher() got no examples")
    return {n: f / count for n, f in fisher.items()}


def ewc_penalty(model: nn.Module, fisher: Mapping[str, Tensor], anchor_params: Mapping[str, Tensor],
                lam: float) -> Tensor:
    """EWC's penalty ``λ/2 Σ_k F_k (θ_k − θ*_k)²`` (Kirkpatrick et al. 2017, eq. 3) over the parameters named in
    ``fisher``; ``anchor_params`` are ``θ*``, the weights after the earlier task."""
    named = dict(model.named_parameters())
    missing = sorted(set(fisher) - set(named)) or sorted(set(fisher) - set(anchor_params))
    if missing:
        raise ArgumentError(f"ewc_penalty(): no parameter or anchor for {missing[:3]}; fisher and anchor_params "
                            "must come from this model's named_parameters()")
    total = None
    for n, f in fisher.items():
        term = (f * (named[n] - anchor_params[n]) ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ArgumentError("ewc_penalty() got an empty fisher")
    return 0.5 * lam * total


# ------------------------------------------------------------------------------------------ LoRA per task
class LoRAPerTask:
    """One LoRA adapter per task on a frozen shared encoder (:func:`lmcourse.peft.inject_lora`).

    The encoder's own weights never change, so loading task ``j``'s adapter (and using its head) reproduces
    exactly the function that was scored right after training task ``j``: no forgetting by construction. A task
    without an adapter yet runs the plain pretrained encoder (every ``B = 0``)."""

    def __init__(self, model: MultiTaskClassifier, r: int = 8, alpha: float = 16,
                 target_modules: Sequence[str] = ("query", "value")):
        from lmcourse.peft import LoRALinear, inject_lora

        self.model = model
        inject_lora(model.encoder, tuple(target_modules), r=r, alpha=alpha, train_head=False)
        self.layers = {n: m for n, m in model.encoder.named_modules() if isinstance(m, LoRALinear)}
        self.adapters: dict[str, dict[str, Tensor]] = {}
        self.active: str | None = None

    def adapter_params(self) -> int:
        """Parameters of one adapter (every ``A`` and ``B``), without the task's head."""
        return sum(m.lora_A.weight.numel() + m.lora_B.weight.numel() for m in self.layers.values())

    def new_adapter(self, seed: int) -> None:
        """Fresh ``A`` (Kaiming-uniform, seeded) and ``B = 0`` in every layer, ready to train a new task."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for m in self.layers.values():
                nn.init.kaiming_uniform_(m.lora_A.weight, a=math.sqrt(5))
                nn.init.zeros_(m.lora_B.weight)
        self.active = None

    @torch.no_grad()
    def save(self, task: str) -> None:
        self.adapters[task] = {f"{n}.{ab}": getattr(m, ab).weight.detach().clone()
                               for n, m in self.layers.items() for ab in ("lora_A", "lora_B")}
        self.active = task

    @torch.no_grad()
    def activate(self, task: str | None) -> None:
        """Load ``task``'s adapter; ``None`` or a task not trained yet: ``B = 0`` (the pretrained encoder)."""
        for n, m in self.layers.items():
            if task in self.adapters:
                m.lora_A.weight.copy_(self.adapters[task][f"{n}.lora_A"])
                m.lora_B.weight.copy_(self.adapters[task][f"{n}.lora_B"])
            else:
                nn.init.zeros_(m.lora_B.weight)
        self.active = task


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainConfig:
    """The recipe of one task's training. ``checks`` evaluations on the held-out slice, evenly spaced over the
    epochs (the last at the end); the best is kept (model selection on train data only)."""

    learning_rate: float = 1e-4
    head_lr: float = 2e-3  # a new head starts from random weights: it needs larger steps than the encoder
    batch_size: int = 16
    epochs: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    checks: int = 2
    eval_batch_size: int = 64
    replay_fraction: float = 0.25
    ewc_lambda: float = 0.0
    fisher_samples: int = 64
    lora_r: int = 8
    lora_alpha: float = 16
    lora_lr: float = 5e-4
    freeze_embeddings: bool = True  # the word-embedding matrix (half of MiniLM's weights) stays fixed
    bf16: bool = False  # forward passes under bfloat16 autocast (the run context's ``ctx.bf16``)


def _trainable(model: MultiTaskClassifier, heads: Iterable[str]) -> tuple[list[Tensor], list[Tensor]]:
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    return enc, [p for t in dict.fromkeys(heads) for p in model.heads[t].parameters()]


def train_examples(model: MultiTaskClassifier, batches: Callable[[int], Iterable[list[dict[str, Any]]]],
                   heads: Sequence[str], selection: Mapping[str, list[dict]], cfg: TrainConfig, seed: int,
                   penalty: Callable[[], Tensor] | None = None, lr: float | None = None,
                   pad_id: int = 0) -> dict[str, Any]:
    """AdamW over the encoder's trainable weights and ``heads`` for ``cfg.epochs`` passes (``batches(epoch)``
    yields lists of examples), loss + ``penalty()``; keeps the state with the best mean accuracy on
    ``selection`` (task → held-out training examples). Returns steps, selection scores and the chosen check."""
    enc, head = _trainable(model, heads)
    params = enc + head
    opt = torch.optim.AdamW([{"params": enc, "lr": lr or cfg.learning_rate}, {"params": head, "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    epochs = [list(batches(e)) for e in range(cfg.epochs)]
    total = sum(len(b) for b in epochs)
    if total == 0:
        raise ArgumentError("no training batches")
    checks = max(1, cfg.checks)
    at = {round(total * (c + 1) / checks) for c in range(checks)}
    sel = {t: eval_batches(x, cfg.eval_batch_size, pad_id) for t, x in selection.items()}
    best: tuple[float, int, dict[str, Tensor]] | None = None
    history = []
    step = 0
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout masks
        for ep in epochs:
            for examples in ep:
                with _autocast(model, cfg.bf16):
                    loss = model.loss(collate(examples, pad_id))
                if penalty is not None:
                    loss = loss + penalty()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                step += 1
                if step in at:
                    score = float(np.mean([accuracy(model, b, t, cfg.bf16) for t, b in sel.items()]))
                    history.append({"step": step, "selection_accuracy": score})
                    if best is None or score > best[0]:
                        best = (score, step, {id(p): p.detach().clone() for p in params})
    assert best is not None
    with torch.no_grad():
        for p in params:
            p.copy_(best[2][id(p)])
    return {"steps": step, "history": history, "chosen_step": best[1], "selection_accuracy": best[0]}


@dataclass
class SequenceResult:
    """One run of a method over a task order: the accuracy matrix, the scores before training, the metrics."""

    method: str
    order: tuple[str, ...]
    seed: int
    R: np.ndarray
    random_init: np.ndarray
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float | None]:
        return transfer_metrics(self.R, self.random_init)

    def row(self, **extra: Any) -> dict[str, Any]:
        return {"method": self.method, "order": " → ".join(self.order), "seed": self.seed, **self.metrics,
                "seconds": self.seconds, **extra}


def score_all(model: MultiTaskClassifier, tasks: Sequence[TaskData], dev: Mapping[str, list[dict]],
              lora: LoRAPerTask | None = None, bf16: bool = False) -> np.ndarray:
    """Dev accuracy of every task (with its own adapter when ``lora`` is given)."""
    out = []
    for t in tasks:
        if lora is not None:
            lora.activate(t.name)
        out.append(accuracy(model, dev[t.name], t.name, bf16))
    return np.asarray(out)


def run_sequence(encoder: nn.Module, tasks: Sequence[TaskData], method: str, cfg: TrainConfig, seed: int, *,
                 replay_per_task: int = 0, pad_id: int = 0, random_init: Mapping[str, float] | None = None,
                 first_task_cache: dict | None = None,
                 device: str | torch.device | None = None) -> SequenceResult:
    """Train ``tasks`` one after another with ``method`` and score every task's dev set after each one.

    ``"naive"``: plain sequential fine-tuning (the lower bound); ``"replay"``: a :class:`ReplayBuffer` of
    ``replay_per_task`` examples per earlier task, ``cfg.replay_fraction`` of each batch; ``"ewc"``: the loss
    plus Σ over earlier tasks of :func:`ewc_penalty` (``cfg.ewc_lambda``, Fisher on ``cfg.fisher_samples`` training
    examples, encoder weights only: the heads are per task); ``"lora"``: :class:`LoRAPerTask`.

    ``random_init`` (task → score) are the scores before any training, the same for every method of a seed
    (:func:`initial_scores`); computed here when not given. Naive, replay and EWC train the first task in
    exactly the same way (empty buffer, no earlier task to anchor to): pass the same dict as
    ``first_task_cache`` to their runs of one seed and order, and that first stage is trained once and reused."""
    if method not in METHODS:
        raise UnknownNameError(f"unknown continual method {method!r}; known: {', '.join(METHODS)}")
    if method == "replay" and replay_per_task < 1:
        raise ArgumentError("method 'replay' needs replay_per_task >= 1")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ArgumentError(f"a task appears twice in the order {names}")
    t0 = time.perf_counter()
    model = build_model(encoder, tasks, seed, device)
    if cfg.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad = False
    dev = {t.name: eval_batches(t.dev, cfg.eval_batch_size, pad_id) for t in tasks}
    lora = LoRAPerTask(model, cfg.lora_r, cfg.lora_alpha) if method == "lora" else None
    if random_init is None:
        b = score_all(model, tasks, dev, None, cfg.bf16)
    else:
        b = np.asarray([random_init[n] for n in names])
    buffer = ReplayBuffer(replay_per_task, seed) if method == "replay" else None
    anchors: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []
    R = np.zeros((len(tasks), len(tasks)))
    details: dict[str, Any] = {"train": []}
    key = (seed, tuple(names), dataclasses.replace(cfg, ewc_lambda=0.0, replay_fraction=0.0))  # not used on task 1
    for i, t in enumerate(tasks):
        s = seed * 1000 + i
        cached = i == 0 and lora is None and first_task_cache is not None
        if cached and key in first_task_cache:
            state, row, info = first_task_cache[key]
            model.load_state_dict(state)
            details["train"].append({**info, "reused": True})
        else:
            penalty = None
            heads = [t.name]
            if lora is not None:
                lora.new_adapter(s)
            if buffer is not None:
                heads += buffer.tasks
            if anchors:
                penalty = (lambda: sum(ewc_penalty(model, f, a, cfg.ewc_lambda) for f, a in anchors))  # noqa: E731

            def batches(epoch: int, t=t, s=s):
                return mixed_batches(t.train, buffer, cfg.batch_size, cfg.replay_fraction, s + 7919 * epoch)

            info = train_examples(model, batches, heads, {t.name: t.heldout}, cfg, s, penalty,
                                  lr=cfg.lora_lr if lora is not None else None, pad_id=pad_id)
            details["train"].append(info)
            if lora is not None:
                lora.save(t.name)
            row = score_all(model, tasks, dev, lora, cfg.bf16)
            if cached:
                first_task_cache[key] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, row, info)
        R[i] = row
        if buffer is not None:
            buffer.add(t.name, t.train)
        if method == "ewc" and i < len(tasks) - 1:
            named = {n: p for n, p in model.named_parameters() if n.startswith("encoder.") and p.requires_grad}
            sample = t.train[:cfg.fisher_samples]
            fisher = diagonal_fisher(model, eval_batches(sample, cfg.eval_batch_size, pad_id),
                                     lambda m, bt: m.per_example_nll(bt), named)
            anchors.append((fisher, {n: p.detach().clone() for n, p in named.items()}))
    # the end model on every task's held-out training slice: what a choice between runs (e.g. of λ) may look at
    held = {t.name: eval_batches(t.heldout, cfg.eval_batch_size, pad_id) for t in tasks}
    details["heldout_final"] = score_all(model, tasks, held, lora, cfg.bf16).tolist()
    if method == "ewc" and anchors:
        with torch.no_grad():
            details["ewc_penalty_final"] = float(sum(ewc_penalty(model, f, a, cfg.ewc_lambda) for f, a in anchors))
    if lora is not None:
        details["adapter_params"] = lora.adapter_params()
        details["head_params"] = sum(p.numel() for p in model.heads[names[0]].parameters())
        details["encoder_params"] = sum(p.numel() for n, p in model.encoder.named_parameters() if "lora_" not in n)
    return SequenceResult(method, tuple(names), seed, R, b, time.perf_counter() - t0, details)


def initial_scores(encoder: nn.Module, tasks: Sequence[TaskData], seed: int, cfg: TrainConfig, pad_id: int = 0,
                   device: str | torch.device | None = None) -> dict[str, float]:
    """Every task's dev accuracy before any training (``b`` of forward transfer): the pretrained encoder and the
    freshly initialised heads of ``seed`` (the same in every method and every order)."""
    model = build_model(encoder, tasks, seed, device)
    dev = {t.name: eval_batches(t.dev, cfg.eval_batch_size, pad_id) for t in tasks}
    return dict(zip([t.name for t in tasks], score_all(model, tasks, dev, None, cfg.bf16).tolist()))


def run_joint(encoder: nn.Module, tasks: Sequence[TaskData], cfg: TrainConfig, seed: int, pad_id: int = 0,
              random_init: Mapping[str, float] | None = None, device: str | torch.device | None = None
              ) -> SequenceResult:
    """Multi-task training on every task at once (the upper bound): the union of the training sets, shuffled,
    the same number of epochs; selection on the mean held-out accuracy over tasks. ``R`` has one row per task,
    all equal (the one model scored once), so its backward transfer is 0 and only its average accuracy means
    something."""
    t0 = time.perf_counter()
    model = build_model(encoder, tasks, seed, device)
    if cfg.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad = False
    dev = {t.name: eval_batches(t.dev, cfg.eval_batch_size, pad_id) for t in tasks}
    if random_init is None:
        b = score_all(model, tasks, dev, None, cfg.bf16)
    else:
        b = np.asarray([random_init[t.name] for t in tasks])
    union = [e for t in tasks for e in t.train]
    info = train_examples(model, lambda ep: mixed_batches(union, None, cfg.batch_size, 0.0, seed * 1000 + 7919 * ep),
                          [t.name for t in tasks], {t.name: t.heldout for t in tasks}, cfg, seed, pad_id=pad_id)
    final = score_all(model, tasks, dev, None, cfg.bf16)
    R = np.tile(final, (len(tasks), 1))
    return SequenceResult("joint", tuple(t.name for t in tasks), seed, R, b, time.perf_counter() - t0,
                          {"train": [info]})


# ------------------------------------------------------------------------------------------ comparisons
PAIRINGS = ("seed and order", "seed")


def diagonal_scores(runs: Sequence[SequenceResult], task: str) -> list[float]:
    """``R[i, i]`` of ``task`` in each run, in the runs' order: its dev accuracy right after it was trained.

    Only a task whose diagonal entry beats its majority class was learned; its backward transfer is then what
    the later tasks did to something real (the notebook checks it with :func:`lmcourse.spread.compare`)."""
    out = []
    for r in runs:
        if task not in r.order:
            raise ArgumentError(f"task {task!r} is not in the {r.method} run's order {r.order}")
        i = r.order.index(task)
        out.append(float(r.R[i, i]))
    return out


def paired_values(runs: Sequence[SequenceResult], method: str, baseline: str, metric: str,
                  by: str = "seed and order") -> tuple[list[float], list[float]]:
    """``metric`` of ``method``'s and ``baseline``'s runs, paired and in matching order.

    ``by="seed and order"``: run for run (both methods ran every seed on every order). ``by="seed"``: for a
    method whose runs do not depend on the order (multi-task training), each of its runs is paired with the
    baseline's mean over the orders of the same seed. Pairs are sorted by seed, then order."""
    if by not in PAIRINGS:
        raise UnknownNameError(f"unknown pairing {by!r}; choose one of {PAIRINGS}")

    def keyed(m: str, key) -> dict:
        out: dict = {}
        for r in runs:
            if r.method != m:
                continue
            value = r.metrics[metric]
            if value is None:
                raise ArgumentError(f"the {m} run (seed {r.seed}, order {r.order}) has no {metric}")
            out.setdefault(key(r), []).append(float(value))
        if not out:
            raise ArgumentError(f"no run of method {m!r}")
        return out

    mine = keyed(method, (lambda r: (r.seed, r.order)) if by == "seed and order" else (lambda r: r.seed))
    theirs = keyed(baseline, (lambda r: (r.seed, r.order)) if by == "seed and order" else (lambda r: r.seed))
    repeated = [k for k, v in mine.items() if len(v) > 1]
    if repeated:
        raise ArgumentError(f"{method} has several runs for {repeated}: pair them by seed and order")
    if by == "seed and order" and any(len(v) > 1 for v in theirs.values()):
        raise ArgumentError(f"{baseline} has several runs of one seed and order")
    if set(mine) != set(theirs):
        raise ArgumentError(f"{method} and {baseline} did not run the same {by}s: "
                            f"{sorted(mine, key=str)} vs {sorted(theirs, key=str)}")
    keys = sorted(mine, key=str)
    return [mine[k][0] for k in keys], [float(np.mean(theirs[k])) for k in keys]


def transfer_comparison(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b"), *,
                        unlearned: Iterable[tuple[str, str]] = (), **kwargs: Any) -> Comparison:
    """:func:`lmcourse.spread.compare` for a transfer metric (BWT, FWT), *not measured* if an arm in
    ``unlearned`` (``(arm, task)`` pairs, arms named as in ``names``) never learned a task the metric reads.

    BWT and FWT are differences of accuracies with no constant predictor to put a ``chance`` on; what makes
    them meaningless is a diagonal entry ``R[i, i]`` at the majority class: a task that was never learned
    cannot be forgotten, and a BWT near 0 would then read as "no forgetting"."""
    if "chance" in kwargs:
        raise ArgumentError("a transfer metric is a difference of accuracies: it has no constant predictor "
                            "(pass the tasks that were not learned as unlearned=)")
    told = [(arm, f"{task} (R[i,i] did not beat its majority class)") for arm, task in unlearned]
    return compare(a, b, names, unlearned=told, **kwargs)


# ------------------------------------------------------------------------------------------ plots
def plot_accuracy_matrix(ax, R: np.ndarray, tasks: Sequence[str], title: str = "", vmin: float = 0.4,
                         vmax: float = 1.0):
    """``R`` as a heatmap with its numbers: rows "after training", columns "scored on"."""
    R = np.asarray(R, dtype=float)
    im = ax.imshow(R, vmin=vmin, vmax=vmax, cmap="viridis")
    for i in range(R.shape[0]):
        for j in range(R.shape[1]):
            ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center",
                    color="black" if R[i, j] > (vmin + vmax) / 2 else "white", fontsize=9)
    ax.set_xticks(range(len(tasks)), list(tasks))
    ax.set_yticks(range(len(tasks)), [f"after {t}" for t in tasks])
    ax.set_xlabel("scored on")
    ax.grid(False)
    if title:
        ax.set_title(title)
    return im
