"""Measuring a run: FLOPs per token by formula, the device's peak FLOP/s, throughput, peak memory and MFU.

One module for every number about speed and cost, used by both training paths (the hand-written loop of
:mod:`lmcourse.pretraining` and the ``Trainer`` path of :mod:`lmcourse.finetuning`).

**FLOPs per token.** The standard estimate (Kaplan et al. 2020, Scaling Laws, Table 1; PaLM, Chowdhery et
al. 2022, Appendix B) for one training token of a dense transformer with ``N`` parameters, ``L`` layers,
``H`` heads of size ``Q`` and context length ``T``::

    6 N + 12 L H Q T

``6N``: every weight takes part in one multiply-add (2 FLOPs) in the forward pass and two in the backward
pass. ``12 L H Q T``: the attention scores ``QK^T`` and the weighted sum ``AV``, which have no weights but
cost ``2 * 2 * T * (H Q)`` FLOPs per token and layer forward, times 3 for forward+backward.
Which parameters belong in ``N``: position (and token-type) embeddings and the input token embedding are
table look-ups and cost no FLOPs. When the output layer (an LM head, BERT's MLM decoder) is tied to the
token embedding, that matrix *is* multiplied on every token, so it counts once; an untied output
projection counts as its own parameters.

**The peak.** Vendor peak numbers do not exist for "a laptop CPU", so the course measures the peak with a
matmul microbenchmark (large square GEMMs, best of several) on the device and in the dtype the run
actually uses, and records it with every result: an MFU is always quoted against a number measured there.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from lmcourse.runtime import bf16_supported  # noqa: F401  (re-exported: the device measurements are made on)

_LOOKUP_TABLES = ("position_embeddings", "token_type_embeddings", "wpe", "relative_attention_bias")
_NORMS = ("LayerNorm", "layernorm", "ln_", "layer_norm")


# ------------------------------------------------------------------------------------------- FLOPs
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


def matmul_params(model: nn.Module, exclude_substrings: tuple[str, ...] = _LOOKUP_TABLES + _NORMS,
                  exclude: tuple[Tensor, ...] = ()) -> int:
    """Parameters of a torch model that take part in matrix products, counted once if tied.

    Position/token-type tables and normalisation parameters are excluded by name (``O(d)`` FLOPs at most),
    and so is every tensor in ``exclude`` (e.g. an input embedding that is only looked up).
    """
    skip = {id(t) for t in exclude}
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or id(p) in skip or any(s in name for s in exclude_substrings):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _attention_shape(config: Any) -> tuple[int, int, int]:
    """(layers, heads, head size) of a BERT-like (HF) or GPT-like (HF GPT-2 or lmcourse GPT) config."""
    if hasattr(config, "num_hidden_layers"):
        L, H, d = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
    else:
        L, H, d = config.n_layer, config.n_head, config.n_embd
    return L, H, d // H


def _lookup_only_embedding(model: nn.Module) -> Tensor | None:
    """The input token embedding when nothing multiplies by it (no tied output layer), else ``None``."""
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    if emb is None:
        return None
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    tied = out is not None and getattr(out, "weight", None) is emb.weight
    return None if tied else emb.weight


def mlm_head(model: nn.Module) -> nn.Module | None:
    """The masked-LM prediction head of a BERT-like HF model (``cls.predictions``: transform + tied decoder),
    or ``None`` for models without one (causal LMs, classifiers)."""
    net = getattr(model, "module", model)  # DDP
    return getattr(getattr(net, "cls", None), "predictions", None)


def model_flops_per_token(model: nn.Module, seq_len: float, head_fraction: float = 1.0) -> float:
    """Training FLOPs per token (``6N + 12 L H Q T``) of a transformer: the one formula of both training paths.

    ``N`` = :func:`matmul_params` without look-up tables; the input token embedding counts only when a tied
    output layer multiplies by it (MLM, causal LM), not in a classifier. ``seq_len`` is the (mean padded)
    context length ``T``. ``head_fraction`` is the share of tokens whose MLM-head output the loss uses (the
    masked 15 %): the head's ``6 N_head`` counts only for those, so MFU is measured on the FLOPs the loss
    needs, whether the head runs at every position or only at the masked ones. Models without an MLM head
    ignore it.
    """
    if not 0.0 <= head_fraction <= 1.0:
        raise ValueError(f"head_fraction must lie in [0, 1], got {head_fraction}")
    net = getattr(model, "module", model)  # DDP
    lookup = _lookup_only_embedding(net)
    n = matmul_params(net, exclude=(lookup,) if lookup is not None else ())
    head = mlm_head(net)
    if head is not None and head_fraction < 1.0:
        n_head = matmul_params(head)
        n = n - n_head + head_fraction * n_head
    if hasattr(net.config, "num_decoder_layers"):
        raise ValueError("an encoder-decoder has no single FLOPs per token (the decoder's cross-attention runs "
                         "over the encoder tokens); use seq2seq_training_flops(config, input_len, target_len)")
    L, H, Q = _attention_shape(net.config)
    return training_flops_per_token(n, L, H, Q, max(1, round(seq_len)))


def seq2seq_training_flops(config: Any, input_len: int, target_len: int) -> float:
    """Training FLOPs (forward + backward) of one encoder–decoder example: ``S`` input, ``T`` target tokens.

    The ``6 N + 12 L H Q T`` rule applied to each part with the length it runs over (``i = H Q``, ``FF`` =
    the feed-forward's weights, ``2`` or ``3`` ``d d_ff``), forward FLOPs times 3::

        encoder, per input token      2 L_e (4 d i + FF)  + 4 L_e S i           (weights + attention)
        decoder, per target token     2 L_d (6 d i + FF) + 2 V d                (self + cross Q/O, FF, head)
                                      + 4 L_d T i + 4 L_d S i                   (self- and cross-attention)
        cross K/V, per input token    2 L_d (2 d i)                             (projected once per layer)

    The cross-attention keys/values run over the *encoder* tokens, which is why an encoder–decoder is not
    one ``6 N`` per token. Works with :class:`lmcourse.models.t5.T5Config` and HF's ``T5Config`` (same
    field names). The embedding is a look-up; the head counts once, tied or not.
    """
    if min(input_len, target_len) < 1:
        raise ValueError(f"input_len and target_len must be >= 1, got {input_len}, {target_len}")
    d, i, V = config.d_model, config.num_heads * config.d_kv, config.vocab_size
    ff = (3 if str(config.feed_forward_proj).startswith("gated") else 2) * d * config.d_ff
    Le = config.num_layers
    Ld = config.num_decoder_layers if config.num_decoder_layers is not None else Le
    S, T = input_len, target_len
    encoder = S * (2 * Le * (4 * d * i + ff) + 4 * Le * S * i)
    decoder = T * (2 * Ld * (6 * d * i + ff) + 2 * V * d + 4 * Ld * T * i + 4 * Ld * S * i)
    cross_kv = S * 2 * Ld * 2 * d * i
    return 3.0 * (encoder + decoder + cross_kv)


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_second: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak the hardware can do (a fraction)."""
    if peak_flops_per_second <= 0:
        raise ValueError("peak FLOP/s must be positive (measure it with lmcourse.measurement.measure_peak_flops)")
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
    return {
        "attention projections (QKV, O)": k * 2 * 4 * d_model**2 * num_layers,
        "MLP": k * 2 * 2 * d_model * d_ff * num_layers,
        "attention scores + weighted sum": k * 2 * 2 * seq_len * d_model * num_layers,
        "LM head (tied embedding)": k * 2 * d_model * vocab_size if lm_head else 0.0,
    }


def attention_flops_share(d_model: int, num_layers: int, num_heads: int, d_ff: int, vocab_size: int,
                          seq_len: int, lm_head: bool = True) -> float:
    """Fraction of the FLOPs spent in ``QK^T`` and ``AV`` (the part that grows with context length)."""
    parts = flops_breakdown(d_model, num_layers, num_heads, d_ff, vocab_size, seq_len, lm_head)
    return parts["attention scores + weighted sum"] / sum(parts.values())


# ---------------------------------------------------------------------------------- device and peak
def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued kernels (GPU timings are otherwise meaningless)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no mps in CI
        torch.mps.synchronize()


_PEAK_CACHE: dict[tuple[str, str, int], float] = {}


def measure_peak_flops(dtype: torch.dtype, device: str | torch.device, size: int | None = None, repeats: int = 5,
                       use_cache: bool = True) -> float:
    """Peak matmul FLOP/s of ``device`` in ``dtype``: best of ``repeats`` timings of an ``n x n @ n x n`` GEMM.

    ``2 n^3`` FLOPs a product. ``size`` defaults to 1024 on CPU (a fraction of a second) and 8192 on
    GPU. The result is cached per (device, dtype, threads) for the process.
    """
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 1024)
    key = (str(device), str(dtype), torch.get_num_threads())
    if use_cache and size is None and key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    for _ in range(2):  # warm-up: thread pools, kernels, caches
        a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    flops = 2.0 * n**3 / best
    if use_cache and size is None:
        _PEAK_CACHE[key] = flops
    return flops


# -------------------------------------------------------------------------------------- throughput
@dataclass
class Throughput:
    """Tokens and wall time of training steps, and the model FLOPs and MFU that follow from them.

    :meth:`count` adds one batch: non-padding tokens (``attention_mask.sum()``, the useful work) and padded
    tokens (``input_ids.numel()``, what the model computes, so MFU uses those). Attention FLOPs grow with the
    padded length ``T`` of each batch, so ``sum(tokens * T)`` is kept too: :attr:`mean_padded_length` is the
    token-weighted mean ``T``. Time runs between :meth:`start` and :meth:`stop` (on the device's clock).
    """

    model: nn.Module | None = None
    peak_flops: float | None = None
    device: torch.device | None = None
    tokens: int = 0
    padded_tokens: int = 0
    examples: int = 0
    batches: int = 0
    steps: int = 0
    seconds: float = 0.0
    tokens_times_length: int = 0
    head_tokens: int | None = None
    seq2seq_flops: float = 0.0
    _t0: float | None = None

    def count(self, input_ids: Tensor, attention_mask: Tensor | None = None, useful: bool = True,
              head_tokens: int | None = None, target_ids: Tensor | None = None) -> None:
        """Count one batch of ``input_ids`` (and its mask, when padded). ``useful=False`` counts computed work
        only (padded tokens, e.g. a second adversarial pass), not useful tokens, examples or batches.
        ``head_tokens``: the positions whose MLM-head output the loss uses (the masked tokens of an MLM
        batch); MFU then counts the head at those positions only (:func:`model_flops_per_token`).
        ``target_ids``: the decoder side of an encoder–decoder batch; its FLOPs then come from
        :func:`seq2seq_training_flops` (per example), and "per token" means per input token."""
        n_pad = int(input_ids.numel())
        if target_ids is not None and self.model is not None:
            config = getattr(self.model, "module", self.model).config
            self.seq2seq_flops += int(input_ids.shape[0]) * seq2seq_training_flops(
                config, int(input_ids.shape[-1]), int(target_ids.shape[-1]))
        if head_tokens is not None:
            if not 0 <= head_tokens <= n_pad:
                raise ValueError(f"head_tokens={head_tokens} must lie between 0 and the batch's {n_pad} tokens")
            self.head_tokens = (self.head_tokens or 0) + int(head_tokens)
        self.padded_tokens += n_pad
        self.tokens_times_length += n_pad * int(input_ids.shape[-1])
        if not useful:
            return
        self.tokens += int(attention_mask.sum()) if attention_mask is not None else n_pad
        self.examples += int(input_ids.shape[0]) if input_ids.dim() > 1 else 1
        self.batches += 1

    def start(self) -> None:
        if self.device is not None:
            synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._t0 is None:
            raise RuntimeError("Throughput.stop() called without start()")
        if self.device is not None:
            synchronize(self.device)
        self.seconds += time.perf_counter() - self._t0
        self.steps += 1
        self._t0 = None

    @property
    def elapsed(self) -> float:
        """Seconds counted so far, including the stretch now running (host clock, no device sync)."""
        return self.seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    @property
    def running(self) -> bool:
        """Whether the clock is running (between :meth:`start` and :meth:`stop`)."""
        return self._t0 is not None

    @property
    def mean_padded_length(self) -> float:
        return self.tokens_times_length / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def padded_tokens_per_second(self) -> float:
        return self.padded_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def flops_per_token(self) -> float | None:
        if self.model is None or not self.padded_tokens:
            return None
        if self.seq2seq_flops:
            return self.seq2seq_flops / self.padded_tokens
        fraction = 1.0 if self.head_tokens is None else self.head_tokens / self.padded_tokens
        return model_flops_per_token(self.model, self.mean_padded_length, head_fraction=fraction)

    @property
    def train_flops(self) -> float | None:
        """Model FLOPs of all counted (padded) tokens: the compute axis of a scaling plot."""
        fpt = self.flops_per_token
        return fpt * self.padded_tokens if fpt else None

    @property
    def mfu(self) -> float | None:
        fpt = self.flops_per_token
        if not fpt or not self.peak_flops or self.seconds <= 0:
            return None
        return mfu(self.padded_tokens_per_second, fpt, self.peak_flops)

    def summary(self) -> dict[str, Any]:
        return {"train_tokens": self.tokens, "train_padded_tokens": self.padded_tokens,
                "train_examples": self.examples, "train_seconds": self.seconds,
                "train_tokens_per_s": self.tokens_per_second,
                "train_padded_tokens_per_s": self.padded_tokens_per_second,
                "padding_fraction": 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0,
                "mean_padded_length": self.mean_padded_length, "flops_per_token": self.flops_per_token,
                "train_flops": self.train_flops, "peak_flops": self.peak_flops, "mfu": self.mfu,
                "device": str(self.device) if self.device is not None else None}


# ---------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of a stretch of work on ``device``: CUDA's allocator counter, or on CPU the peak resident
    set size above the RSS at :meth:`start`, sampled every 20 ms by a thread (max RSS cannot be reset)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        import psutil

        proc = psutil.Process()
        base = proc.memory_info().rss
        self._stop.clear()

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, proc.memory_info().rss - base)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
            return self.peak
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.peak

    def __enter__(self) -> PeakMemory:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_peak_memory_bytes(device: str | torch.device) -> int:
    """Peak memory of this whole process: CUDA max allocated on GPU, max resident set size on CPU."""
    import resource
    import sys

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live tensors allocated by torch ops inside the ``with`` block (any device).

    Tracks every op output's storage until its last tensor dies, so it sees the ``T x T`` score matrix
    of a naive attention; a fused kernel's internal scratch (tiles) is invisible, which is fine: its size
    does not grow with ``T^2``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = 0
        self._live: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensor count]

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self._live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, tuple | list) else (out,)):
            if isinstance(t, Tensor) and t.numel() > 0:
                ptr = t.untyped_storage().data_ptr()
                if ptr in self._live:
                    self._live[ptr][1] += 1
                else:
                    nbytes = t.untyped_storage().nbytes()
                    self._live[ptr] = [nbytes, 1]
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._release, ptr)
        return out
