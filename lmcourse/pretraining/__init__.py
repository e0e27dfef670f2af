"""Pretraining from scratch: packed blocks, BERT's MLM (+NSP) data, and one resumable training loop.

Two objectives (Devlin et al. 2019, BERT, section 3.1; Radford et al. 2018/2019 for GPT):

* **masked LM** — pick 15 % of the tokens; of those, 80 % become ``[MASK]``, 10 % a random token, 10 %
  stay; predict the originals (``DataCollatorForLanguageModeling`` does the masking);
* **next sentence prediction** — ``[CLS] A [SEP] B [SEP]`` where B is the true continuation half of the
  time and a segment of another document otherwise (:func:`build_nsp_pairs`, BERT's recipe simplified);
* **causal LM** — predict token ``t+1`` from tokens ``<= t`` (notebook 06);
* **span corruption** — T5's objective: drop random spans (15 %, mean length 3), put one sentinel in
  each gap, predict the spans (:mod:`~lmcourse.pretraining.span_corruption`, notebook 10).

The package in three parts: :mod:`~lmcourse.pretraining.data` (packing, masking, NSP pairs, step-indexed
batches), :mod:`~lmcourse.pretraining.loop` (objectives, the training loop and its checkpoints),
:mod:`~lmcourse.pretraining.hf_trainer` (the same training with the Hugging Face ``Trainer``) and
:mod:`~lmcourse.pretraining.evaluation` (held-out losses, the unigram baseline, diagnostics). Use the
names re-exported here; they do not move when code moves between those files.

:func:`train` is a plain PyTorch loop (AdamW, warmup + linear/cosine decay, gradient clipping, optional
bf16 autocast) on the run context's device, whose every step is a pure function of ``(seed, step)``: the
batch, the masking and the dropout are all seeded from the step number. So a run resumed from a
checkpoint (model weights as safetensors + optimizer state) follows exactly the loss curve of an
uninterrupted run.
"""

from __future__ import annotations

from lmcourse.pretraining.data import (
    MAX_PASSES,
    BlockBatches,
    NspExample,
    StreamBatches,
    bert_blocks,
    build_nsp_pairs,
    collate_seeded,
    corpus_passes,
    mlm_collator,
    nsp_features,
    pack_blocks,
    sentence_segments,
    split_documents,
    steps_within_passes,
    token_ids,
    tokenize_segments,
)
from lmcourse.pretraining.evaluation import (
    CLM_EVAL_SEED_OFFSET,
    MLM_EVAL_SEED_OFFSET,
    UnigramMLM,
    clm_evaluator,
    embedding_cone,
    masking_stats,
    mean_pairwise_cosine,
    mlm_evaluator,
    perf_row,
    token_counts,
    unigram_cross_entropy,
)
from lmcourse.pretraining.hf_trainer import StepBatches, train_with_trainer, trainer_arguments
from lmcourse.pretraining.loop import (
    TrainConfig,
    TrainResult,
    bert_config,
    bert_for_pretraining,
    clm_step_outputs,
    decay_groups,
    gathered_mlm_step_outputs,
    latest_checkpoint,
    load_weights,
    make_optimizer,
    mlm_step_outputs,
    save_checkpoint,
    save_weights,
    train,
)
from lmcourse.pretraining.span_corruption import (
    add_sentinels,
    corrupted_lengths,
    mask_segments,
    noise_span_mask,
    reassemble_spans,
    segment_length_pmf,
    segmentation_chisquare,
    sentinel_ids,
    span_corruption,
    span_corruption_batch,
    span_counts,
)

__all__ = [
    "CLM_EVAL_SEED_OFFSET",
    "MAX_PASSES",
    "MLM_EVAL_SEED_OFFSET",
    "BlockBatches",
    "NspExample",
    "StepBatches",
    "StreamBatches",
    "TrainConfig",
    "TrainResult",
    "UnigramMLM",
    "add_sentinels",
    "bert_blocks",
    "bert_config",
    "bert_for_pretraining",
    "build_nsp_pairs",
    "clm_evaluator",
    "clm_step_outputs",
    "collate_seeded",
    "corpus_passes",
    "corrupted_lengths",
    "decay_groups",
    "embedding_cone",
    "gathered_mlm_step_outputs",
    "latest_checkpoint",
    "load_weights",
    "make_optimizer",
    "mask_segments",
    "masking_stats",
    "mean_pairwise_cosine",
    "mlm_collator",
    "mlm_evaluator",
    "mlm_step_outputs",
    "noise_span_mask",
    "nsp_features",
    "pack_blocks",
    "perf_row",
    "reassemble_spans",
    "save_checkpoint",
    "save_weights",
    "segment_length_pmf",
    "segmentation_chisquare",
    "sentence_segments",
    "sentinel_ids",
    "span_corruption",
    "span_corruption_batch",
    "span_counts",
    "split_documents",
    "steps_within_passes",
    "token_counts",
    "token_ids",
    "tokenize_segments",
    "train",
    "train_with_trainer",
    "trainer_arguments",
    "unigram_cross_entropy",
]
