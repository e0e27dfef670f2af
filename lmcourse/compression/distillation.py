"""Knowledge distillation (Hinton et al. 2015): a small student learns from a big teacher's soft targets.

The teacher's logits at temperature ``T`` carry how similar it finds the wrong classes ("dark knowledge");
the student matches them with a KL divergence scaled by ``T²`` (so the soft gradients keep their size when
``T`` changes) plus the usual cross-entropy on the hard labels. :func:`distillation_loss` is that loss;
:func:`student_from_teacher` builds the DistilBERT-style student (every other teacher layer, Sanh et al.
2019) or a random-init one of the same shape; :func:`distill` trains a student with the Hugging Face
``Trainer`` on a GLUE task, with or without the teacher.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.context import RunContext
from lmcourse.errors import ArgumentError

IGNORE_INDEX = -100  # a hard label of an unlabelled transfer example: only the soft loss applies


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None,
                      temperature: float = 2.0, alpha: float = 0.5) -> Tensor:
    """``alpha · T² · KL(p_T(teacher) ‖ p_T(student)) + (1 − alpha) · CE(student, labels)``, batch mean.

    ``p_T = softmax(logits / T)``. ``labels=None`` gives the soft part alone (``alpha`` ignored); labels equal
    to ``-100`` drop out of the hard part (unlabelled transfer examples). ``alpha=0`` is plain cross-entropy."""
    if temperature <= 0:
        raise ArgumentError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ArgumentError(f"alpha weighs the soft loss and must be in [0, 1], got {alpha}")
    log_p_student = torch.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = torch.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    # KL(t || s) = Σ p_t (log p_t − log p_s), per example, then the batch mean
    soft = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean() * temperature**2
    if labels is None:
        return soft
    known = labels != IGNORE_INDEX
    hard = (F.cross_entropy(student_logits[known], labels[known]) if bool(known.any())
            else student_logits.sum() * 0.0)
    return alpha * soft + (1.0 - alpha) * hard


# ------------------------------------------------------------------------------------------ students
def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ArgumentError(f"{type(model).__name__} is not a BERT-like encoder (no <base>.encoder.layer list)")
    return layers


def student_from_teacher(teacher: nn.Module, layers: list[int] | None = None, *, random_init: bool = False,
                         seed: int = 0) -> nn.Module:
    """A student with fewer encoder layers than ``teacher`` (same hidden size, heads and vocabulary).

    ``layers``: the teacher layers it starts from (default every other one, 0, 2, 4, ..., as DistilBERT does);
    embeddings, pooler and classifier are copied too. ``random_init=True`` gives a student of the same shape
    with fresh random weights (the control: what does the teacher's initialisation buy?)."""
    from transformers import AutoModelForSequenceClassification

    teacher_layers = _encoder_layers(teacher)
    layers = list(range(0, len(teacher_layers), 2)) if layers is None else [int(i) for i in layers]
    if not layers or any(not 0 <= i < len(teacher_layers) for i in layers):
        raise ArgumentError(f"student layers {layers} must be indices of the teacher's {len(teacher_layers)} layers")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    torch.manual_seed(seed)
    student = AutoModelForSequenceClassification.from_config(config)
    if random_init:
        return student
    state = teacher.state_dict()
    prefix = f"{teacher.base_model_prefix}.encoder.layer."
    mapped = {}
    for key, value in state.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in layers:
                mapped[f"{prefix}{layers.index(int(index))}.{rest}"] = value.clone()
        else:
            mapped[key] = value.clone()
    student.load_state_dict(mapped, strict=True)
    return student


# ------------------------------------------------------------------------------------------ training
def teacher_logits(model: nn.Module, dataset, collator, batch_size: int = 64) -> np.ndarray:
    """Logits of ``model`` on a tokenised dataset (computed once: the transfer set's soft targets)."""
    from torch.utils.data import DataLoader

    keep = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    loader = DataLoader(dataset.select_columns(keep), batch_size=batch_size, collate_fn=collator)
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for batch in loader:
            out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    return torch.cat(out).numpy()


def _distillation_trainer_class():
    from lmcourse.finetuning import GlueTrainer

    class DistillationTrainer(GlueTrainer):
        """``Trainer`` whose loss is :func:`distillation_loss` against precomputed teacher logits (the
        ``teacher_logits`` column); ``alpha=0`` trains on the labels only, through the same code."""

        def __init__(self, *args, temperature: float = 2.0, alpha: float = 0.5, **kwargs):
            super().__init__(*args, **kwargs)
            self.temperature, self.alpha = float(temperature), float(alpha)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            soft = inputs.pop("teacher_logits", None)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits.float()  # under bf16 autocast the logits are bf16; the loss is taken in fp32
            if soft is None or self.alpha == 0.0:  # evaluation, or the labels-only baseline
                loss = distillation_loss(logits, logits, labels, self.temperature, alpha=0.0)
            else:
                loss = distillation_loss(logits, soft.float(), labels, self.temperature, self.alpha)
            return (loss, outputs) if return_outputs else loss

    return DistillationTrainer


def distill(task: str, teacher: nn.Module, tokenizer, student: nn.Module, *, ctx: RunContext,
            alpha: float = 0.5, temperature: float = 2.0, extra_texts: list[str] | None = None,
            output_dir: str | os.PathLike | None = None, exclude_idx: Any = None, **overrides: Any
            ) -> dict[str, Any]:
    """Train ``student`` (in place; it ends on the CPU) on GLUE ``task`` (single-sentence tasks take
    ``extra_texts``) and return its dev metrics.

    With ``alpha > 0`` the loss is :func:`distillation_loss` against ``teacher``'s logits; ``alpha=0`` is the
    same student on labels only. ``extra_texts``: unlabelled sentences added to the transfer set (soft targets
    only). Training runs under the run context's autocast policy (bf16 where the device has it, as
    :func:`lmcourse.finetuning.finetune` does); the loss is always computed in float32.
    Sizes come from the profile's fine-tuning budget for ``task`` (``overrides`` as in
    :func:`lmcourse.finetuning.finetune`); with more than one epoch the best is chosen on a held-out part of
    train, never on dev. ``exclude_idx``: GLUE ``idx`` values of training examples the student must never see
    (notebook 11 keeps the teacher's held-out selection examples out, to choose among compressed models on
    them)."""
    import datasets
    import transformers
    from transformers import DataCollatorWithPadding, TrainingArguments

    from lmcourse.data import get_task, load_glue
    from lmcourse.finetuning import glue_compute_metrics, split_selection, task_settings, tokenize_glue
    from lmcourse.finetuning.run import _subset

    spec = get_task(task)
    if spec.is_regression:
        raise ArgumentError(f"distill: {spec.name} is a regression task; distillation here needs class logits")
    if extra_texts and spec.is_pair:
        raise ArgumentError(f"distill: extra_texts are single sentences, but {spec.name} takes sentence pairs")
    s = task_settings(ctx.profile, spec.name, **overrides)
    use_bf16 = ctx.bf16 if s["bf16"] is None else bool(s["bf16"])  # the run context's autocast policy, as finetune
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    pool = load_glue(spec.name, spec.train_split)
    if exclude_idx is not None:
        excluded = {int(i) for i in exclude_idx}
        pool = pool.select([r for r, i in enumerate(pool["idx"]) if int(i) not in excluded])
    raw_train = _subset(pool, s["max_train_samples"], ctx.seed)
    raw_train, raw_select = split_selection(raw_train, s["selection_fraction"], s["max_selection_samples"], ctx.seed)
    raw_dev = _subset(load_glue(spec.name, spec.eval_splits[0]), s["max_eval_samples"], 0)
    train_ds = tokenize_glue(raw_train, tokenizer, spec, s["max_length"])
    if extra_texts:
        column = spec.input_columns[0]
        extra = datasets.Dataset.from_dict({column: list(extra_texts), "label": [IGNORE_INDEX] * len(extra_texts)})
        train_ds = datasets.concatenate_datasets([train_ds.cast_column("label", datasets.Value("int64")),
                                                  tokenize_glue(extra, tokenizer, spec, s["max_length"])])
    select_ds = tokenize_glue(raw_select, tokenizer, spec, s["max_length"])
    dev_ds = tokenize_glue(raw_dev, tokenizer, spec, s["max_length"])
    collator = DataCollatorWithPadding(tokenizer)
    teacher_device = next(teacher.parameters()).device
    teacher.to(ctx.device)
    if alpha > 0:
        train_ds = train_ds.add_column("teacher_logits", list(teacher_logits(teacher, train_ds, collator)))

    select_each_epoch = float(s["num_epochs"]) > 1 and not s["max_steps"]  # one epoch: nothing to choose from
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix=f"lmcourse-kd-{spec.name}-"))
    args = TrainingArguments(
        output_dir=str(out), learning_rate=s["learning_rate"], num_train_epochs=float(s["num_epochs"]),
        max_steps=int(s["max_steps"]) if s["max_steps"] else -1,
        per_device_train_batch_size=int(s["batch_size"]), per_device_eval_batch_size=int(s["eval_batch_size"]),
        weight_decay=float(s["weight_decay"]), warmup_steps=float(s["warmup_ratio"]), lr_scheduler_type="linear",
        eval_strategy="epoch" if select_each_epoch else "no", save_strategy="epoch" if select_each_epoch else "no",
        save_total_limit=1, save_only_model=True, load_best_model_at_end=select_each_epoch,
        metric_for_best_model=spec.main_metric if select_each_epoch else None, greater_is_better=True,
        use_cpu=ctx.device.type == "cpu", seed=ctx.seed, data_seed=ctx.seed, report_to="none",
        disable_tqdm=True, log_level="error", logging_steps=int(s["logging_steps"]), dataloader_num_workers=0,
        remove_unused_columns=False, bf16=use_bf16,
    )
    trainer = _distillation_trainer_class()(
        model=student, args=args, train_dataset=train_ds.remove_columns(["length"]),
        eval_dataset=select_ds.remove_columns(["length"]), processing_class=tokenizer, data_collator=collator,
        compute_metrics=glue_compute_metrics(spec), temperature=temperature, alpha=alpha)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    dev = trainer.evaluate(dev_ds.remove_columns(["length"]), metric_key_prefix="dev")
    # accelerate wrapped the student's forward in bf16 autocast for training; the deployed student (timed,
    # exported to ONNX) must run its own float32 forward again
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    teacher.to(teacher_device)
    student.cpu().eval()  # trained on ctx.device; deployed (measured, exported) on the CPU
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return {k[len("dev_"):]: float(v) for k, v in dev.items()
            if k.startswith("dev_") and k[len("dev_"):] not in ("loss", "runtime", "samples_per_second",
                                                                 "steps_per_second", "epoch")}


def unlabelled_texts(tasks: tuple[str, ...] | list[str], n: int | None, seed: int = 0) -> list[str]:
    """Up to ``n`` training sentences of other GLUE tasks (every text column, labels dropped), shuffled with
    ``seed``: extra transfer data on which only the teacher's soft targets teach."""
    import random

    from lmcourse.data import get_task, load_glue

    texts: list[str] = []
    for task in tasks:
        spec = get_task(task)
        train = load_glue(spec.name, spec.train_split)
        for column in spec.input_columns:
            texts.extend(str(t) for t in train[column] if str(t).strip())
    random.Random(seed).shuffle(texts)
    return texts if n is None else texts[: int(n)]
