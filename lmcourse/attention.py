"""Attention from scratch: scaled dot-product attention, masks, multi-head attention, positional encodings.

Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need", eq. 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

Mask convention (the one of ``torch.nn.functional.scaled_dot_product_attention``): a boolean mask is
``True`` where a query MAY attend to a key; a float mask is added to the scores. Note that
``torch.nn.MultiheadAttention`` uses the opposite boolean convention (``True`` = ignore) for its
``key_padding_mask`` and ``attn_mask``; invert those with ``~`` before passing them here.

Shapes: ``(..., T_q, d_k)`` queries, ``(..., T_k, d_k)`` keys, ``(..., T_k, d_v)`` values; in multi-head
attention the leading dimensions are ``(batch, heads)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.errors import ArgumentError, UnknownNameError
from lmcourse.measurement import PeakTensorMemory, synchronize

if TYPE_CHECKING:
    from lmcourse.context import RunContext

# --------------------------------------------------------------------------------------------- core


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 is_causal: bool = False, scale: float | None = None, dropout_p: float = 0.0,
                                 return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale + mask) v`` step by step; ``scale`` defaults to ``1 / sqrt(d_k)``.

    ``mask``: boolean (``True`` = attend) or float (added), broadcastable to ``(..., T_q, T_k)``.
    ``is_causal``: query ``i`` sees keys ``0..i`` (top-left aligned, as SDPA). With ``return_weights``
    also returns the attention weights ``(..., T_q, T_k)``.
    """
    d_k = q.size(-1)
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k): one similarity per query-key pair
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), device=q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1 over the keys it may see
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v  # (..., T_q, d_v): weighted average of the values
    return (out, weights) if return_weights else out


def padding_mask(attention_mask: Tensor) -> Tensor:
    """``(B, T)`` tokenizer mask (1 = real token, 0 = padding) -> boolean ``(B, 1, 1, T)`` key mask.

    Broadcasts over heads and queries: every query may look at every real key, never at a pad.
    """
    if attention_mask.dim() != 2:
        raise ArgumentError(f"attention_mask must be (batch, seq_len), got shape {tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]


def lengths_to_mask(lengths: Sequence[int] | Tensor, max_len: int | None = None) -> Tensor:
    """Sequence lengths -> ``(B, T)`` boolean mask, ``True`` on the first ``length`` positions."""
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len)[None, :] < lengths[:, None]


def causal_mask(q_len: int, k_len: int | None = None, offset: int = 0, device: Any = None) -> Tensor:
    """Boolean ``(q_len, k_len)`` mask, query ``i`` (at position ``offset + i``) sees keys ``0..offset+i``.

    ``offset=0`` is SDPA's ``is_causal`` (top-left aligned); with a KV cache of ``p`` past tokens use
    ``offset=p`` and ``k_len = p + q_len`` (bottom-right aligned).
    """
    k_len = q_len if k_len is None else k_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=offset)


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of boolean masks (``None`` ignored): attend only where every mask allows it."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def bool_to_additive(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boolean mask -> float mask: 0 where allowed, ``-inf`` where not (what gets added to scores)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


# ----------------------------------------------------------------------------------------- multi-head


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, T, H*Q) -> (B, H, T, Q)``: the model dimension is cut into ``H`` heads of size ``Q``."""
    B, T, D = x.shape
    if D % num_heads:
        raise ArgumentError(f"model dimension {D} is not divisible by num_heads={num_heads}")
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, H, T, Q) -> (B, T, H*Q)``: the inverse of :func:`split_heads` (concatenate the heads)."""
    B, H, T, Q = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Q)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, split into heads, attend in each head, merge, project back.

    ``MultiHead(X_q, X_k, X_v) = Concat(head_1..head_H) W_O`` with ``head_h = Attention(X_q W_Q^h, X_k W_K^h,
    X_v W_V^h)``. All heads are computed at once: one ``d x d`` projection followed by a reshape.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ArgumentError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                key_mask: Tensor | None = None, attn_mask: Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``query (B, T_q, D)``; ``key``/``value (B, T_k, D)`` default to ``query`` (self-attention).

        ``key_mask (B, T_k)``: ``True``/1 = real token (the tokenizer's ``attention_mask``).
        ``attn_mask``: boolean ``True`` = attend (or float, added), broadcastable to ``(B, H, T_q, T_k)``.
        Returns the output and, with ``need_weights``, the per-head weights ``(B, H, T_q, T_k)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        mask = None if key_mask is None else padding_mask(key_mask)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask + (0.0 if mask is None else bool_to_additive(mask, attn_mask.dtype))
            mask = attn_mask
        else:
            mask = combine_masks(mask, attn_mask)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, return_weights=True,
                                                    dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(merge_heads(out)), (weights if need_weights else None)

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (``batch_first``, same sizes) into this module.

        Torch stacks ``W_Q, W_K, W_V`` into one ``in_proj_weight (3D, D)``; we cut it in three.
        """
        if mha.embed_dim != self.embed_dim or mha.num_heads != self.num_heads or mha.in_proj_weight is None:
            raise ArgumentError("nn.MultiheadAttention must have the same embed_dim/num_heads and kdim == vdim == D")
        for proj, w in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_weight.chunk(3, dim=0)):
            proj.weight.copy_(w)
        if mha.in_proj_bias is not None:
            for proj, b in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.chunk(3, dim=0)):
                proj.bias.copy_(b)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None:
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self


# ----------------------------------------------------------------------------------- positional encodings


def sinusoidal_positions(num_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """Vaswani et al. (2017, sec. 3.5): ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(...)``.

    Each pair of dimensions is a clock turning at its own frequency, so ``PE[p + k]`` is a fixed rotation
    of ``PE[p]`` for every ``p`` (a linear function of it).
    """
    if dim % 2:
        raise ArgumentError(f"sinusoidal positions need an even dimension, got {dim}")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    angles = pos * inv_freq  # (num_positions, dim/2)
    pe = torch.zeros(num_positions, dim, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return pe.float()


class LearnedPositionalEmbedding(nn.Module):
    """BERT/GPT-2 style: one trainable vector per position, added to the token embeddings."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_positions, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``x (B, T, D)`` + the embeddings of positions ``offset .. offset + T - 1``."""
        T = x.size(1)
        if offset + T > self.embedding.num_embeddings:
            raise ArgumentError(f"position {offset + T - 1} exceeds max_positions={self.embedding.num_embeddings}")
        return x + self.embedding(torch.arange(offset, offset + T, device=x.device))


def rope_cos_sin(seq_len: int, head_dim: int, base: float = 10000.0, offset: int = 0,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Cosines and sines ``(seq_len, head_dim)`` of RoPE's rotation angles ``m * theta_i``.

    ``theta_i = base^(-2i/d)``; the halves layout (dimension ``i`` pairs with ``i + d/2``) of GPT-NeoX,
    LLaMA and HF ``apply_rotary_pos_emb``. The paper (Su et al. 2021, RoFormer) pairs ``2i`` with ``2i+1``:
    the same rotation applied to a permutation of the dimensions.
    """
    if head_dim % 2:
        raise ArgumentError(f"RoPE needs an even head dimension, got {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(offset, offset + seq_len, dtype=torch.float64)[:, None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dimension (a 90-degree turn of each pair)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair of dimensions of ``x (..., T, d)`` by its position's angle.

    Applied to queries and keys (not values): ``<R_m q, R_n k> = <q, R_{n-m} k>``, so attention scores
    depend on positions only through the offset ``n - m``.
    """
    return x * cos + rotate_half(x) * sin


# ------------------------------------------------------------------------------ why divide by sqrt(d_k)


def dot_product_stats(d_k: int, n_samples: int = 10000, generator: torch.Generator | None = None
                      ) -> dict[str, float]:
    """Variance of ``q . k`` (entries i.i.d. N(0, 1)) with and without the ``1/sqrt(d_k)`` scale.

    Unscaled the variance is ``d_k`` (a sum of ``d_k`` products of variance 1); scaled it is 1.
    """
    q = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)
    k = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)
    dots = (q * k).sum(-1)
    return {"d_k": d_k, "var_unscaled": dots.var().item(), "var_scaled": (dots / math.sqrt(d_k)).var().item()}


def softmax_saturation(d_k: int, n_keys: int = 64, n_queries: int = 256, scaled: bool = True,
                       generator: torch.Generator | None = None) -> dict[str, float]:
    """How peaked softmax(q k^T [/ sqrt d_k]) is, and how much gradient flows back to the scores.

    Returns the mean largest weight, the mean entropy (nats; uniform = ``log n_keys``) and the mean norm
    of ``d loss / d scores`` for a random upstream gradient: when softmax saturates (one weight near 1)
    its Jacobian ``diag(p) - p p^T`` is near zero and the scores stop learning.
    """
    q = torch.randn(n_queries, d_k, generator=generator, dtype=torch.float64)
    k = torch.randn(n_keys, d_k, generator=generator, dtype=torch.float64)
    upstream = torch.randn(n_queries, n_keys, generator=generator, dtype=torch.float64)
    scores = (q @ k.T / (math.sqrt(d_k) if scaled else 1.0)).requires_grad_(True)
    p = torch.softmax(scores, dim=-1)
    (p * upstream).sum().backward()
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return {"d_k": d_k, "scaled": scaled, "max_weight": p.max(-1).values.mean().item(),
            "entropy": entropy.mean().item(), "grad_norm": scores.grad.norm(dim=-1).mean().item()}


# ------------------------------------------------------------------------------------- cost of attention


def peak_activation_bytes(fn: Callable[[], Any]) -> int:
    """Peak memory of the tensors ``fn()``'s ops return (its inputs excluded); runs ``fn`` once.

    A ``TorchDispatchMode`` sees op outputs only: memory a fused kernel allocates for itself and frees
    before it returns (tiles, per-thread buffers) is invisible here; :func:`peak_allocated_bytes` sees it.
    """
    tracker = PeakTensorMemory()
    with tracker:
        result = fn()
    del result
    return tracker.peak


ALLOCATOR_DEVICES = ("cpu", "cuda")


def peak_allocated_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes the device's allocator handed out while ``fn()`` ran, above the level at its start.

    Counts every allocation — op outputs *and* a kernel's internal scratch — which a dispatch mode
    (:func:`peak_activation_bytes`) cannot see. CUDA: the caching allocator's peak statistic
    (``torch.cuda.max_memory_allocated``). CPU: the allocator events that ``torch.profiler`` records with
    ``profile_memory=True``, summed in time order. Other devices raise :class:`ArgumentError`.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        del result
        return int(torch.cuda.max_memory_allocated(device) - start)
    if device.type != "cpu":
        raise ArgumentError(f"peak_allocated_bytes: no allocator statistics for device {device.type!r}; "
                            f"supported: {', '.join(ALLOCATOR_DEVICES)}")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:  # + on allocation, - on free
        current += nbytes
        peak = max(peak, current)
    return int(peak)


ATTENTION_IMPLS: dict[str, Callable[..., Tensor]] = {
    "ours": scaled_dot_product_attention,
    "sdpa": F.scaled_dot_product_attention,
}


def measure_attention_cost(seq_lens: Sequence[int], ctx: RunContext, batch: int = 1, heads: int = 4,
                           head_dim: int = 32, repeats: int = 3, impls: Sequence[str] = ("ours", "sdpa"),
                           causal: bool = False, dtype: torch.dtype = torch.float32, progress: bool = True
                           ) -> list[dict[str, Any]]:
    """Time (best of ``repeats``) and peak memory of attention for each length and impl, on ``ctx.device``
    (the sizes of a chapter come from ``ctx.profile.attention_cost``).

    Inputs are drawn on the CPU (seeded by the length, so every device sees the same numbers) and moved to
    the device; timings wait for the device (:func:`lmcourse.measurement.synchronize`). Two memory numbers:
    ``peak_bytes``, everything the allocator handed out during the call, a fused kernel's scratch included
    (:func:`peak_allocated_bytes`, on CPU and CUDA; ``None`` elsewhere), and ``tensor_peak_bytes``, the op
    outputs a dispatch mode sees (:func:`peak_activation_bytes`, any device).
    """
    from tqdm.auto import tqdm

    device = ctx.device
    for name in impls:
        if name not in ATTENTION_IMPLS:
            raise UnknownNameError(f"unknown attention implementation {name!r}; known: {sorted(ATTENTION_IMPLS)}")
    rows = []
    for T in tqdm(list(seq_lens), desc="attention cost", disable=not progress):
        gen = torch.Generator(device="cpu").manual_seed(T)
        q, k, v = (torch.randn(batch, heads, T, head_dim, generator=gen).to(device, dtype) for _ in range(3))
        for name in impls:
            fn = ATTENTION_IMPLS[name]
            with torch.no_grad():
                fn(q, k, v, is_causal=causal)  # warm-up
                synchronize(device)
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn(q, k, v, is_causal=causal)
                    synchronize(device)
                    best = min(best, time.perf_counter() - t0)
                call = lambda f=fn, q=q, k=k, v=v: f(q, k, v, is_causal=causal)  # noqa: E731
                tensors = peak_activation_bytes(call)
                allocated = peak_allocated_bytes(call, q.device) if q.device.type in ALLOCATOR_DEVICES else None
            rows.append({"impl": name, "seq_len": T, "seconds": best, "peak_bytes": allocated,
                         "tensor_peak_bytes": tensors, "score_matrix_bytes": batch * heads * T * T * q.element_size(),
                         "device": str(q.device)})
    return rows


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of the least-squares line through ``(log x, log y)``: ``y ~ x^slope``."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


# ------------------------------------------------------------------------------------------- plotting


def plot_attention_grid(attentions: Sequence[Tensor], tokens: Sequence[str], layers: Sequence[int],
                        heads: Sequence[int], example: int = 0, n_tokens: int | None = None):
    """Heatmaps of attention weights: rows are layers, columns heads (HF ``output_attentions`` tuples)."""
    import matplotlib.pyplot as plt

    n = n_tokens or len(tokens)
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(2.6 * len(heads), 2.6 * len(layers)),
                             squeeze=False)
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(attentions[layer][example, head, :n, :n].detach().float().cpu().numpy(), cmap="viridis",
                      vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
            ax.set_xticks(range(n))
            ax.set_yticks(range(n))
            ax.set_xticklabels(tokens[:n] if r == len(layers) - 1 else [], rotation=90, fontsize=6)
            ax.set_yticklabels(tokens[:n] if c == 0 else [], fontsize=6)
            ax.grid(False)
    fig.tight_layout()
    return fig
