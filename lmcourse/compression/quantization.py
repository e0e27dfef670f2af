"""Quantization: store weights (and compute) in 8-bit integers instead of 32-bit floats.

Symmetric per-channel quantization gives each output row ``i`` of a weight matrix one scale
``s_i = max_j |W_ij| / (2^(b−1) − 1)`` and stores ``q_ij = round(W_ij / s_i)`` clamped to
``[−(2^(b−1) − 1), 2^(b−1) − 1]``; ``W ≈ q · s``. The rounding error per weight is at most ``s_i / 2``, so each
bit fewer roughly doubles it. :func:`quantize_per_channel` / :func:`dequantize` are that, from scratch;
:func:`dynamic_int8` is PyTorch's post-training dynamic quantization (int8 weights, activations quantized on
the fly per batch, int8 GEMMs) and :func:`weight_only_int8` keeps int8 weights but computes in float.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lmcourse.errors import ArgumentError


def _qmax(bits: int) -> int:
    if not 2 <= int(bits) <= 16:
        raise ArgumentError(f"bits must be between 2 and 16, got {bits}")
    return 2 ** (int(bits) - 1) - 1


def quantize_per_channel(weight: Tensor, bits: int = 8) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-row quantization of a 2-D weight: ``(codes, scales)`` with integer ``codes`` of
    ``weight``'s shape (int8 up to 8 bits, else int16/int32) and one float scale per row. An all-zero row
    gets scale 1 (any scale reproduces it)."""
    if weight.dim() != 2:
        raise ArgumentError(f"quantize_per_channel expects a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    qmax = _qmax(bits)
    w = weight.detach().float()
    scales = w.abs().amax(dim=1) / qmax
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    # w · (1/scale), not w / scale: torch's quantize kernels multiply by the float reciprocal, and the two round
    # differently for about one weight in a million (a code off by one)
    codes = torch.clamp(torch.round(w * (1.0 / scales)[:, None]), -qmax, qmax)
    dtype = torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32
    return codes.to(dtype), scales


def dequantize(codes: Tensor, scales: Tensor) -> Tensor:
    """The float weight ``codes · scale`` (one scale per row) that the integer codes stand for."""
    return codes.float() * scales.float()[:, None]


def quantization_error(weight: Tensor, bits: int) -> float:
    """Relative Frobenius error ``‖W − deq(quant(W))‖ / ‖W‖`` of :func:`quantize_per_channel` at ``bits``."""
    codes, scales = quantize_per_channel(weight, bits)
    w = weight.detach().float()
    return float((w - dequantize(codes, scales)).norm() / w.norm().clamp_min(1e-12))


def dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by PyTorch's dynamically quantized int8 Linear
    (``torch.ao.quantization.quantize_dynamic``: int8 weights per tensor, activations quantized per batch).
    CPU only; the embeddings stay fp32."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


class WeightOnlyInt8Linear(nn.Module):
    """A Linear whose weight is stored as int8 codes plus per-row scales (:func:`quantize_per_channel`) and
    dequantized to float for every matmul: a quarter of the memory, the same float compute."""

    def __init__(self, linear: nn.Linear, bits: int = 8):
        super().__init__()
        codes, scales = quantize_per_channel(linear.weight, bits)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, dequantize(self.codes, self.scales).to(x.dtype), self.bias)


def weight_only_int8(model: nn.Module, bits: int = 8) -> nn.Module:
    """A copy of ``model`` whose Linear layers hold int8 weights (:class:`WeightOnlyInt8Linear`): every
    ``nn.Linear``, the classifier head included, the same layers :func:`dynamic_int8` quantizes, so the two
    int8 rows of notebook 11 differ in how they compute, not in what they cover."""
    model = copy.deepcopy(model).cpu().eval()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, WeightOnlyInt8Linear(child, bits))
    return model
