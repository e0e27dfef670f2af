"""Fine-tuning a pretrained encoder on any GLUE task with the Hugging Face ``Trainer``: one code path.

:func:`finetune` covers single sentences (CoLA, SST-2), sentence pairs (MRPC, QQP, QNLI, RTE, WNLI, MNLI
on ``validation_matched`` and ``validation_mismatched``) and regression (STS-B: one output, MSE loss,
Pearson/Spearman). The recipe: dynamic padding (``DataCollatorWithPadding``), length-grouped batches,
linear warmup, weight decay, bf16 autocast where the hardware supports it, evaluation every epoch with
the lmcourse GLUE metric, early stopping on the task's main metric and the best checkpoint kept as
safetensors. A :class:`ThroughputCallback` measures training tokens/s (non-padding and padded tokens)
and MFU (model FLOPs over the peak measured on this machine; the tokens actually computed, i.e. padded,
go into MFU). ``fgm_epsilon > 0`` adds adversarial training on the word embeddings (:class:`FGM`).
Profile, seed, device and precision come from the run context (``ctx``).

The package: :mod:`~lmcourse.finetuning.recipes` (hyperparameters and per-task budgets),
:mod:`~lmcourse.finetuning.trainer` (metrics, callbacks, the ``Trainer`` subclass),
:mod:`~lmcourse.finetuning.run` (:func:`finetune` and its result), :mod:`~lmcourse.finetuning.adversarial`
(FGM) and :mod:`~lmcourse.finetuning.analysis` (error analysis, baselines, ablations). Use the names
re-exported here.

Metric names recorded by the notebooks (:func:`metric_record`; the benchmark suite collects these):

- ``{task}/{metric}`` for every metric of the task's first eval split (e.g. ``sst2/accuracy``,
  ``mrpc/f1``, ``mrpc/accuracy``, ``mrpc/combined_score``, ``stsb/pearson``, ``stsb/spearmanr``,
  ``cola/matthews_correlation``); every task also gets ``{task}/combined_score`` (the GLUE task score);
- ``{task}_mismatched/{metric}`` for MNLI's second eval split (``validation_mismatched``);
- ``{task}/train_tokens_per_s`` (non-padding tokens), ``{task}/train_padded_tokens_per_s``,
  ``{task}/mfu``, ``{task}/train_flops`` (model FLOPs of training), ``{task}/peak_memory_bytes``,
  ``{task}/train_seconds``, ``{task}/trainable_params``.
"""

from __future__ import annotations

from lmcourse.finetuning.adversarial import FGM
from lmcourse.finetuning.analysis import (
    ABLATIONS,
    SPEED_CONFIGS,
    load_floors,
    majority_baseline,
    most_confident_mistakes,
    tfidf_baseline,
)
from lmcourse.finetuning.recipes import (
    HYPERPARAMETERS,
    task_settings,
)
from lmcourse.finetuning.run import (
    EvalPredictions,
    FinetuneResult,
    by_length,
    count_parameters,
    finetune,
    load_classifier,
    metric_record,
    split_selection,
    tokenize_glue,
)
from lmcourse.finetuning.trainer import (
    GlueTrainer,
    QuietProgressCallback,
    ThroughputCallback,
    glue_compute_metrics,
    task_metrics,
)

__all__ = [
    "ABLATIONS",
    "FGM",
    "HYPERPARAMETERS",
    "SPEED_CONFIGS",
    "EvalPredictions",
    "FinetuneResult",
    "GlueTrainer",
    "QuietProgressCallback",
    "ThroughputCallback",
    "by_length",
    "count_parameters",
    "finetune",
    "glue_compute_metrics",
    "load_classifier",
    "load_floors",
    "majority_baseline",
    "metric_record",
    "most_confident_mistakes",
    "split_selection",
    "task_metrics",
    "task_settings",
    "tfidf_baseline",
    "tokenize_glue",
]
