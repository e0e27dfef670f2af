"""Fine-tuning recipes: which hyperparameters :func:`~lmcourse.finetuning.finetune` accepts, and how a
profile's per-task budget (``Profile.finetune_tasks``, in :mod:`lmcourse.profiles`) and a caller's
overrides combine into the settings of one run."""

from __future__ import annotations

from typing import Any

from lmcourse.data import get_task
from lmcourse.errors import ArgumentError
from lmcourse.profiles import Profile, get_profile

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
    "selection_fraction": "fraction of the training examples held out (seeded) to pick the best checkpoint and "
                          "to early-stop; the GLUE dev set is only reported, never selected on (0: no selection)",
    "max_selection_samples": "at most this many held-out selection examples (None: no cap)",
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
}


def task_settings(profile: str | Profile | None, task: str, **overrides: Any) -> dict[str, Any]:
    """The hyperparameters :func:`finetune` uses for ``task`` under ``profile``, after ``overrides``.

    Order: profile fields < ``finetune_tasks['_default']`` < ``finetune_tasks[task]`` < overrides.
    Overrides whose value is ``None`` are ignored for the sizing keys that a profile fixes (so a notebook
    parameter ``max_length = None`` means "from the profile").
    """
    prof = get_profile(profile)
    spec = get_task(task)
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise ArgumentError(f"unknown fine-tuning hyperparameter(s) {unknown}; known: {sorted(HYPERPARAMETERS)}")
    s: dict[str, Any] = {
        "learning_rate": prof.learning_rate, "num_epochs": prof.num_epochs, "max_steps": -1,
        "batch_size": prof.batch_size, "eval_batch_size": prof.eval_batch_size, "max_length": prof.max_length,
        "max_train_samples": prof.max_train_samples, "max_eval_samples": prof.max_eval_samples,
        "weight_decay": 0.01, "warmup_ratio": 0.1, "dropout": None, "early_stopping_patience": None,
        "selection_fraction": 0.1, "max_selection_samples": 2000,
        "fgm_epsilon": 0.0, "pad_to_max_length": False, "group_by_length": True, "bf16": None,
        "eval_strategy": "epoch", "eval_steps": None, "train_indices": None, "progress": True,
        "keep_checkpoints": False, "save_model": True, "model_init_hook": None, "logging_steps": 50,
    }
    s.update(prof.finetune_tasks.get("_default", {}))
    s.update(prof.finetune_tasks.get(spec.name, {}))
    nullable = {"max_train_samples", "max_eval_samples", "dropout", "early_stopping_patience", "bf16",
                "train_indices", "model_init_hook", "eval_steps", "max_selection_samples"}
    for key, value in overrides.items():
        if value is None and key not in nullable:
            continue  # "None" = keep the profile's value
        s[key] = value
    return s
