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


def flops_breakdown(d_model: int, num_layers: int, num_heads: int, d_ff: int, vocab_size: int, seq_len: int,
                    lm_head: bool = True, training: bool = True) -> dict[str, float]:
    """FLOPs per token of each part of a transformer, from its sizes (weight matrices only, no biases).

    Forward, per token and layer: Q/K/V/O projections ``2 * 4 d^2``; MLP ``2 * 2 d d_ff``; scores
    ``QK^T`` and the weighted sum ``AV`` ``2 * 2 T d`` (``d = H Q``); once per token the LM head (or an
    MLM decoder tied to the embedding) ``2 d V``. ``training`` multiplies by 3 (backward = 2 x forward).
    The parts add up to :func:`training_flops_per_token` with ``N = L (4 d^2 + 2 d d_ff) + d V``.
    Note: with a causal mask half of the score matrix is masked, so an implementation that skips it
    (flash attention) does half the attention FLOPs; the formula, like PaLM's MFU, counts them all.
    """
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
    k = 3.0 if training else 1.0
    parts = {
        "attention projections (QKV, O)": k * 2 * 4 * d_model**2 * num_layers,
        "MLP": k * 2 * 2 * d_model * d_ff * num_layers,
        "attention scores + weighted sum": k * 2 * 2 * seq_len * d_model * num_layers,
        "LM head (tied embedding)": k * 2 * d_model * vocab_size if lm_head else 0.0,
    }
    return parts


def attention_flops_share(d_model: int, num_layers: int, num_heads: int, d_ff: int, vocab_size: int,
                          seq_len: int, lm_head: bool = True) -> float:
    """Fraction of the FLOPs spent in ``QK^T`` and ``AV`` (the part that grows with context length)."""
    parts = flops_breakdown(d_model, num_layers, num_heads, d_ff, vocab_size, seq_len, lm_head)
    return parts["attention scores + weighted sum"] / sum(parts.values())
