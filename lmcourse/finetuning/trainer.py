"""The ``Trainer`` side of fine-tuning: GLUE metrics for ``compute_metrics``, a throughput callback
(tokens/s, model FLOPs and MFU through :mod:`lmcourse.measurement`), a quiet progress bar, and the
``GlueTrainer`` that counts every batch and optionally adds an FGM step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from lmcourse.data import GlueTask, get_task
from lmcourse.finetuning.adversarial import FGM
from lmcourse.measurement import PeakMemory, Throughput


def task_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The lmcourse GLUE metric of ``predictions`` against ``labels``, plus the task score
    (``combined_score``: the mean of a two-metric task's metrics, as GLUE averages them)."""
    from lmcourse.metrics import compute_glue_metric, task_score

    spec = get_task(task)
    metrics = {k: float(v) for k, v in compute_glue_metric(spec.metric_config, predictions, labels).items()}
    metrics.setdefault("combined_score", task_score(spec.name, metrics))
    return metrics


def glue_compute_metrics(task: str | GlueTask):
    """A ``compute_metrics`` for the Trainer: logits → predictions → :func:`task_metrics`."""
    spec = task if isinstance(task, GlueTask) else get_task(task)

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = logits.reshape(-1) if spec.is_regression else np.argmax(logits, axis=-1)
        return task_metrics(spec.name, preds, labels)

    return compute


class ThroughputCallback(TrainerCallback):
    """Training tokens/s, FLOPs and MFU of a ``Trainer`` run, measured by :class:`lmcourse.measurement.Throughput`.

    The trainer hands every training batch to :meth:`count`; the clock runs from ``on_epoch_begin`` to
    ``on_epoch_end`` (data loading and steps; evaluation and checkpoint saving excluded). Non-padding
    tokens measure useful work, padded tokens what the model computes (MFU uses those; see Throughput).
    Peak memory during training comes from :class:`lmcourse.measurement.PeakMemory` on the same device.
    """

    def __init__(self, model=None, peak_flops: float | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.meter = Throughput(model=model, peak_flops=peak_flops, device=self.device)
        self._memory = PeakMemory(self.device)

    def count(self, inputs: dict[str, Any], useful: bool = True) -> None:
        """Count one training batch (``input_ids`` and usually ``attention_mask``). ``useful=False`` counts
        computed work only (padded tokens, e.g. FGM's second pass), not useful tokens or examples."""
        self.meter.count(inputs["input_ids"], inputs.get("attention_mask"), useful=useful)

    def on_train_begin(self, args, state, control, **kwargs):
        self._memory.start()

    def on_train_end(self, args, state, control, **kwargs):
        self._memory.stop()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.meter.start()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.meter.running:
            self.meter.stop()

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Add the training tokens/s so far to a training log entry (for TensorBoard; runs before its callback).
        The Trainer's ``log_history`` has already stored the entry, so it stays as the Trainer wrote it."""
        if logs is not None and "loss" in logs and self.meter.elapsed > 0:
            logs["train_tokens_per_s"] = self.meter.tokens / self.meter.elapsed

    def summary(self) -> dict[str, Any]:
        return {**self.meter.summary(), "peak_memory_bytes": self._memory.peak}


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
                self.throughput.count(inputs, useful=False)
        return loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluate in dataset order. With ``group_by_length`` the Trainer would length-sort the eval set
        too, and predictions would no longer line up with the examples they belong to."""
        if eval_dataset is None or self.args.world_size > 1:
            return super()._get_eval_sampler(eval_dataset)
        return torch.utils.data.SequentialSampler(eval_dataset)
