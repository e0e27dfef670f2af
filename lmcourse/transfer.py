"""Does pretraining transfer? The pieces of a sound answer (notebook 14).

One fine-tuning run per initialisation says nothing: the spread between seeds is as large as the gaps being
asked about. The study therefore measures *curves with seeds*:

* **label efficiency**: the downstream score against the number of labelled examples n, several seeds per
  point, next to the baselines a reader would use (majority class, TF-IDF + logistic regression on the same
  n examples);
* **a fair readout**: the mean of the last hidden states (:func:`mean_pooling_head`, a
  :class:`lmcourse.readout.PooledClassifier`), never BERT's ``pooler([CLS])`` that masked-LM pretraining
  leaves untrained; and a **linear probe** on frozen mean-pooled features
  (:func:`lmcourse.readout.encoder_features`, :func:`probe_curve`), which measures what the representation
  already holds without any fine-tuning noise. Pooling, features, the encoder loader and the probe protocol
  (C chosen by cross-validation inside the training examples, the TF-IDF baseline on the same grid) are
  :mod:`lmcourse.readout`'s;
* **the learning rate per initialisation**, chosen on examples held out from train
  (:func:`choose_learning_rate`), never on the reported dev set;
* **score against pretraining compute** (checkpoints along one run) and where a fit in log-compute would
  cross the random-init score (:func:`crossing_point`), with a bootstrap confidence set;
* **a causal test** of a proposed mechanism: swap one part of a trained encoder for its random-init
  counterpart (:func:`fresh_word_embeddings`) and fine-tune again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmcourse.context import RunContext
from lmcourse.data import get_task
from lmcourse.errors import ArgumentError

# The readout lives in lmcourse.readout; these names stay importable from here (notebook 14 reads them as TR.*).
from lmcourse.readout import (  # noqa: F401
    PROBE_CS,
    PROBE_METRIC,
    PooledClassifier,
    blas_threads,
    encoder_features,
    fit_probe,
    linear_probe,
    load_encoder,
    mean_pool,
    probe_score,
    tfidf_probe,
)

MeanPoolingClassifier = PooledClassifier
"""The old name of :class:`lmcourse.readout.PooledClassifier` (one class for every mean-pooled readout)."""


# ------------------------------------------------------------------------------------------ readout
def mean_pooling_head(net: nn.Module) -> PooledClassifier:
    """``model_init_hook`` for :func:`lmcourse.finetuning.finetune`: keep the loaded classifier's encoder,
    replace its ``pooler([CLS])`` head by :class:`lmcourse.readout.PooledClassifier` (same dropout, same init
    range)."""
    config = net.config
    encoder = net.base_model
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused by this readout; dropping it keeps the parameter count honest
    return PooledClassifier(encoder, int(config.num_labels),
                                 dropout=float(getattr(config, "hidden_dropout_prob", 0.1)),
                                 initializer_range=float(getattr(config, "initializer_range", 0.02)),
                                 regression=config.problem_type == "regression")


def fresh_word_embeddings(seed: int, then: Callable[[nn.Module], nn.Module] | None = None
                          ) -> Callable[[nn.Module], nn.Module]:
    """A ``model_init_hook`` that replaces the loaded encoder's word-embedding table by a freshly initialised
    one (normal, the config's ``initializer_range``, seeded), everything else kept. The intervention that
    tests whether a trained encoder's *embeddings* (for example an embedding cone) are what helps or hurts
    its transfer; ``then`` is applied afterwards (for example :func:`mean_pooling_head`)."""

    def hook(net: nn.Module) -> nn.Module:
        table = net.get_input_embeddings().weight
        std = float(getattr(net.config, "initializer_range", 0.02))
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            table.copy_(torch.randn(table.shape, generator=gen) * std)
            pad = getattr(net.config, "pad_token_id", None)
            if pad is not None:
                table[int(pad)].zero_()  # as nn.Embedding(padding_idx=...) initialises it
        return then(net) if then is not None else net

    return hook


def remove_top_components(table: Tensor, components: int, *, skip_rows: Sequence[int] = ()) -> Tensor:
    """"All-but-the-top" (Mu & Viswanath 2018, ICLR, Algorithm 1): the rows of an embedding table minus their
    common mean, with their projections on the ``components`` leading principal directions removed. A targeted
    test of the embedding cone: a cone is a shared mean direction and a few dominant ones, and this removes just
    those, keeping everything else the vectors say (a fresh random table instead removes all lexical
    information). The mean and the directions are computed without ``skip_rows`` (special tokens such as
    padding), which are returned unchanged. A new float tensor; ``table`` is not modified."""
    rows = table.detach().double()
    keep = torch.ones(rows.shape[0], dtype=torch.bool)
    if len(skip_rows):
        keep[torch.as_tensor(list(skip_rows), dtype=torch.long)] = False
    if not 0 <= int(components) < min(int(keep.sum()), rows.shape[1]):
        raise ArgumentError(f"remove_top_components needs 0 <= components < {min(int(keep.sum()), rows.shape[1])} "
                            f"(rows and width of the table), got {components}")
    mean = rows[keep].mean(dim=0)
    centred = rows - mean
    _, _, vt = torch.linalg.svd(centred[keep], full_matrices=False)
    top = vt[:int(components)]  # (components, d): the leading principal directions
    out = centred - centred @ top.T @ top
    out[~keep] = rows[~keep]
    return out.to(table.dtype)


def without_top_components(encoder: nn.Module, components: int, special_ids: Sequence[int]) -> nn.Module:
    """``encoder`` (a bare Hugging Face encoder) with :func:`remove_top_components` applied to its word-embedding
    table in place, the rows of ``special_ids`` (the tokenizer's ``all_special_ids``) left as they are. Returns
    the encoder."""
    emb = encoder.get_input_embeddings().weight
    with torch.no_grad():
        emb.copy_(remove_top_components(emb, components, skip_rows=list(special_ids)))
    return encoder


# ------------------------------------------------------------------------------------------ features
def unlabelled_text(tasks: Iterable[str], split: str = "train") -> list[str]:
    """Every input sentence of ``split`` of each GLUE task, labels dropped: the corpus of task-adaptive
    pretraining (Gururangan et al. 2020). Only a training split belongs here; a dev split's text would leak
    what the study reports into pretraining."""
    from lmcourse.data import load_glue

    if split.split("[")[0] not in ("train",):
        raise ArgumentError(f"unlabelled_text reads training text only, got split {split!r}: pretraining on "
                            "the reported dev or test text would leak it into the model")
    lines: list[str] = []
    for task in tasks:
        ds = load_glue(task, split)
        for column in get_task(task).input_columns:
            lines += [t.strip() for t in ds[column] if t and t.strip()]
    return lines


# ------------------------------------------------------------------------------------------ probes
def nested_subset(pool_size: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` of a seeded permutation of ``range(pool_size)``: for one seed, the subsets of growing
    n are nested, so a curve's points differ by added examples rather than by a new draw."""
    if not 1 <= n <= pool_size:
        raise ArgumentError(f"cannot draw {n} examples from a pool of {pool_size}; use 1 <= n <= {pool_size}")
    return np.random.default_rng(int(seed)).permutation(pool_size)[:n]


def probe_curve(train_x: np.ndarray, train_y, eval_x: np.ndarray, eval_y, task: str, *, sizes: Iterable[int],
                seeds: Iterable[int], label: str, metric: str = PROBE_METRIC) -> list[dict[str, Any]]:
    """:func:`linear_probe` at every n of ``sizes`` (capped at the pool) for every seed, on the
    :func:`nested_subset` of that seed (the whole pool once: it is the same fit for every seed).
    Rows ``{"init": label, "task", "n", "seed", "score"}``."""
    rows = []
    train_y = np.asarray(train_y)
    seeds = list(seeds)
    for seed in seeds:
        for n in sizes:
            if int(n) >= len(train_y) and seed != seeds[0]:
                continue  # the whole pool: every seed would fit the very same examples, so it runs once
            idx = np.sort(nested_subset(len(train_y), min(int(n), len(train_y)), seed))  # order-free fit
            rows.append({"init": label, "task": task, "n": len(idx), "seed": int(seed),
                         "score": linear_probe(train_x[idx], train_y[idx], eval_x, eval_y, task, seed=int(seed),
                                               metric=metric)})
    return rows


def probe_curves(encoder: nn.Module, tokenizer, data: dict[str, tuple[Any, Any]], ctx: RunContext, *,
                 sizes: dict[str, Sequence[int]], seeds: Iterable[int], max_length: int, label: str,
                 metric: str = PROBE_METRIC) -> list[dict[str, Any]]:
    """:func:`probe_curve` of one encoder on every task of ``data`` (``{task: (train pool, eval split)}``):
    its mean-pooled features computed once per split (:func:`encoder_features`), then the probes at
    ``sizes[task]`` for every seed."""
    rows: list[dict[str, Any]] = []
    seeds = list(seeds)
    for task, (pool, evaluation) in data.items():
        fx = encoder_features(encoder, tokenizer, pool, task, ctx, max_length=max_length)
        fe = encoder_features(encoder, tokenizer, evaluation, task, ctx, max_length=max_length)
        rows += probe_curve(fx, pool["label"], fe, evaluation["label"], task, sizes=sizes[task], seeds=seeds,
                            label=label, metric=metric)
    return rows


def baseline_curve(task: str, train, evaluation, *, sizes: Iterable[int], seeds: Iterable[int],
                   metric: str = PROBE_METRIC) -> list[dict[str, Any]]:
    """Majority class and TF-IDF + logistic regression on the same nested subsets as :func:`probe_curve`
    (``train``/``evaluation``: ``datasets.Dataset`` splits of the task; the whole pool once), scored by
    ``metric`` like the probes. The TF-IDF baseline is :func:`lmcourse.readout.tfidf_probe`: the probes'
    protocol (the same grid of C, chosen by cross-validation inside the n training examples, same seed)."""
    eval_labels = np.asarray(evaluation["label"])
    rows = []
    seeds = list(seeds)
    for seed in seeds:
        for n in sizes:
            if int(n) >= len(train) and seed != seeds[0]:
                continue  # the whole pool is the same for every seed: one run, as in probe_curve
            idx = nested_subset(len(train), min(int(n), len(train)), seed)
            part = train.select(idx.tolist())
            # the most frequent label of these n training examples, predicted for every eval example
            const = np.full(len(eval_labels), int(np.bincount(np.asarray(part["label"]).astype(int)).argmax()))
            scores = {"majority class": probe_score(task, const, eval_labels, metric),
                      "TF-IDF + LR": tfidf_probe(task, part, evaluation, seed=int(seed), metric=metric)}
            rows += [{"init": name, "task": task, "n": len(idx), "seed": int(seed), "score": float(v)}
                     for name, v in scores.items()]
    return rows


# ------------------------------------------------------------------------------------------ fine-tuning
def until_converged(*, epochs: int, patience: int, batch_size: int, max_length: int,
                    max_eval_samples: int | None = None, dropout: float | None = 0.1) -> dict[str, Any]:
    """The fine-tuning overrides of a readout that can learn, for every initialisation alike: up to ``epochs``
    passes over the n training examples, one evaluation per epoch on the examples
    :func:`lmcourse.finetuning.finetune` holds out from those n, early stopping after ``patience`` epochs without
    a better held-out score, and the best epoch's weights kept (the dev set only scores). A fixed, short step
    count instead favours the pretrained start, which needs fewer steps (He et al. 2019, *Rethinking ImageNet
    Pre-training*): a random-init encoder stopped at half an epoch still predicts the majority class.
    ``dropout`` (hidden and attention) is the same for every initialisation, whatever a checkpoint was
    pretrained with (None: each checkpoint's own)."""
    if int(epochs) < 1 or int(patience) < 1:
        raise ArgumentError(f"until_converged needs epochs >= 1 and patience >= 1, got {epochs} and {patience}")
    if int(patience) >= int(epochs):
        raise ArgumentError(f"a patience of {patience} epochs never stops a run of {epochs} epochs early; "
                            "use a patience below the epochs")
    return {"num_epochs": int(epochs), "max_steps": -1, "eval_strategy": "epoch",
            "early_stopping_patience": int(patience), "batch_size": int(batch_size), "max_length": int(max_length),
            "max_eval_samples": max_eval_samples, "dropout": dropout}


def _finetune_row(result, label: str, n: int, lr: float) -> dict[str, Any]:
    evals = [e for e in result.log_history if f"eval_{result.main_metric}" in e]
    best = max(evals, key=lambda e: e[f"eval_{result.main_metric}"], default={})  # first of equals, as the Trainer
    return {"init": label, "task": result.task, "n": int(n), "seed": int(result.seed), "learning_rate": float(lr),
            "score": float(result.score), "selection_score": result.selection["best_score"],
            "epochs": float(max((e.get("epoch", 0.0) for e in result.log_history), default=0.0)),
            "best_epoch": float(best.get("epoch", math.nan)), "train_seconds": float(result.train_seconds)}


def finetune_curve(task: str, model: str, *, ctx: RunContext, sizes: Iterable[int], seeds: Iterable[int],
                   label: str, random_init: bool = False,
                   model_init_hook: Callable[[nn.Module], nn.Module] | None = mean_pooling_head,
                   hook_for_seed: Callable[[int], Callable[[nn.Module], nn.Module]] | None = None,
                   reuse: Sequence[dict[str, Any]] = (), **overrides: Any) -> list[dict[str, Any]]:
    """Fine-tune ``model`` on ``n`` training examples of ``task`` for every n of ``sizes`` and every seed
    (:func:`lmcourse.finetuning.finetune`: the seed draws the examples, the random init, the order and
    dropout; the best checkpoint is chosen on examples held out from those n, the dev set only scores).
    The readout is :func:`mean_pooling_head` unless ``model_init_hook`` says otherwise; ``hook_for_seed``,
    when given, builds the hook from the seed (an intervention drawn per seed). ``overrides`` go to
    ``finetune``. Rows like :func:`probe_curve`'s, plus the learning rate, the selection score and the
    training seconds. ``reuse``: rows of runs already made (for example by :func:`choose_learning_rate`);
    a run with the same label, task, n, seed and learning rate is taken from there instead of repeated (a
    seed fixes a run on the CPU, so repeating it would give the same numbers)."""
    from tqdm.auto import tqdm

    from lmcourse.finetuning import finetune

    runs = [(int(n), int(s)) for s in seeds for n in sizes]
    rows = []
    def key(row: dict[str, Any]) -> tuple:
        return row["init"], row["task"], row["n"], row["seed"], round(float(row["learning_rate"]), 12)

    done = {key(r): r for r in reuse}
    lr = overrides.get("learning_rate")
    for n, seed in tqdm(runs, desc=f"fine-tune {label} on {task}", leave=False):
        if lr is not None and (label, task, n, seed, round(float(lr), 12)) in done:
            rows.append(dict(done[label, task, n, seed, round(float(lr), 12)]))
            continue
        hook = hook_for_seed(seed) if hook_for_seed is not None else model_init_hook
        settings = {"progress": False, "save_model": False, **overrides}
        result = finetune(task, model, ctx=ctx.with_changes(seed=seed), random_init=random_init,
                          max_train_samples=n, model_init_hook=hook, **settings)
        rows.append(_finetune_row(result, label, n, result.settings["learning_rate"]))
    return rows


def fresh_embeddings_then_mean_pooling(seed: int) -> Callable[[nn.Module], nn.Module]:
    """``hook_for_seed`` of :func:`finetune_curve` for the embedding swap: a fresh word-embedding table drawn
    from the run's seed (offset, so it is not the table the random-init twin of that seed starts from),
    then the mean-pooling readout."""
    return fresh_word_embeddings(10_000 + int(seed), then=mean_pooling_head)


def choose_learning_rate(task: str, model: str, learning_rates: Sequence[float], *, ctx: RunContext, n: int,
                         label: str, random_init: bool = False,
                         model_init_hook: Callable[[nn.Module], nn.Module] | None = mean_pooling_head,
                         **overrides: Any) -> tuple[float, list[dict[str, Any]]]:
    """The learning rate, among ``learning_rates``, whose run scores best on the examples held out from the
    ``n`` training examples (the ``selection`` part :func:`lmcourse.finetuning.finetune` keeps for the best
    checkpoint): a choice made per initialisation without looking at the dev set. Returns the rate and one
    row per run (the dev score is in the rows for the record; it is not used)."""
    if not learning_rates:
        raise ArgumentError("choose_learning_rate needs at least one learning rate")
    if overrides.get("selection_fraction", 0.1) == 0 or overrides.get("eval_strategy") == "no":
        raise ArgumentError("choose_learning_rate needs held-out selection examples: keep selection_fraction > 0 "
                            "and an eval_strategy other than 'no'")
    rows = []
    for lr in learning_rates:
        rows += finetune_curve(task, model, ctx=ctx, sizes=[n], seeds=[ctx.seed], label=label,
                               random_init=random_init, model_init_hook=model_init_hook,
                               learning_rate=float(lr), **overrides)
    best = max(rows, key=lambda r: (r["selection_score"], -r["learning_rate"]))
    return float(best["learning_rate"]), rows


# ------------------------------------------------------------------------------------------ other pretraining
def continued_mlm_model(model: str, ctx: RunContext) -> nn.Module:
    """``BertForMaskedLM`` with the pretrained encoder of ``model`` and a fresh MLM head: the start of continued
    (domain- or task-adaptive) MLM pretraining (Gururangan et al. 2020). MiniLM was distilled and then trained
    as a sentence encoder, so it ships no MLM head; the head's transform is drawn under ``ctx.seeded()`` and
    its decoder is tied to the encoder's word embeddings, as in BERT. Placed on ``ctx.device``."""
    from transformers import AutoConfig, BertForMaskedLM

    from lmcourse.models import resolve

    path = resolve(model)
    if AutoConfig.from_pretrained(path).model_type != "bert":
        raise ArgumentError(f"continued_mlm_model needs a BERT-architecture encoder, got {model!r}")
    with ctx.seeded():
        net = BertForMaskedLM.from_pretrained(path)
    return net.to(ctx.device)


class HiddenStateDistillation(nn.Module):
    """Teacher-guided pretraining on unlabelled text: the student's hidden states regress the teacher's, token
    by token, through one learned projection ``W_h`` (TinyBERT's hidden-state loss, Jiao et al. 2020, eq. 8):
    ``mean over real tokens and pairs (m, n) of ||H_student^m W_h - H_teacher^n||^2 / d_teacher``.

    Every token gets a dense target (a whole vector), where MLM gets one token id at 15 % of the positions.
    Student and teacher read the same token ids, so they must share the tokenizer. ``layer_pairs`` maps
    student hidden-state indices to the teacher's (0 = embeddings; default: last to last). The teacher is
    frozen and kept *outside* the module's parameters: it is not trained, not saved with the student, and
    its forward pass is not counted as trained compute (add :meth:`teacher_flops_per_token`)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *,
                 layer_pairs: Sequence[tuple[int, int]] | None = None):
        super().__init__()
        s_cfg, t_cfg = student.config, teacher.config
        if int(s_cfg.vocab_size) != int(t_cfg.vocab_size):
            raise ArgumentError(f"student and teacher must share the tokenizer (vocabularies {s_cfg.vocab_size} "
                                f"and {t_cfg.vocab_size}): build the student's config from the teacher's tokenizer")
        pairs = list(layer_pairs or [(int(s_cfg.num_hidden_layers), int(t_cfg.num_hidden_layers))])
        for m, n in pairs:
            if not (0 <= m <= s_cfg.num_hidden_layers and 0 <= n <= t_cfg.num_hidden_layers):
                raise ArgumentError(f"layer pair {(m, n)} is outside the student's 0..{s_cfg.num_hidden_layers} "
                                    f"or the teacher's 0..{t_cfg.num_hidden_layers} hidden states")
        self.student, self.layer_pairs = student, pairs
        self.config = s_cfg  # what the loop's throughput meter reads
        self.projection = nn.Linear(int(s_cfg.hidden_size), int(t_cfg.hidden_size))
        self._teacher = (teacher.eval().requires_grad_(False),)  # a tuple: not a submodule

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def get_input_embeddings(self) -> nn.Module:
        """The student's token table: a look-up, which the FLOPs formula leaves out as it does for BERT."""
        return self.student.get_input_embeddings()

    def teacher_flops_per_token(self, seq_len: float) -> float:
        """The teacher's forward FLOPs per token: a third of the training formula's ``6N + 12LHQT``."""
        from lmcourse.measurement import model_flops_per_token

        return model_flops_per_token(self.teacher, seq_len) / 3

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        with torch.no_grad():
            target = self.teacher(**inputs, output_hidden_states=True).hidden_states
        hidden = self.student(**inputs, output_hidden_states=True).hidden_states
        mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).bool()
        losses = [((self.projection(hidden[m][mask]).float() - target[n][mask].float()) ** 2).mean()
                  for m, n in self.layer_pairs]
        return torch.stack(losses).mean()


def distillation_step_outputs(model: HiddenStateDistillation, batch: dict[str, Tensor]
                              ) -> tuple[Tensor, dict[str, float]]:
    """``step_outputs`` of :func:`lmcourse.pretraining.train` for :class:`HiddenStateDistillation`: the batch's
    ids (no masking: every token is a target) and the hidden-state loss."""
    net = getattr(model, "module", model)
    if not isinstance(net, HiddenStateDistillation):
        raise ArgumentError(f"distillation_step_outputs needs a HiddenStateDistillation, got {type(net).__name__}")
    loss = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return loss, {"loss": float(loss.detach()), "hidden_mse": float(loss.detach())}


# ------------------------------------------------------------------------------------------ compute
_FLAT = 1e-9  # a slope per decade below this is a flat line (equal scores give ~1e-17, not 0)
_REACH = 10.0  # the confidence set is searched this many decades either side of the checkpoints
_STEP = 0.01  # in decades


@dataclass(frozen=True)
class Crossing:
    """Where a straight line in log10(pretraining FLOPs) through the checkpoints' scores reaches the
    reference (random-init) mean, with a bootstrap over the seeds of every point.

    The uncertainty is a *confidence set* found by inverting the bootstrap, as Fieller's interval does for a
    ratio: every log10 FLOPs at which the bootstrap's central 68 % of ``line - reference`` contains zero. A
    percentile interval of the bootstrap crossings themselves would be wrong here: the crossing is a ratio
    whose denominator, the slope, is often near zero, and such an interval need not even contain the point
    estimate. The set can be one segment, a segment open at either end, or two rays (when the slope's sign is
    uncertain)."""

    slope: float  # score per decade of pretraining FLOPs
    intercept: float
    reference: float  # the random-init mean the line is compared with
    log10_flops: float | None  # None when the fitted slope is not positive (the line never gets there)
    confidence_set: tuple[tuple[float, float], ...]  # segments of log10 FLOPs; -inf / inf: open at that end
    positive_share: float  # share of bootstrap fits with a positive slope
    already_above: bool  # the best checkpoint's mean is already above the reference
    last_log10_flops: float  # the largest checkpoint's compute
    first_log10_flops: float  # the smallest checkpoint's compute
    band: float = 0.68  # the central share of the bootstrap behind ``confidence_set``

    @property
    def interval(self) -> tuple[float, float] | None:
        """The segment of the confidence set that holds the point estimate (None without one)."""
        if self.log10_flops is None:
            return None
        return next((seg for seg in self.confidence_set if seg[0] <= self.log10_flops <= seg[1]), None)

    def describe(self) -> str:
        rising = f"{self.positive_share:.0%} of the bootstrap fits rise with compute"
        where_set = (f"{self.band:.0%} confidence set {_segments(self.confidence_set)}" if self.confidence_set
                     else f"no compute is in its {self.band:.0%} confidence set")
        if self.log10_flops is None:
            return (f"the fit falls or stays flat with compute (slope {self.slope:+.4f} per decade): no crossing is "
                    f"predicted; {rising}")
        if not self.first_log10_flops - _REACH <= self.log10_flops <= self.last_log10_flops + _REACH:
            return (f"slope {self.slope:+.4f} per decade of compute: the fit reaches the reference more than ten "
                    f"decades {'beyond the last' if self.log10_flops > self.last_log10_flops else 'before the first'} "
                    f"checkpoint, which is no prediction at all; {rising}")
        # where the fitted line meets the reference, against the compute measured; whether a checkpoint is
        # above the reference beyond its spread is the verdicts' question, not the fit's
        if self.log10_flops < self.first_log10_flops:
            where = f"before the first checkpoint's 10^{self.first_log10_flops:.1f}"
        elif self.log10_flops <= self.last_log10_flops:
            where = "within the checkpoints' compute"
        else:
            where = f"beyond the last checkpoint's 10^{self.last_log10_flops:.1f}"
        return (f"slope {self.slope:+.4f} per decade of compute; the fit reaches the reference at "
                f"10^{self.log10_flops:.1f} FLOPs, {where} ({where_set}); {rising}")


def _segments(segments: Sequence[tuple[float, float]]) -> str:
    def one(lo: float, hi: float) -> str:
        if math.isinf(lo) and math.isinf(hi):
            return "any compute"
        if math.isinf(lo):
            return f"below 10^{hi:.1f} FLOPs"
        if math.isinf(hi):
            return f"above 10^{lo:.1f} FLOPs, without bound"
        return f"10^{lo:.1f} to 10^{hi:.1f} FLOPs"

    return " or ".join(one(lo, hi) for lo, hi in segments)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _runs(inside: np.ndarray, grid: np.ndarray) -> tuple[tuple[float, float], ...]:
    """The runs of True in ``inside`` as (start, end) on ``grid``; a run that touches an end is open there."""
    runs, k = [], 0
    while k < len(inside):
        if not inside[k]:
            k += 1
            continue
        j = k
        while j + 1 < len(inside) and inside[j + 1]:
            j += 1
        runs.append((-math.inf if k == 0 else float(grid[k]), math.inf if j == len(inside) - 1 else float(grid[j])))
        k = j + 1
    return tuple(runs)


def crossing_point(flops: Sequence[float], scores: Sequence[Sequence[float]], reference: Sequence[float], *,
                   n_boot: int = 2000, seed: int = 0, band: float = 0.68) -> Crossing:
    """Fit ``score = a + b·log10(FLOPs)`` through every seed's score of every checkpoint (``flops[i]`` > 0,
    ``scores[i]``: one score per seed) and solve for the mean of ``reference`` (the random-init scores).
    The bootstrap resamples the seeds of every checkpoint and of the reference; the confidence set is every
    compute where the bootstrap's central ``band`` of ``line - reference`` holds zero."""
    if len(flops) != len(scores) or len(flops) < 2:
        raise ArgumentError("crossing_point needs one list of seed scores per checkpoint, at least two checkpoints")
    if any(f <= 0 for f in flops) or len(set(flops)) < 2:
        raise ArgumentError("crossing_point needs positive, not all equal, pretraining FLOPs (leave the step-0 "
                            "checkpoint out: it is the reference)")
    if not reference or any(len(s) == 0 for s in scores):
        raise ArgumentError("crossing_point needs at least one score per checkpoint and for the reference")
    if int(n_boot) < 1:
        raise ArgumentError(f"crossing_point needs at least one bootstrap draw (got n_boot={n_boot})")
    if not 0 < band < 1:
        raise ArgumentError(f"crossing_point's band is a share of the bootstrap, between 0 and 1 (got {band})")
    logs = np.log10(np.asarray(flops, dtype=float))
    groups = [np.asarray(s, dtype=float) for s in scores]
    ref = np.asarray(reference, dtype=float)

    def fit(gs: list[np.ndarray]) -> tuple[float, float]:
        x = np.concatenate([np.full(len(g), lx) for g, lx in zip(gs, logs, strict=True)])
        return _fit_line(x, np.concatenate(gs))

    slope, intercept = fit(groups)
    at = (float(ref.mean()) - intercept) / slope if slope > _FLAT else None
    rng = np.random.default_rng(seed)
    draws = np.empty((int(n_boot), 3))  # slope, intercept, reference mean of every bootstrap draw
    for k in range(int(n_boot)):
        b, a = fit([rng.choice(g, size=len(g), replace=True) for g in groups])
        draws[k] = b, a, rng.choice(ref, size=len(ref), replace=True).mean()
    grid = np.arange(logs.min() - _REACH, logs.max() + _REACH + _STEP / 2, _STEP)
    gaps = draws[:, 1:2] + draws[:, 0:1] * grid[None, :] - draws[:, 2:3]  # line - reference, draw x compute
    low, high = np.percentile(gaps, [50 * (1 - band), 50 * (1 + band)], axis=0)
    best = max(float(g.mean()) for g in groups)
    return Crossing(slope=slope, intercept=intercept, reference=float(ref.mean()), log10_flops=at,
                    confidence_set=_runs((low <= 0) & (high >= 0), grid),
                    positive_share=float((draws[:, 0] > 0).mean()) if len(draws) else 0.0,
                    already_above=best > float(ref.mean()), last_log10_flops=float(logs.max()),
                    first_log10_flops=float(logs.min()), band=band)


CROSSING_MIN_CHECKPOINTS = 4
"""A crossing is fitted through at least this many pretrained checkpoints ..."""
CROSSING_MIN_DECADES = 1.0
"""... spread over at least this many decades of pretraining compute; with fewer, only the slope's sign is read
(two checkpoints 0.3 decades apart give a line, but not one that may be extrapolated)."""


def crossing_supported(flops: Sequence[float]) -> bool:
    """Whether the pretrained checkpoints' compute ``flops`` supports a crossing fit: at least
    :data:`CROSSING_MIN_CHECKPOINTS` of them over at least :data:`CROSSING_MIN_DECADES` decades."""
    logs = np.log10(np.asarray([f for f in flops if f > 0], dtype=float))
    return len(logs) >= CROSSING_MIN_CHECKPOINTS and float(logs.max() - logs.min()) >= CROSSING_MIN_DECADES - 1e-9


def slope_sign(flops: Sequence[float], scores: Sequence[Sequence[float]], reference: Sequence[float]) -> str:
    """What too few checkpoints for :func:`crossing_point` still say: the sign of the least-squares slope of the
    score per decade of compute (every seed's score at every checkpoint), or with one checkpoint the sign of its
    mean's difference from the reference (random-init) mean. No crossing is extrapolated."""
    if len(flops) != len(scores) or not flops or any(len(s) == 0 for s in scores) or not reference:
        raise ArgumentError("slope_sign needs one non-empty list of scores per checkpoint and a reference")
    logs = np.log10(np.asarray(flops, dtype=float))
    gap = float(np.mean(np.concatenate([np.asarray(s, dtype=float) for s in scores])) - np.mean(reference))
    span = float(logs.max() - logs.min())
    if len(set(logs.tolist())) < 2:
        return (f"one checkpoint, {gap:+.4f} from the random-init mean: "
                f"{'above' if gap > 0 else 'not above'} it; too few checkpoints for a fit")
    slope, _ = _fit_line(np.concatenate([np.full(len(s), lx) for s, lx in zip(scores, logs, strict=True)]),
                               np.concatenate([np.asarray(s, dtype=float) for s in scores]))
    return (f"{len(flops)} checkpoints over {span:.1f} decades (a fit needs {CROSSING_MIN_CHECKPOINTS} over "
            f"{CROSSING_MIN_DECADES:g}): the score {'rises' if slope > _FLAT else 'does not rise'} with compute "
            f"(slope {slope:+.4f} per decade); no crossing is extrapolated")


def paired_scores(rows: Sequence[dict[str, Any]], a: str, b: str, task: str, n: int
                  ) -> tuple[list[float], list[float]]:
    """The scores of encoders ``a`` and ``b`` (rows' ``init``) on ``task`` at ``n``, matched seed by seed: only the
    seeds both have, in the order of ``a``'s rows, so that position i of both lists is one pair (for
    ``compare(..., paired=True)``). Arms run on different seed lists (a variant probed with more seeds than
    the pretraining runs it is compared with) pair on the seeds they share."""
    of = {label: {int(r["seed"]): float(r["score"]) for r in rows
                  if (r["init"], r["task"], r["n"]) == (label, task, n)} for label in (a, b)}
    shared = [seed for seed in of[a] if seed in of[b]]
    return [of[a][seed] for seed in shared], [of[b][seed] for seed in shared]


# ------------------------------------------------------------------------------------------ pictures
def plot_curves(ax, rows: Sequence[dict[str, Any]], *, x: str = "n", value: str = "score", by: str = "init",
                log_x: bool = True, styles: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """One line per value of ``by``: the mean over seeds at every ``x``, a band of ± one std, the seeds as
    dots. Baselines read best dashed: pass ``styles={"majority class": {"ls": "--"}}``. Returns the labels."""
    from lmcourse.spread import spread

    labels = list(dict.fromkeys(r[by] for r in rows))
    for label in labels:
        mine = [r for r in rows if r[by] == label]
        xs = sorted({r[x] for r in mine})
        per = [spread([r[value] for r in mine if r[x] == v]) for v in xs]
        means = np.asarray([s.mean for s in per])
        stds = np.asarray([0.0 if s.n < 2 else s.std for s in per])
        line, = ax.plot(xs, means, marker="o", ms=4, label=label, **(styles or {}).get(label, {}))
        ax.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.15, lw=0)
        ax.scatter([r[x] for r in mine], [r[value] for r in mine], s=8, alpha=0.35, color=line.get_color())
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(value)
    return labels
