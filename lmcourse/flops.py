"""FLOPs of a transformer per token, the numerator of model FLOPs utilisation (MFU).

The standard estimate (Kaplan et al. 2020, Scaling Laws, Table 1; PaLM, Chowdhery et al. 2022,
Appendix B) for one training token of a dense transformer with ``N`` parameters, ``L`` layers,
``H`` heads of size ``Q`` and context length ``T``:

    6 N + 12 L H Q T

``6N``: every weight takes part in one multiply-add (2 FLOPs) in the forward pass and two in the
backward pass. ``12 L H Q T``: the attention scores ``QK^T`` and the weighted sum ``AV``, which have no
weights but cost ``2 * 2 * T * (H Q)`` FLOPs per token and layer forward, times 3 for forward+backward.

Which parameters belong in ``N``: position (and token-type) embeddings are table look-ups and cost no
FLOPs, so they are left out. The token embedding is a look-up too, but when the output layer (the LM
head, or BERT's MLM decoder) is tied to it, that matrix *is* multiplied on every token, so it counts
once. An untied output projection counts as its own parameters.
"""

from __future__ import annotations


def training_flops_per_token(num_params: int, num_layers: int, num_heads: int, head_dim: int,
                             seq_len: int) -> float:
    """``6 N + 12 L H Q T``: FLOPs of forward + backward for one token (N = matmul parameters)."""
    if min(num_params, num_layers, num_heads, head_dim, seq_len) < 0:
        raise ValueError("all sizes must be non-negative")
    return 6.0 * num_params + 12.0 * num_layers * num_heads * head_dim * seq_len


def forward_flops_per_token(num_params: int, num_layers: int, num_heads: int, head_dim: int,
                            seq_len: int) -> float:
    """``2 N + 4 L H Q T``: FLOPs of the forward pass alone (inference, evaluation)."""
    return training_flops_per_token(num_params, num_layers, num_heads, head_dim, seq_len) / 3.0


def matmul_params(model, exclude_substrings: tuple[str, ...] = ("position_embeddings", "token_type_embeddings",
                                                                 "wpe", "LayerNorm", "layernorm", "ln_")
                  ) -> int:
    """Parameters of a torch model that take part in matrix products, counted once if tied.

    Position/token-type tables and normalisation parameters are excluded (``O(d)`` FLOPs at most);
    the word embedding stays in because a tied LM/MLM head multiplies by it on every token. Shared
    tensors (tied weights) are counted once.
    """
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or any(s in name for s in exclude_substrings):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_second: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak the hardware can do (a fraction)."""
    if peak_flops_per_second <= 0:
        raise ValueError("peak FLOP/s must be positive (measure it with lmcourse.perf.measure_peak_flops)")
    return tokens_per_second * flops_per_token / peak_flops_per_second
