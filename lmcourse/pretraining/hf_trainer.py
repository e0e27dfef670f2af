"""MLM pretraining with the Hugging Face ``Trainer``: the recipe most tutorials teach, beside :func:`train`.

Two ways in (notebook 05 shows both):

* the library's own recipe: a ``datasets.Dataset`` of blocks, ``DataCollatorForLanguageModeling`` and
  ``TrainingArguments`` built from the same :class:`~lmcourse.pretraining.loop.TrainConfig`. The Trainer
  then draws its own batch order, masks and dropout, and its linear warmup starts at learning rate 0, one
  step behind ours, so its curve is a different draw of the same experiment;
* the same experiment as our loop, step for step: :class:`StepBatches` feeds the Trainer exactly the batches
  ``batches(0), batches(1), ...`` that :func:`~lmcourse.pretraining.loop.train` sees, and ``same_schedule``
  hands it our optimiser and learning-rate schedule. Without dropout the two loss curves then agree to
  rounding (``tests/test_pretraining.py``): the hand-written loop is the Trainer's computation.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import IterableDataset

from lmcourse.context import RunContext
from lmcourse.pretraining.loop import TrainConfig, TrainResult, make_optimizer


class StepBatches(IterableDataset):
    """The rows of ``batches(0), ..., batches(steps - 1)`` in order, for a Trainer with the same batch size.

    A Trainer does not shuffle an iterable dataset, so batch ``s`` of the Trainer is ``batches(s)``.
    """

    def __init__(self, batches: Callable[[int], dict[str, Tensor]], steps: int):
        self.batches, self.steps = batches, steps

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for step in range(self.steps):
            batch = self.batches(step)
            for i in range(len(batch["input_ids"])):
                yield {k: v[i] for k, v in batch.items()}


def trainer_arguments(cfg: TrainConfig, ctx: RunContext, batch_size: int, output_dir: str | Path, **overrides: Any):
    """``TrainingArguments`` with the optimiser and schedule of ``cfg`` (AdamW betas, weight decay, warmup,
    linear or cosine decay, gradient clipping), the context's seed and device, and a loss logged every step."""
    from transformers import TrainingArguments

    bf16 = ctx.bf16 if cfg.bf16 is None else bool(cfg.bf16)
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=batch_size,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, lr_scheduler_type=cfg.schedule,
        weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0], adam_beta2=cfg.betas[1],
        max_grad_norm=cfg.grad_clip, gradient_accumulation_steps=cfg.grad_accum_steps, bf16=bf16,
        use_cpu=ctx.device.type == "cpu", seed=ctx.seed, data_seed=ctx.seed, logging_strategy="steps",
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, log_level="error",
        dataloader_num_workers=0, remove_unused_columns=False)
    kw.update(overrides)
    return TrainingArguments(**kw)


def train_with_trainer(model: nn.Module, train_dataset: Any, cfg: TrainConfig, ctx: RunContext, batch_size: int,
                       data_collator: Callable | None = None, same_schedule: bool = False,
                       evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                       output_dir: str | Path | None = None) -> TrainResult:
    """Pretrain ``model`` with ``Trainer.train()`` and return a :class:`TrainResult` like :func:`train`'s.

    ``history`` comes from the Trainer's ``log_history`` (loss, learning rate, gradient norm per step; the
    Trainer rounds the logged loss to 4 decimals); ``evaluate`` runs once at the end. ``same_schedule``
    replaces the Trainer's AdamW and scheduler by ours (:func:`make_optimizer`, ``cfg.lr_at``); otherwise
    the Trainer builds its own from the arguments. ``data_collator`` defaults to stacking the tensors (for
    :class:`StepBatches`, which yields collated rows).
    """
    from transformers import PrinterCallback, Trainer, default_data_collator

    model.to(ctx.device)
    optimizers: tuple[Any, Any] = (None, None)
    if same_schedule:
        opt = make_optimizer(model, cfg)
        optimizers = (opt, torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_at))
    with tempfile.TemporaryDirectory(prefix="lmcourse-trainer-") as tmp:
        args = trainer_arguments(cfg, ctx, batch_size, output_dir or tmp)
        trainer = Trainer(model=model, args=args, train_dataset=train_dataset,
                          data_collator=data_collator or default_data_collator, optimizers=optimizers)
        trainer.remove_callback(PrinterCallback)  # no log dicts on stdout: the history is returned
        t0 = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - t0
    result = TrainResult(output_dir=str(output_dir) if output_dir else None)
    result.history = [{"step": int(r["step"]), "loss": float(r["loss"]), "lr": float(r["learning_rate"]),
                       **({"grad_norm": float(r["grad_norm"])} if "grad_norm" in r else {})}
                      for r in trainer.state.log_history if "loss" in r and "learning_rate" in r]
    model.eval()
    if evaluate is not None:
        with torch.no_grad(), ctx.autocast(args.bf16):
            result.evals.append({"step": int(out.global_step), **evaluate(model)})
    result.perf = {"train_seconds": seconds, "steps": int(out.global_step), "device": str(ctx.device),
                   "bf16": bool(args.bf16)}
    return result
