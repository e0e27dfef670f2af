"""Fine-tuning a pretrained encoder on any GLUE task with the Hugging Face ``Trainer``: one code path.

:func:`finetune` covers single sentences (CoLA, SST-2), sentence pairs (MRPC, QQP, QNLI, RTE, WNLI, MNLI
on ``validation_matched`` and ``validation_mismatched``) and regression (STS-B: one output, MSE loss,
Pearson/Spearman). The recipe: dynamic padding (``DataCollatorWithPadding``), length-grouped batches,
linear warmup, weight decay, bf16 autocast where the hardware supports it, evaluation every epoch with
the lmcourse GLUE metric, early stopping on the task's main metric and the best checkpoint kept as
safetensors. A :class:`ThroughputCallback` measures training tokens/s (non-padding and padded tokens)
and MFU (model FLOPs over the peak measured on this machine; the tokens actually computed, i.e. padded,
go into MFU). ``fgm_epsilon > 0`` adds adversarial training on the word embeddings (:class:`FGM`).

Metric names recorded by the notebooks (:func:`metric_record`; the benchmark suite collects these):

- ``{task}/{metric}`` for every metric of the task's first eval split (e.g. ``sst2/accuracy``,
  ``mrpc/f1``, ``mrpc/accuracy``, ``mrpc/combined_score``, ``stsb/pearson``, ``stsb/spearmanr``,
  ``cola/matthews_correlation``); every task also gets ``{task}/combined_score`` (the GLUE task score);
- ``{task}_mismatched/{metric}`` for MNLI's second eval split (``validation_mismatched``);
- ``{task}/train_tokens_per_s`` (non-padding tokens), ``{task}/train_padded_tokens_per_s``,
  ``{task}/mfu``, ``{task}/peak_memory_bytes``, ``{task}/train_seconds``, ``{task}/trainable_params``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from lmcourse.data import GlueTask, get_task, load_glue
from lmcourse.errors import LmcourseError, SpecError, UnknownNameError
from lmcourse.profiles import Profile, get_profile

# ------------------------------------------------------------------------------------------ sizes
#: Per-profile, per-task training budgets (overrides of the profile's defaults). The cpu numbers keep
#: each task within a few minutes on 2 cores; gpu is the published recipe on the full data.
TASK_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "_default": {"max_train_samples": 256, "num_epochs": 2, "learning_rate": 1e-4, "max_length": 64,
                     "batch_size": 16, "max_eval_samples": 128, "warmup_ratio": 0.1},
    },
    "cpu": {  # a few minutes per task on 2 uncontended cores (bf16); tasks with long pairs get fewer epochs
        "_default": {"max_train_samples": 4000, "num_epochs": 2, "learning_rate": 5e-5, "max_length": 128,
                     "batch_size": 32, "warmup_ratio": 0.1},
        "cola": {"max_train_samples": None, "num_epochs": 2, "max_length": 64, "learning_rate": 5e-5},
        "sst2": {"max_train_samples": None, "num_epochs": 1, "max_length": 64},  # all 67k: ~8 min, acc ~0.89
        "mrpc": {"max_train_samples": None, "num_epochs": 2, "learning_rate": 8e-5},
        "stsb": {"max_train_samples": None, "num_epochs": 2, "learning_rate": 8e-5},
        "rte": {"max_train_samples": None, "num_epochs": 2, "learning_rate": 5e-5},
        "wnli": {"max_train_samples": None, "num_epochs": 2, "learning_rate": 2e-5},
    },
    "gpu": {
        "_default": {"max_train_samples": None, "num_epochs": 3, "learning_rate": 2e-5, "max_length": 128,
                     "batch_size": 32, "warmup_ratio": 0.0},
    },
}

#: Sizes of the notebook experiments beyond the per-task runs (ablations, speed comparison, PEFT, few-shot).
NOTEBOOK_SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"tasks": ("sst2", "mrpc", "stsb"), "ablation_train": 64, "ablation_epochs": 1, "ablation_eval": 64,
              "ablation_configs": ("baseline", "no weight decay", "FGM ε=1"),
              "speed_train": 64, "speed_eval": 32,
              "peft_tasks": ("sst2",), "peft_methods": ("full", "bitfit", "lora", "adapter", "prompt"),
              "peft_train": 96, "peft_eval": 64, "peft_epochs": 1,
              "fewshot_pool": 256, "fewshot_eval": 128, "fewshot_ks": (8, 16), "fewshot_seeds": (0, 1),
              "fewshot_ft_ks": (8,), "fewshot_ft_seeds": (0,), "fewshot_ft_epochs": 3},
    "cpu": {"tasks": ("cola", "sst2", "mrpc", "stsb", "rte", "wnli"), "ablation_train": 2000, "ablation_epochs": 3,
            "ablation_eval": None,
            "ablation_configs": ("baseline", "no weight decay", "weight decay 0.1", "no dropout", "dropout 0.3",
                                 "early stopping (patience 1)", "FGM ε=1"),
            "speed_train": 1000, "speed_eval": 256,
            "peft_tasks": ("sst2", "mrpc"),
            "peft_methods": ("full", "bitfit", "lora", "lora-peft", "adapter", "adapter-houlsby", "prompt", "prefix"),
            "peft_train": 3000, "peft_eval": None, "peft_epochs": 3,
            "fewshot_pool": 4000, "fewshot_eval": None, "fewshot_ks": (8, 16, 64), "fewshot_seeds": (0, 1, 2, 3, 4),
            "fewshot_ft_ks": (8, 16, 64), "fewshot_ft_seeds": (0, 1, 2), "fewshot_ft_epochs": 10},
    "gpu": {"tasks": ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"), "ablation_train": None,
            "ablation_epochs": 3, "ablation_eval": None,
            "ablation_configs": ("baseline", "no weight decay", "weight decay 0.1", "no dropout", "dropout 0.3",
                                 "early stopping (patience 1)", "FGM ε=1"),
            "speed_train": 20000, "speed_eval": None, "peft_tasks": ("sst2", "mrpc"),
            "peft_methods": ("full", "bitfit", "lora", "lora-peft", "adapter", "adapter-houlsby", "prompt", "prefix"),
            "peft_train": None, "peft_eval": None, "peft_epochs": 3,
            "fewshot_pool": None, "fewshot_eval": None, "fewshot_ks": (8, 16, 64), "fewshot_seeds": (0, 1, 2, 3, 4),
            "fewshot_ft_ks": (8, 16, 64), "fewshot_ft_seeds": (0, 1, 2, 3, 4), "fewshot_ft_epochs": 10},
}

#: The regularisation ablation: name -> finetune() overrides.
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no weight decay": {"weight_decay": 0.0},
    "weight decay 0.1": {"weight_decay": 0.1},
    "no dropout": {"dropout": 0.0},
    "dropout 0.3": {"dropout": 0.3},
    "early stopping (patience 1)": {"early_stopping_patience": 1},
    "FGM ε=1": {"fgm_epsilon": 1.0},
}

#: The speed comparison: run_glue.py's plain recipe, then one optimisation added at a time.
SPEED_CONFIGS: dict[str, dict[str, Any]] = {
    "plain (pad to 128, fp32, random order)": {"pad_to_max_length": True, "group_by_length": False, "bf16": False},
    "+ dynamic padding": {"pad_to_max_length": False, "group_by_length": False, "bf16": False},
    "+ group_by_length": {"pad_to_max_length": False, "group_by_length": True, "bf16": False},
    "+ bf16 autocast": {"pad_to_max_length": False, "group_by_length": True, "bf16": True},
}


def notebook_sizes(profile: str | Profile | None) -> dict[str, Any]:
    """The experiment sizes of notebooks 07/08 for ``profile``."""
    name = get_profile(profile).name
    if name not in NOTEBOOK_SIZES:
        raise UnknownNameError(f"no notebook sizes for profile {name!r}; known: {sorted(NOTEBOOK_SIZES)}")
    return dict(NOTEBOOK_SIZES[name])


def load_floors(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``data/finetune_floors.yaml``: per-profile, per-task metric floors asserted by notebook 07."""
    import yaml

    from lmcourse.data import REPO_ROOT

    path = Path(path) if path is not None else REPO_ROOT / "data" / "finetune_floors.yaml"
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_references(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``data/references/glue_dev.yaml``: published GLUE dev results with their sources."""
    import yaml

    from lmcourse.data import REPO_ROOT

    path = Path(path) if path is not None else REPO_ROOT / "data" / "references" / "glue_dev.yaml"
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)["models"]


def most_confident_mistakes(pred: EvalPredictions, task: str, n: int = 10):
    """The ``n`` wrong predictions the model was surest of (classification), or the largest errors
    (regression), with their texts: where to look first in error analysis."""
    import pandas as pd

    spec = get_task(task)
    ex = pred.examples
    if spec.is_regression:
        err = np.abs(pred.predictions - pred.labels)
        order = np.argsort(-err)[:n]
        rows = [{**{c: ex[int(i)][c] for c in spec.input_columns}, "label": float(pred.labels[i]),
                 "predicted": float(pred.predictions[i]), "abs error": float(err[i])} for i in order]
        return pd.DataFrame(rows)
    probs = pred.probabilities
    wrong = np.flatnonzero(pred.predictions != pred.labels)
    conf = probs[wrong, pred.predictions[wrong]]
    order = wrong[np.argsort(-conf)][:n]
    names = spec.label_names
    rows = [{**{c: ex[int(i)][c] for c in spec.input_columns}, "label": names[int(pred.labels[i])],
             "predicted": names[int(pred.predictions[i])], "confidence": float(probs[i, pred.predictions[i]])}
            for i in order]
    return pd.DataFrame(rows)


#: Hyperparameters :func:`finetune` accepts as keyword overrides, with their meaning.
HYPERPARAMETERS: dict[str, str] = {
    "learning_rate": "peak learning rate of AdamW",
    "num_epochs": "training epochs (float allowed)",
    "max_steps": "stop after this many optimiser steps (overrides num_epochs when > 0)",
    "batch_size": "training batch size",
    "eval_batch_size": "evaluation batch size",
    "max_length": "truncate inputs to this many tokens",
    "max_train_samples": "use a random subset of this many training examples (None: all)",
    "max_eval_samples": "evaluate on a fixed random subset of this many examples (None: all)",
    "weight_decay": "decoupled weight decay of AdamW (biases and LayerNorm excluded by the Trainer)",
    "warmup_ratio": "fraction of the steps with linear warmup",
    "dropout": "hidden and attention dropout of the encoder (None: the checkpoint's)",
    "early_stopping_patience": "evaluations without improvement before stopping (None: no early stopping)",
    "fgm_epsilon": "FGM adversarial training on the word embeddings with this L2 norm (0: off)",
    "pad_to_max_length": "pad every example to max_length (the plain recipe) instead of dynamic padding",
    "group_by_length": "batch examples of similar length together (less padding)",
    "bf16": "bf16 autocast (None: where the device supports it)",
    "eval_strategy": "'epoch' or 'steps' or 'no'",
    "eval_steps": "evaluate every this many steps when eval_strategy='steps'",
    "train_indices": "explicit list of training example indices (few-shot), instead of max_train_samples",
    "progress": "show the Trainer's tqdm progress bar",
    "keep_checkpoints": "keep the Trainer's checkpoint-* folders (default: only the best model is kept)",
    "save_model": "save the final (best) model to <output_dir>/best; False deletes everything written",
    "model_init_hook": "callable(model) -> model applied after loading (e.g. LoRA/BitFit), or None",
    "logging_steps": "log the training loss every this many steps",
    "device": "torch device (default: lmcourse.runtime.choose_device())",
}


def task_settings(profile: str | Profile | None, task: str, **overrides: Any) -> dict[str, Any]:
    """The hyperparameters :func:`finetune` uses for ``task`` under ``profile``, after ``overrides``.

    Order: profile fields < ``TASK_SIZES[profile]['_default']`` < ``TASK_SIZES[profile][task]`` < overrides.
    Overrides whose value is ``None`` are ignored for the sizing keys that a profile fixes (so a notebook
    parameter ``max_length = None`` means "from the profile").
    """
    prof = get_profile(profile)
    spec = get_task(task)
    if prof.name not in TASK_SIZES:
        raise UnknownNameError(f"no fine-tuning sizes for profile {prof.name!r}; known: {sorted(TASK_SIZES)}")
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise SpecError(f"unknown fine-tuning hyperparameter(s) {unknown}; known: {sorted(HYPERPARAMETERS)}")
    s: dict[str, Any] = {
        "learning_rate": prof.learning_rate, "num_epochs": prof.num_epochs, "max_steps": -1,
        "batch_size": prof.batch_size, "eval_batch_size": prof.eval_batch_size, "max_length": prof.max_length,
        "max_train_samples": prof.max_train_samples, "max_eval_samples": prof.max_eval_samples,
        "weight_decay": 0.01, "warmup_ratio": 0.1, "dropout": None, "early_stopping_patience": None,
        "fgm_epsilon": 0.0, "pad_to_max_length": False, "group_by_length": True, "bf16": None,
        "eval_strategy": "epoch", "eval_steps": None, "train_indices": None, "progress": True,
        "keep_checkpoints": False, "save_model": True, "model_init_hook": None, "logging_steps": 50, "device": None,
    }
    s.update(TASK_SIZES[prof.name].get("_default", {}))
    s.update(TASK_SIZES[prof.name].get(spec.name, {}))
    nullable = {"max_train_samples", "max_eval_samples", "dropout", "early_stopping_patience", "bf16",
                "train_indices", "model_init_hook", "eval_steps", "device"}
    for key, value in overrides.items():
        if value is None and key not in nullable:
            continue  # "None" = keep the profile's value
        s[key] = value
    return s


# ------------------------------------------------------------------------------------------ data
def tokenize_glue(dataset, tokenizer, task: str | GlueTask, max_length: int, pad_to_max_length: bool = False):
    """Tokenise a GLUE split (one or two text columns), keeping ``label`` and a ``length`` column."""
    spec = task if isinstance(task, GlueTask) else get_task(task)
    cols = spec.input_columns

    def encode(batch):
        texts = [batch[c] for c in cols]
        enc = tokenizer(*texts, truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max_length else False)
        enc["length"] = [int(sum(m)) for m in enc["attention_mask"]]
        return enc

    remove = [c for c in dataset.column_names if c != "label"]
    return dataset.map(encode, batched=True, remove_columns=remove, desc=f"tokenise {spec.name}")


def _subset(dataset, n: int | None, seed: int):
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(int(n)))


def majority_baseline(task: str, labels) -> dict[str, float]:
    """The GLUE metric of always predicting the most frequent label of ``labels`` (regression: the mean)."""
    from lmcourse.metrics import compute_glue_metric

    spec = get_task(task)
    labels = np.asarray(labels)
    if spec.is_regression:  # a constant prediction has no correlation with anything: score 0 by definition
        return {"pearson": 0.0, "spearmanr": 0.0, "combined_score": 0.0}
    preds = np.full(len(labels), int(np.bincount(labels.astype(int)).argmax()))
    metrics = compute_glue_metric(spec.metric_config, preds, labels)
    return _with_task_score(spec.name, metrics)


def _with_task_score(task: str, metrics: dict[str, float]) -> dict[str, float]:
    from lmcourse.metrics import task_score

    metrics = {k: float(v) for k, v in metrics.items()}
    metrics.setdefault("combined_score", task_score(task, metrics))
    return metrics


def glue_compute_metrics(task: str | GlueTask):
    """A ``compute_metrics`` for the Trainer: logits → predictions → lmcourse GLUE metric (+ combined_score)."""
    from lmcourse.metrics import compute_glue_metric

    spec = task if isinstance(task, GlueTask) else get_task(task)

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = logits.reshape(-1) if spec.is_regression else np.argmax(logits, axis=-1)
        return _with_task_score(spec.name, compute_glue_metric(spec.metric_config, preds, labels))

    return compute


# ------------------------------------------------------------------------------------------ speed
class ThroughputCallback(TrainerCallback):
    """Training tokens/s and MFU. The trainer hands every training batch to :meth:`count`; the clock
    runs from ``on_epoch_begin`` to ``on_epoch_end`` (data loading and steps; evaluation and checkpoint
    saving excluded).

    Non-padding tokens (``attention_mask.sum()``) measure useful work; padded tokens
    (``input_ids.numel()``) are what the model actually computes, so MFU uses those. The attention
    FLOPs grow with the padded length ``T`` of each batch, so the callback also accumulates
    ``sum(tokens * T)`` to give the token-weighted mean ``T`` for the ``12 L H Q T`` term.
    """

    def __init__(self, model=None, peak_flops: float | None = None, device: str | torch.device = "cpu"):
        self.tokens = 0
        self.padded_tokens = 0
        self.examples = 0
        self.batches = 0
        self._tokens_times_len = 0
        self.seconds = 0.0
        self._t0: float | None = None
        self.model = model
        self.peak_flops = peak_flops
        self.device = torch.device(device)
        self._mem = _PeakMemory(self.device)

    def count(self, inputs: dict[str, Any]) -> None:
        """Count one training batch (a dict with ``input_ids`` and usually ``attention_mask``)."""
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        n_pad = int(ids.numel())
        self.padded_tokens += n_pad
        self.tokens += int(mask.sum()) if mask is not None else n_pad
        self.examples += int(ids.shape[0])
        self.batches += 1
        self._tokens_times_len += n_pad * int(ids.shape[-1])

    def on_train_begin(self, args, state, control, **kwargs):
        self._mem.start()

    def on_train_end(self, args, state, control, **kwargs):
        self._mem.stop()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._t0 = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    @property
    def mean_padded_length(self) -> float:
        return self._tokens_times_len / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def padded_tokens_per_second(self) -> float:
        return self.padded_tokens / self.seconds if self.seconds > 0 else 0.0

    def flops_per_token(self) -> float | None:
        """``6N + 12 L H Q T`` for this encoder (N: matmul weights, word-embedding look-up excluded)."""
        if self.model is None:
            return None
        return encoder_training_flops_per_token(self.model, max(1.0, self.mean_padded_length))

    @property
    def mfu(self) -> float | None:
        fpt = self.flops_per_token()
        if not fpt or not self.peak_flops or self.seconds <= 0:
            return None
        from lmcourse.flops import mfu

        return mfu(self.padded_tokens_per_second, fpt, self.peak_flops)

    @property
    def peak_memory_bytes(self) -> int:
        return self._mem.peak

    def summary(self) -> dict[str, Any]:
        return {"train_tokens": self.tokens, "train_padded_tokens": self.padded_tokens,
                "train_examples": self.examples, "train_seconds": self.seconds,
                "train_tokens_per_s": self.tokens_per_second,
                "train_padded_tokens_per_s": self.padded_tokens_per_second,
                "padding_fraction": 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0,
                "mean_padded_length": self.mean_padded_length, "flops_per_token": self.flops_per_token(),
                "peak_flops": self.peak_flops, "mfu": self.mfu, "peak_memory_bytes": self.peak_memory_bytes}


def encoder_training_flops_per_token(model, seq_len: float) -> float:
    """Training FLOPs per token of a (BERT-like) classifier: the word embedding is only a look-up here."""
    from lmcourse.flops import matmul_params, training_flops_per_token

    cfg = model.config
    n = matmul_params(model, exclude_substrings=("position_embeddings", "token_type_embeddings", "wpe",
                                                 "LayerNorm", "layernorm", "ln_", "word_embeddings"))
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    return training_flops_per_token(n, cfg.num_hidden_layers, heads, head_dim, round(seq_len))


class _PeakMemory:
    """Peak memory during training: CUDA's counter, or on CPU the peak resident set size above the RSS
    at the start of training, sampled every 20 ms by a thread (max RSS of the process cannot be reset)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        import psutil

        proc = psutil.Process()
        base = proc.memory_info().rss
        self._stop.clear()

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, proc.memory_info().rss - base)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


# ------------------------------------------------------------------------------------------ FGM
class FGM:
    """Fast Gradient Method on the word embeddings (Miyato et al. 2017, "Adversarial training methods
    for semi-supervised text classification"): after the clean backward pass, move the embedding matrix
    by ``r = ε g / ||g||`` (the direction that increases the loss fastest), do a second forward/backward
    (its gradient adds to the clean one), then put the weights back exactly."""

    def __init__(self, model: torch.nn.Module, epsilon: float = 1.0):
        self.model = model
        self.epsilon = float(epsilon)
        emb = model.get_input_embeddings()
        if emb is None:
            raise LmcourseError("FGM needs a model with get_input_embeddings()")
        self.weight: torch.nn.Parameter = emb.weight
        self._backup: torch.Tensor | None = None

    def attack(self) -> torch.Tensor | None:
        """Add ``ε g/||g||`` to the embeddings (after ``backward``); returns the perturbation (or None)."""
        grad = self.weight.grad
        if grad is None:
            return None
        norm = torch.linalg.vector_norm(grad.float())
        if not torch.isfinite(norm) or norm == 0:
            return None
        self._backup = self.weight.data.clone()
        r = (self.epsilon * grad.float() / norm).to(self.weight.dtype)
        self.weight.data.add_(r)
        return r

    def restore(self) -> None:
        """Put the saved embedding weights back (bit-exact)."""
        if self._backup is not None:
            self.weight.data.copy_(self._backup)
            self._backup = None


# ------------------------------------------------------------------------------------------ trainer
class QuietProgressCallback(ProgressCallback):
    """The Trainer's tqdm bars without the log dicts printed under them (notebooks stay short)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class GlueTrainer(Trainer):
    """``Trainer`` that counts every training batch for the :class:`ThroughputCallback` and, with
    ``fgm_epsilon > 0``, adds an FGM adversarial step."""

    def __init__(self, *args, throughput: ThroughputCallback | None = None, fgm_epsilon: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.throughput = throughput
        self.fgm_epsilon = float(fgm_epsilon)
        self._fgm: FGM | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.throughput is not None:
            self.throughput.count(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.fgm_epsilon > 0:
            if self._fgm is None:
                self._fgm = FGM(self.accelerator.unwrap_model(model), self.fgm_epsilon)
            if self._fgm.attack() is not None:
                try:
                    super().training_step(model, inputs, num_items_in_batch)  # adversarial grads accumulate
                finally:
                    self._fgm.restore()
            if self.throughput is not None:  # the second pass is computed work too
                self.throughput.padded_tokens += int(inputs["input_ids"].numel())
                self.throughput._tokens_times_len += int(inputs["input_ids"].numel()) * int(
                    inputs["input_ids"].shape[-1])
        return loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluate in dataset order. With ``group_by_length`` the Trainer would length-sort the eval set
        too, and predictions would no longer line up with the examples they belong to."""
        if eval_dataset is None or self.args.world_size > 1:
            return super()._get_eval_sampler(eval_dataset)
        return torch.utils.data.SequentialSampler(eval_dataset)


# ------------------------------------------------------------------------------------------ result
@dataclass
class EvalPredictions:
    """Logits and labels of one eval split, with the raw examples for error analysis."""

    logits: np.ndarray
    labels: np.ndarray
    examples: Any  # datasets.Dataset of the untokenised eval split (same order)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.reshape(-1) if self.logits.shape[-1] == 1 else self.logits.argmax(-1)

    @property
    def probabilities(self) -> np.ndarray:
        return torch.softmax(torch.as_tensor(self.logits, dtype=torch.float32), -1).numpy()


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: metrics per eval split, speed and memory, predictions, checkpoint."""

    task: str
    model: str
    profile: str
    seed: int
    metrics: dict[str, dict[str, float]]
    main_metric: str
    train_tokens_per_s: float
    train_padded_tokens_per_s: float
    mfu: float | None
    peak_memory_bytes: int
    train_seconds: float
    trainable_params: int
    total_params: int
    predictions: dict[str, EvalPredictions]
    best_checkpoint: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The main metric on the first eval split."""
        return self.metrics[next(iter(self.metrics))][self.main_metric]

    def summary(self) -> dict[str, Any]:
        first = next(iter(self.metrics))
        return {"task": self.task, **self.metrics[first], "train_tokens_per_s": self.train_tokens_per_s,
                "mfu": self.mfu, "train_seconds": self.train_seconds, "peak_memory_bytes": self.peak_memory_bytes,
                "trainable_params": self.trainable_params}


def metric_record(result: FinetuneResult) -> dict[str, Any]:
    """The flat ``{task}/{name}`` dict the notebooks record (see the module docstring)."""
    spec = get_task(result.task)
    out: dict[str, Any] = {}
    for i, (split, metrics) in enumerate(result.metrics.items()):
        prefix = spec.name if i == 0 else f"{spec.name}_{split.split('_')[-1]}"
        out.update({f"{prefix}/{k}": v for k, v in metrics.items()})
    t = spec.name
    out.update({f"{t}/train_tokens_per_s": result.train_tokens_per_s,
                f"{t}/train_padded_tokens_per_s": result.train_padded_tokens_per_s,
                f"{t}/mfu": result.mfu, f"{t}/peak_memory_bytes": result.peak_memory_bytes,
                f"{t}/train_seconds": result.train_seconds, f"{t}/trainable_params": result.trainable_params})
    return out


# ------------------------------------------------------------------------------------------ model
def load_classifier(task: str | GlueTask, model: str, *, random_init: bool = False, dropout: float | None = None):
    """Tokenizer and ``AutoModelForSequenceClassification`` for ``task`` (regression head for STS-B)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from lmcourse.models import resolve

    spec = task if isinstance(task, GlueTask) else get_task(task)
    path = resolve(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {"num_labels": spec.num_labels}
        if spec.is_regression:
            kwargs["problem_type"] = "regression"
        else:
            kwargs["id2label"] = dict(enumerate(spec.label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(spec.label_names)}
        config = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UnknownNameError(
            f"could not load model {model!r} (resolved to {path!r}): {type(exc).__name__}: {str(exc)[:300]}. "
            "Pass a short name from lmcourse.models.KNOWN_MODELS, a local save_pretrained folder with its "
            "tokenizer, or a Hub id (needs network)."
        ) from None
    if dropout is not None:
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                     "classifier_dropout", "seq_classif_dropout"):
            if hasattr(config, attr):
                setattr(config, attr, float(dropout))
    if random_init:
        net = AutoModelForSequenceClassification.from_config(config)
    else:
        net = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    return tokenizer, net


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, tied tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _default_output_dir(task: str, model: str) -> str:
    from lmcourse.tracking import run_dir

    stem = f"{task}-{Path(str(model)).name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder = run_dir()
    if folder is not None:
        out = folder / "finetune" / stem
        out.mkdir(parents=True, exist_ok=True)
        return str(out)
    return tempfile.mkdtemp(prefix=f"lmcourse-ft-{stem}-")


# ------------------------------------------------------------------------------------------ finetune
def finetune(task: str, model: str | None = None, *, profile: str | Profile | None = None, seed: int = 0,
             random_init: bool = False, output_dir: str | os.PathLike | None = None,
             **overrides: Any) -> FinetuneResult:
    """Fine-tune ``model`` on GLUE ``task`` and evaluate it on the task's eval split(s).

    ``model``: a short name (:func:`lmcourse.models.resolve`), a Hub id or a local ``save_pretrained``
    folder with its tokenizer; ``None`` takes the profile's ``finetune_model``. ``random_init=True``
    builds the same architecture with random weights. ``overrides``: see :data:`HYPERPARAMETERS`.
    """
    import transformers
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainingArguments, default_data_collator

    from lmcourse.perf import bf16_supported, measure_peak_flops
    from lmcourse.runtime import choose_device, seed_everything

    spec = get_task(task)
    prof = get_profile(profile)
    s = task_settings(prof, spec.name, **overrides)
    model_name = model or prof.finetune_model
    device = torch.device(s["device"] or choose_device())
    use_bf16 = bf16_supported(device) if s["bf16"] is None else bool(s["bf16"])
    if use_bf16 and not bf16_supported(device):
        raise LmcourseError(f"bf16=True but {device} does not support bf16; pass bf16=False")

    train_split = spec.train_split
    if train_split is None:
        raise UnknownNameError(f"GLUE task {spec.name!r} has no training split; it cannot be fine-tuned on")
    raw_train = load_glue(spec.name, train_split)  # DataUnavailableError surfaces unchanged
    raw_evals = {split: load_glue(spec.name, split) for split in spec.eval_splits}
    if s["train_indices"] is not None:
        raw_train = raw_train.select([int(i) for i in s["train_indices"]])
    else:
        raw_train = _subset(raw_train, s["max_train_samples"], seed)
    raw_evals = {k: _subset(v, s["max_eval_samples"], 0) for k, v in raw_evals.items()}

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight loading/saving bars; the Trainer's stays
    import datasets

    datasets.disable_progress_bars()
    seed_everything(seed)
    tokenizer, net = load_classifier(spec, model_name, random_init=random_init, dropout=s["dropout"])
    if s["model_init_hook"] is not None:
        net = s["model_init_hook"](net)
    trainable = count_parameters(net)
    total = count_parameters(net, trainable_only=False)

    train_ds = tokenize_glue(raw_train, tokenizer, spec, s["max_length"], s["pad_to_max_length"])
    eval_ds = {k: tokenize_glue(v, tokenizer, spec, s["max_length"], s["pad_to_max_length"])
               for k, v in raw_evals.items()}
    collator = default_data_collator if s["pad_to_max_length"] else DataCollatorWithPadding(tokenizer)
    main = spec.main_metric
    first_split = spec.eval_splits[0]
    best_metric = main if len(eval_ds) == 1 else f"{first_split}_{main}"
    evaluating = s["eval_strategy"] != "no"

    created_out = output_dir is None or not Path(output_dir).exists()
    out = Path(output_dir) if output_dir is not None else Path(_default_output_dir(spec.name, model_name))
    out.mkdir(parents=True, exist_ok=True)
    peak = measure_peak_flops(torch.bfloat16 if use_bf16 else torch.float32, device)
    throughput = ThroughputCallback(net, peak, device)
    args = TrainingArguments(
        output_dir=str(out),
        learning_rate=s["learning_rate"],
        num_train_epochs=float(s["num_epochs"]),
        max_steps=int(s["max_steps"]) if s["max_steps"] else -1,
        per_device_train_batch_size=int(s["batch_size"]),
        per_device_eval_batch_size=int(s["eval_batch_size"]),
        weight_decay=float(s["weight_decay"]),
        warmup_steps=float(s["warmup_ratio"]),
        lr_scheduler_type="linear",
        eval_strategy=s["eval_strategy"],
        eval_steps=s["eval_steps"],
        save_strategy=s["eval_strategy"] if evaluating else "no",
        save_steps=s["eval_steps"],
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=evaluating,
        metric_for_best_model=best_metric if evaluating else None,
        greater_is_better=True,
        train_sampling_strategy="group_by_length" if s["group_by_length"] else "random",
        length_column_name="length",
        bf16=use_bf16,
        use_cpu=device.type == "cpu",
        seed=seed,
        data_seed=seed,
        logging_strategy="steps",
        logging_steps=int(s["logging_steps"]),
        report_to="none",
        disable_tqdm=not s["progress"],
        log_level="error",
        dataloader_num_workers=0,
    )
    callbacks: list[TrainerCallback] = [throughput]
    if s["early_stopping_patience"] is not None and evaluating:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(s["early_stopping_patience"])))
    trainer = GlueTrainer(
        model=net, args=args, train_dataset=train_ds,
        eval_dataset=(eval_ds[first_split] if len(eval_ds) == 1 else eval_ds) if evaluating else None,
        processing_class=tokenizer, data_collator=collator, compute_metrics=glue_compute_metrics(spec),
        callbacks=callbacks, throughput=throughput, fgm_epsilon=s["fgm_epsilon"],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if s["progress"]:
        trainer.add_callback(QuietProgressCallback)
    trainer.train()

    metrics: dict[str, dict[str, float]] = {}
    predictions: dict[str, EvalPredictions] = {}
    for split, ds in eval_ds.items():
        pred = trainer.predict(ds, metric_key_prefix="eval")
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        metrics[split] = {k[len("eval_"):]: float(v) for k, v in pred.metrics.items()
                          if k.startswith("eval_") and k[len("eval_"):] not in
                          ("loss", "runtime", "samples_per_second", "steps_per_second")}
        predictions[split] = EvalPredictions(np.asarray(logits, dtype=np.float32), np.asarray(pred.label_ids),
                                             raw_evals[split])

    best_dir: Path | None = out / "best"
    if s["save_model"]:
        trainer.save_model(str(best_dir))  # safetensors + config + tokenizer (processing_class)
        if not s["keep_checkpoints"]:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    else:
        best_dir = None
        if created_out:  # nothing of this run is kept on disk
            shutil.rmtree(out, ignore_errors=True)
        else:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    t = throughput.summary()
    return FinetuneResult(
        task=spec.name, model=str(model_name), profile=prof.name, seed=seed, metrics=metrics, main_metric=main,
        train_tokens_per_s=t["train_tokens_per_s"], train_padded_tokens_per_s=t["train_padded_tokens_per_s"],
        mfu=t["mfu"], peak_memory_bytes=int(t["peak_memory_bytes"]), train_seconds=t["train_seconds"],
        trainable_params=trainable, total_params=total, predictions=predictions,
        best_checkpoint=str(best_dir) if best_dir is not None else None,
        settings={k: v for k, v in s.items() if k not in ("model_init_hook",)} | {"bf16": use_bf16,
                                                                                  "device": str(device)},
        throughput=t, log_history=list(trainer.state.log_history),
    )
