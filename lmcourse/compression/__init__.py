"""Compression and deployment (chapter 11): distillation, quantization, pruning, ONNX Runtime.

- :mod:`~lmcourse.compression.distillation`: :func:`distillation_loss` (Hinton et al. 2015),
  :func:`student_from_teacher` (DistilBERT's every-other-layer init, or random), :func:`distill`;
- :mod:`~lmcourse.compression.quantization`: :func:`quantize_per_channel` / :func:`dequantize` from scratch,
  :func:`dynamic_int8` (``torch.ao`` dynamic quantization), :func:`weight_only_int8`;
- :mod:`~lmcourse.compression.pruning`: :func:`magnitude_prune` (``torch.nn.utils.prune``),
  :func:`head_importance` (Michel et al. 2019), :func:`prune_heads`;
- :mod:`~lmcourse.compression.onnx_export`: :func:`export_onnx`, :class:`OnnxClassifier`,
  :func:`quantize_onnx_int8`, :func:`optimized_op_counts`;
- :mod:`~lmcourse.compression.speed`: parameters, size on disk, latency and throughput (at a stated
  thread count: :func:`torch_threads`).
"""

from __future__ import annotations

from lmcourse.compression.distillation import (
    distill,
    distillation_loss,
    student_from_teacher,
    teacher_logits,
    unlabelled_texts,
)
from lmcourse.compression.evaluation import (
    accuracy,
    dev_examples,
    encode_texts,
    onnx_logits,
    pareto_front,
    plot_pareto,
    table_row,
    teacher_speedup,
    torch_logits,
)
from lmcourse.compression.onnx_export import (
    OnnxClassifier,
    export_onnx,
    optimized_op_counts,
    quantize_onnx_int8,
)
from lmcourse.compression.pruning import (
    attention_layers,
    first_order_removal,
    head_counts,
    head_gates,
    head_importance,
    least_important_heads,
    magnitude_prune,
    masked_head_losses,
    prunable_linears,
    prune_heads,
    prune_least_important_heads,
    sparsity_of,
)
from lmcourse.compression.quantization import (
    WeightOnlyInt8Linear,
    dequantize,
    dynamic_int8,
    quantization_error,
    quantize_per_channel,
    weight_only_int8,
)
from lmcourse.compression.speed import (
    alternating_ms,
    count_parameters,
    fixed_inputs,
    median_seconds,
    nonzero_parameters,
    size_on_disk,
    time_model,
    torch_runner,
    torch_threads,
)

__all__ = [
    "OnnxClassifier",
    "WeightOnlyInt8Linear",
    "accuracy",
    "alternating_ms",
    "attention_layers",
    "count_parameters",
    "dequantize",
    "dev_examples",
    "distill",
    "distillation_loss",
    "dynamic_int8",
    "encode_texts",
    "export_onnx",
    "first_order_removal",
    "fixed_inputs",
    "head_counts",
    "head_gates",
    "head_importance",
    "least_important_heads",
    "magnitude_prune",
    "masked_head_losses",
    "median_seconds",
    "nonzero_parameters",
    "onnx_logits",
    "optimized_op_counts",
    "pareto_front",
    "plot_pareto",
    "prunable_linears",
    "prune_heads",
    "prune_least_important_heads",
    "quantization_error",
    "quantize_onnx_int8",
    "quantize_per_channel",
    "size_on_disk",
    "sparsity_of",
    "student_from_teacher",
    "table_row",
    "teacher_logits",
    "teacher_speedup",
    "time_model",
    "torch_logits",
    "torch_runner",
    "torch_threads",
    "unlabelled_texts",
    "weight_only_int8",
]
