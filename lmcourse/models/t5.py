"""T5, the encoder–decoder, from scratch in one readable file: config, blocks, relative position bias,
cross-attention, a decoder KV cache, greedy / sampled / beam-search generation.

Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer":

    h = shared[input_ids]                                   # encoder (bidirectional)
    for each block:  h = h + SelfAttention(rms(h), bias_enc)
                     h = h + FF(rms(h))
    enc = rms(h)
    y = shared[decoder_input_ids]                           # decoder (causal), reads enc
    for each block:  y = y + SelfAttention(rms(y), bias_dec, causal)
                     y = y + CrossAttention(rms(y), enc)
                     y = y + FF(rms(y))
    logits = rms(y) * d_model^-0.5 @ shared^T               # tied head (T5 1.0); untied: lm_head, no rescale

* **RMS LayerNorm** ``x / sqrt(mean(x^2) + eps) * w``: no mean subtraction, no bias; no Linear has a
  bias either.
* **Feed-forward**, as ``feed_forward_proj`` says: ``"relu"`` is ``wo(relu(wi x))`` (T5 1.0);
  ``"gated-gelu"`` is ``wo(gelu_tanh(wi_0 x) * wi_1 x)`` (T5 1.1, Shazeer 2020, "GLU Variants").
* **No position embeddings.** Instead a learned scalar per head is added to each attention score,
  looked up by the *bucket* of the distance ``key_pos - query_pos``: exact buckets for short distances,
  logarithmically wider ones up to ``relative_attention_max_distance``, one bucket beyond. The encoder
  uses signed (bidirectional) buckets, the decoder only looks back. Only the first block of each stack
  owns the table (``relative_attention_bias``); the bias it computes is reused by every later block.
  Cross-attention has no position bias.
* **No 1/sqrt(d) scaling** of the scores: T5's initialisation absorbs it.

Parameter names are those of Hugging Face's ``T5ForConditionalGeneration`` (``shared``,
``encoder.block.0.layer.0.SelfAttention.q``, ``decoder.block.1.layer.1.EncDecAttention.k``,
``...layer.2.DenseReluDense.wi_0``, ``encoder.final_layer_norm``, ``lm_head``), so :meth:`T5.from_hf` is
``load_state_dict(hf_model.state_dict())`` with no renaming. ``encoder.embed_tokens`` and
``decoder.embed_tokens`` are the ``shared`` module itself, as in HF.

The KV cache (:class:`T5Cache`): the decoder's self-attention keys/values of past positions never change,
so each step only computes those of the new token; the cross-attention keys/values depend only on the
encoder output, so they are computed once, before the first step, for every layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.errors import ArgumentError
from lmcourse.models.gpt import KVCache

FEED_FORWARD_PROJ = ("relu", "gated-gelu")


@dataclass
class T5Config:
    """Sizes of a T5 (defaults: ``t5-small``, 60M parameters)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64  # size of one head; num_heads * d_kv need not equal d_model
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None  # None: as many as the encoder
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" (T5 1.0) or "gated-gelu" (T5 1.1)
    tie_word_embeddings: bool = True  # LM head = shared embedding (T5 1.0); False: own lm_head (T5 1.1)
    scale_decoder_outputs: bool | None = None  # multiply by d_model^-0.5 before the head; None: = tied
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # T5 starts decoding with the pad token

    def __post_init__(self) -> None:
        if self.feed_forward_proj not in FEED_FORWARD_PROJ:
            raise ArgumentError(f"feed_forward_proj={self.feed_forward_proj!r} is not supported; "
                                f"use one of {FEED_FORWARD_PROJ}")
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.scale_decoder_outputs is None:
            self.scale_decoder_outputs = self.tie_word_embeddings
        sizes = (self.vocab_size, self.d_model, self.d_kv, self.d_ff, self.num_layers, self.num_decoder_layers,
                 self.num_heads, self.relative_attention_num_buckets, self.relative_attention_max_distance)
        if min(sizes) <= 0:
            raise ArgumentError(f"all T5Config sizes must be positive, got {self}")

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @classmethod
    def from_hf(cls, hf_config: Any, tie_word_embeddings: bool | None = None) -> T5Config:
        """From a ``transformers.T5Config``. ``tie_word_embeddings``: whether the HF model's head *is* its
        shared embedding (transformers 5 always ties them in the config and keeps the 1.0/1.1 difference in
        ``scale_decoder_outputs``, so :meth:`T5.from_hf` looks at the tensors)."""
        proj = getattr(hf_config, "feed_forward_proj", "relu")
        if proj not in FEED_FORWARD_PROJ:
            raise ArgumentError(f"T5 supports feed_forward_proj in {FEED_FORWARD_PROJ}, HF config has {proj!r}")
        tied = hf_config.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings
        scale = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
        start = hf_config.decoder_start_token_id
        return cls(vocab_size=hf_config.vocab_size, d_model=hf_config.d_model, d_kv=hf_config.d_kv,
                   d_ff=hf_config.d_ff, num_layers=hf_config.num_layers,
                   num_decoder_layers=hf_config.num_decoder_layers, num_heads=hf_config.num_heads,
                   relative_attention_num_buckets=hf_config.relative_attention_num_buckets,
                   relative_attention_max_distance=hf_config.relative_attention_max_distance,
                   dropout_rate=float(hf_config.dropout_rate), layer_norm_epsilon=hf_config.layer_norm_epsilon,
                   feed_forward_proj=proj, tie_word_embeddings=bool(tied), scale_decoder_outputs=bool(scale),
                   pad_token_id=hf_config.pad_token_id, eos_token_id=hf_config.eos_token_id,
                   decoder_start_token_id=hf_config.pad_token_id if start is None else start)


def relative_position_bucket(relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    """The bucket of each distance ``key_pos - query_pos`` (Mesh TensorFlow's rule, as HF computes it).

    Bidirectional: half the buckets for keys after the query, half for keys before. Within a half, the
    first ``n/2`` buckets are exact distances ``0 .. n/2 - 1``; the rest cover ``n/2 .. max_distance`` on a
    log scale, and the last of them is a catch-all: it starts *below* ``max_distance`` (where the log scale
    reaches it: distance 91 in the encoder and 113 in the decoder for T5's 32 buckets and 128) and takes every
    larger distance. Unidirectional (decoder): keys after the query cannot be seen, so all buckets go to the
    past.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).to(torch.long) * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log(0) = -inf for distance 0 becomes garbage after .long(), but is_small picks the exact bucket there
    log_bucket = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                              * (num_buckets - max_exact)).to(torch.long)
    log_bucket = torch.clamp(log_bucket, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, log_bucket)


class T5Output(NamedTuple):
    """``logits (B, T_dec, V)``, ``loss`` (mean cross-entropy if labels were given), the encoder output
    ``encoder_last_hidden_state (B, T_enc, d)`` and the decoder ``kv_cache`` (when asked for)."""

    logits: Tensor
    loss: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None
    kv_cache: T5Cache | None = None


class T5Cache(KVCache):
    """Decoder keys/values: per layer, the self-attention ones (GPT's :class:`~lmcourse.models.gpt.KVCache`,
    growing by one position per step) and the cross-attention ones over the encoder output (computed once,
    by :meth:`T5.precompute_cross`)."""

    def __init__(self, n_layer: int) -> None:
        super().__init__(n_layer)
        self.cross_keys: list[Tensor | None] = [None] * n_layer
        self.cross_values: list[Tensor | None] = [None] * n_layer

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search: each surviving beam continues some parent beam). The cross
        keys/values are the same for every beam of one input, and beams never move between inputs, so
        only the self-attention part moves."""
        self.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, index) for v in self.values]

    def __len__(self) -> int:
        return len(self.keys)


class T5LayerNorm(nn.Module):
    """RMS LayerNorm (Zhang & Sennrich 2019): scale only, no mean, no bias; statistics in fp32."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class T5DenseActDense(nn.Module):
    """``wo(dropout(relu(wi x)))``: the T5 1.0 feed-forward."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(self.dropout(F.relu(self.wi(x))))


class T5DenseGatedActDense(nn.Module):
    """``wo(dropout(gelu_tanh(wi_0 x) * wi_1 x))``: the gated-GELU feed-forward of T5 1.1."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(self.dropout(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)))


class T5LayerFF(nn.Module):
    """Pre-norm feed-forward sublayer: ``x + dropout(FF(rms(x)))``."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated else T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Attention(nn.Module):
    """Multi-head attention with an additive score bias and no 1/sqrt(d) scaling.

    ``bias`` is ``(1 or B, H, T_q, T_k)`` (the relative position bias, or zeros), ``mask`` a boolean
    ``(B, 1, T_q or 1, T_k)`` (True = may attend). Masked scores are set to the dtype's minimum rather than
    ``-inf``, as HF does, so a row with no visible key is uniform instead of NaN.
    """

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, is_decoder: bool = False
                 ) -> None:
        super().__init__()
        self.n_heads, self.d_kv = config.num_heads, config.d_kv
        self.is_decoder = is_decoder
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.dropout = config.dropout_rate
        self.q = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.v = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.o = nn.Linear(config.inner_dim, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, self.n_heads)

    def heads(self, x: Tensor) -> Tensor:
        """``(B, T, H * d_kv) -> (B, H, T, d_kv)``."""
        return x.view(x.size(0), x.size(1), self.n_heads, self.d_kv).transpose(1, 2)

    def compute_bias(self, query_length: int, key_length: int, past: int = 0) -> Tensor:
        """``(1, H, T_q, T_k)``: the learned bias of each query/key distance; queries start at ``past``."""
        device = self.relative_attention_bias.weight.device
        query_pos = torch.arange(past, past + query_length, device=device)[:, None]
        key_pos = torch.arange(key_length, device=device)[None, :]
        bucket = relative_position_bucket(key_pos - query_pos, bidirectional=not self.is_decoder,
                                          num_buckets=self.num_buckets, max_distance=self.max_distance)
        return self.relative_attention_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        """``x (B, T_q, d)`` makes the queries; ``k, v (B, H, T_k, d_kv)`` are already projected."""
        q = self.heads(self.q(x))
        bias = bias.to(q.dtype)  # the dtype of the scores (bf16 under autocast); its minimum is finite
        scores_bias = bias if mask is None else torch.where(mask, bias, torch.finfo(q.dtype).min)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=scores_bias,
                                           dropout_p=self.dropout if self.training else 0.0, scale=1.0)
        return self.o(y.transpose(1, 2).reshape(x.size(0), x.size(1), -1))


class T5LayerSelfAttention(nn.Module):
    """Pre-norm self-attention sublayer: ``x + dropout(SelfAttention(rms(x)))``."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, is_decoder)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor, bias: Tensor, mask: Tensor | None, cache: T5Cache | None = None,
                layer: int = 0) -> Tensor:
        h = self.layer_norm(x)
        att = self.SelfAttention
        k, v = att.heads(att.k(h)), att.heads(att.v(h))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        return x + self.dropout(att(h, k, v, bias, mask))


class T5LayerCrossAttention(nn.Module):
    """Pre-norm cross-attention sublayer: the decoder's queries, the encoder output's keys and values."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.EncDecAttention = T5Attention(config, has_relative_attention_bias=False, is_decoder=True)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def project(self, encoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the encoder output: what the cache computes once per generation."""
        att = self.EncDecAttention
        return att.heads(att.k(encoder_hidden)), att.heads(att.v(encoder_hidden))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        return x + self.dropout(self.EncDecAttention(self.layer_norm(x), k, v, bias, mask))


class T5Block(nn.Module):
    """Encoder block ``layer = [self-attention, FF]``; decoder block ``[self-attention, cross-attention, FF]``."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool) -> None:
        super().__init__()
        self.is_decoder = is_decoder
        layers: list[nn.Module] = [T5LayerSelfAttention(config, has_relative_attention_bias, is_decoder)]
        if is_decoder:
            layers.append(T5LayerCrossAttention(config))
        layers.append(T5LayerFF(config))
        self.layer = nn.ModuleList(layers)


class T5Stack(nn.Module):
    """A stack of blocks between the shared embedding and a final RMS norm; the first block's
    ``relative_attention_bias`` table gives the position bias every block adds."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool) -> None:
        super().__init__()
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens  # the shared module, as in HF
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList([T5Block(config, i == 0, is_decoder) for i in range(n)])
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def position_bias(self, query_length: int, key_length: int, past: int = 0) -> Tensor:
        return self.block[0].layer[0].SelfAttention.compute_bias(query_length, key_length, past)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Encoder: bidirectional self-attention over the non-padding tokens."""
        T = input_ids.size(1)
        x = self.dropout(self.embed_tokens(input_ids))
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        bias = self.position_bias(T, T)
        for block in self.block:
            x = block.layer[0](x, bias, mask)
            x = block.layer[1](x)
        return self.dropout(self.final_layer_norm(x))

    def decode(self, input_ids: Tensor, encoder_hidden: Tensor, encoder_mask: Tensor | None = None,
               attention_mask: Tensor | None = None, cache: T5Cache | None = None) -> Tensor:
        """Decoder: causal self-attention (bottom-right aligned when ``cache`` holds past positions), then
        cross-attention to ``encoder_hidden``. ``attention_mask`` covers all decoder positions
        (cached + new)."""
        T = input_ids.size(1)
        past = cache.seq_len if cache is not None else 0
        x = self.dropout(self.embed_tokens(input_ids))
        mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)[None, None]
        if attention_mask is not None:
            if attention_mask.size(1) != past + T:
                raise ArgumentError(f"decoder_attention_mask has {attention_mask.size(1)} positions, expected "
                                    f"{past + T} (cached {past} + new {T})")
            mask = mask & attention_mask.bool()[:, None, None, :]
        bias = self.position_bias(T, past + T, past)
        cross_mask = None if encoder_mask is None else encoder_mask.bool()[:, None, None, :]
        cross_bias = torch.zeros(1, bias.size(1), T, encoder_hidden.size(1), dtype=x.dtype, device=x.device)
        for i, block in enumerate(self.block):
            x = block.layer[0](x, bias, mask, cache, i)
            if cache is not None and cache.cross_keys[i] is not None:
                k, v = cache.cross_keys[i], cache.cross_values[i]
            else:
                k, v = block.layer[1].project(encoder_hidden)
            x = block.layer[1](x, k, v, cross_bias, cross_mask)
            x = block.layer[2](x)
        return self.dropout(self.final_layer_norm(x))


class T5(nn.Module):
    """T5 encoder–decoder with an LM head. ``model(input_ids, attention_mask, decoder_input_ids,
    decoder_attention_mask)`` -> :class:`T5Output`."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    def _init_weights(self, module: nn.Module) -> None:
        """T5's initialisation (Mesh TensorFlow, as in HF with factor 1): each weight has std
        ``fan_in^-0.5`` (the query also ``d_kv^-0.5``: that is where the missing 1/sqrt(d) went); the
        embeddings N(0, 1)."""
        c = self.config
        if isinstance(module, T5Attention):
            nn.init.normal_(module.q.weight, std=(c.d_model * c.d_kv) ** -0.5)
            nn.init.normal_(module.k.weight, std=c.d_model ** -0.5)
            nn.init.normal_(module.v.weight, std=c.d_model ** -0.5)
            nn.init.normal_(module.o.weight, std=c.inner_dim ** -0.5)
            if hasattr(module, "relative_attention_bias"):
                nn.init.normal_(module.relative_attention_bias.weight, std=c.d_model ** -0.5)
        elif isinstance(module, (T5DenseActDense, T5DenseGatedActDense)):
            for name in ("wi", "wi_0", "wi_1"):
                if hasattr(module, name):
                    nn.init.normal_(getattr(module, name).weight, std=c.d_model ** -0.5)
            nn.init.normal_(module.wo.weight, std=c.d_ff ** -0.5)
        elif isinstance(module, T5LayerNorm):
            nn.init.ones_(module.weight)
        elif module is self:
            nn.init.normal_(self.shared.weight, std=1.0)
            nn.init.normal_(self.lm_head.weight, std=1.0)

    def num_params(self) -> int:
        """Parameters counted once (the tied head and ``embed_tokens`` are ``shared``)."""
        return sum(p.numel() for p in self.parameters())

    def get_input_embeddings(self) -> nn.Embedding:
        """The shared embedding (the HF accessor :func:`lmcourse.measurement.model_flops_per_token` uses)."""
        return self.shared

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def shift_right(self, labels: Tensor) -> Tensor:
        """Teacher forcing: the decoder input is ``[start] + labels[:-1]`` (``-100`` becomes padding)."""
        shifted = labels.new_full(labels.shape, self.config.pad_token_id)
        shifted[:, 1:] = labels[:, :-1]
        shifted[:, 0] = self.config.decoder_start_token_id
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def head(self, decoder_hidden: Tensor) -> Tensor:
        if self.config.scale_decoder_outputs:  # the tied head: T5 rescales before reusing the embedding
            decoder_hidden = decoder_hidden * self.config.d_model ** -0.5
        return self.lm_head(decoder_hidden)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.encoder.encode(input_ids, attention_mask)

    def precompute_cross(self, cache: T5Cache, encoder_hidden: Tensor) -> T5Cache:
        """Fill the cross-attention keys/values of every decoder layer from the encoder output."""
        for i, block in enumerate(self.decoder.block):
            cache.cross_keys[i], cache.cross_values[i] = block.layer[1].project(encoder_hidden)
        return cache

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
                labels: Tensor | None = None, encoder_outputs: Tensor | None = None,
                kv_cache: T5Cache | None = None, use_cache: bool = False) -> T5Output:
        """Logits of the decoder for ``decoder_input_ids`` (or ``shift_right(labels)``) given ``input_ids``.

        Masks are 1 for real tokens, 0 for padding (tokenizer output). ``encoder_outputs`` skips the encoder
        (generation encodes once). ``use_cache=True`` creates a :class:`T5Cache` (with the cross keys/values)
        if none is given and returns it; the new decoder tokens then sit at positions ``kv_cache.seq_len ..``.
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ArgumentError("T5 needs decoder_input_ids or labels (the decoder input is labels shifted "
                                    "right); for text generation use T5.generate")
            decoder_input_ids = self.shift_right(labels)
        if encoder_outputs is None:
            if input_ids is None:
                raise ArgumentError("T5 needs input_ids (or encoder_outputs from T5.encode)")
            encoder_outputs = self.encode(input_ids, attention_mask)
        if use_cache and kv_cache is None:
            kv_cache = self.precompute_cross(T5Cache(len(self.decoder.block)), encoder_outputs)
        hidden = self.decoder.decode(decoder_input_ids, encoder_outputs, attention_mask, decoder_attention_mask,
                                     kv_cache)
        logits = self.head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        return T5Output(logits, loss, encoder_outputs, kv_cache)

    def _step(self, tokens: Tensor, encoder_hidden: Tensor, encoder_mask: Tensor | None,
              cache: T5Cache | None) -> Tensor:
        """Next-token logits ``(B, V)``: with a cache only the last token is fed, without one the whole
        decoder sequence is recomputed (which is what the cache saves)."""
        if cache is None:
            out = self(attention_mask=encoder_mask, decoder_input_ids=tokens, encoder_outputs=encoder_hidden)
        else:
            out = self(attention_mask=encoder_mask, decoder_input_ids=tokens[:, cache.seq_len:],
                       encoder_outputs=encoder_hidden, kv_cache=cache)
        return out.logits[:, -1, :]

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, max_new_tokens: int = 20,
                 num_beams: int = 1, sample_fn: Callable[[Tensor], Tensor] | None = None, use_cache: bool = True,
                 length_penalty: float = 1.0, eos_token_id: int | None = -1) -> Tensor:
        """Decoder token ids ``(B, 1 + n)``, starting with the decoder start token, as HF ``generate`` returns.

        ``num_beams=1``: greedy (or ``sample_fn(logits (B, V)) -> (B,)``, e.g.
        :func:`lmcourse.generation.make_sampler` for temperature / top-k / top-p); a row that produced
        EOS is padded afterwards; stops when every row has. ``num_beams > 1``: beam search as HF's default
        (``early_stopping=False``, ``length_penalty``; see :meth:`beam_search`). ``eos_token_id=-1``
        means the config's; ``None`` never stops early.
        """
        if max_new_tokens < 1 or num_beams < 1:
            raise ArgumentError(f"max_new_tokens ({max_new_tokens}) and num_beams ({num_beams}) must be >= 1")
        if num_beams > 1 and sample_fn is not None:
            raise ArgumentError("beam search here is deterministic; pass either num_beams > 1 or sample_fn")
        eos = self.config.eos_token_id if eos_token_id == -1 else eos_token_id
        encoder_hidden = self.encode(input_ids, attention_mask)
        if num_beams > 1:
            return self.beam_search(encoder_hidden, attention_mask, max_new_tokens, num_beams, use_cache,
                                    length_penalty, eos)
        from lmcourse.generation import greedy

        pick = sample_fn or greedy
        B = input_ids.size(0)
        tokens = torch.full((B, 1), self.config.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
        cache = self.precompute_cross(T5Cache(len(self.decoder.block)), encoder_hidden) if use_cache else None
        finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            next_token = pick(self._step(tokens, encoder_hidden, attention_mask, cache).float()).view(-1)
            if eos is not None:
                next_token = torch.where(finished, torch.full_like(next_token, self.config.pad_token_id),
                                         next_token)
                finished |= next_token == eos
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            if eos is not None and bool(finished.all()):
                break
        return tokens

    def beam_search(self, encoder_hidden: Tensor, encoder_mask: Tensor | None, max_new_tokens: int,
                    num_beams: int, use_cache: bool = True, length_penalty: float = 1.0,
                    eos: int | None = None) -> Tensor:
        """Beam search written as HF's vectorised one (``transformers`` 5, default flags), so the tokens agree.

        Per input, ``k`` running beams with their summed log-probabilities. Each step scores all ``k * V``
        continuations and keeps the best ``2k``; those ending in EOS (or reaching the length limit) and
        ranked in the first ``k`` become finished hypotheses scored ``sum_logprob / length**length_penalty``
        (the best ``k`` kept); the best ``k`` of the others continue. The search stops when no running beam
        can beat the worst finished one (HF's heuristic: the best running score divided by the current
        length) or at ``max_new_tokens``. Returns the best finished hypothesis of each input, padded.
        """
        B, device = encoder_hidden.size(0), encoder_hidden.device
        k = num_beams
        max_length = 1 + max_new_tokens
        enc = encoder_hidden.repeat_interleave(k, dim=0)
        enc_mask = None if encoder_mask is None else encoder_mask.repeat_interleave(k, dim=0)
        cache = self.precompute_cross(T5Cache(len(self.decoder.block)), enc) if use_cache else None
        pad, start = self.config.pad_token_id, self.config.decoder_start_token_id
        fill = (pad or eos) if eos is not None else -1  # HF's fill value (note: pad 0 is falsy there too)
        n_keep = 2 * k
        top_k_mask = torch.arange(n_keep, device=device) < k
        running = torch.full((B, k, max_length), fill, dtype=torch.long, device=device)
        running[:, :, 0] = start
        finished_seqs = running.clone()
        running_scores = torch.zeros(B, k, device=device)
        running_scores[:, 1:] = -1e9  # all beams start identical: only the first may expand at step one
        finished_scores = torch.full((B, k), -1e9, device=device)
        is_finished = torch.zeros(B, k, dtype=torch.bool, device=device)
        improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
        lengths = torch.zeros(B, k, dtype=torch.long, device=device)  # generated tokens of finished hypotheses
        running_len = torch.zeros(B, k, dtype=torch.long, device=device)
        cur = 1
        while True:
            flat = running[:, :, :cur].reshape(B * k, cur)
            logits = self._step(flat, enc, enc_mask, cache).float()
            log_probs = F.log_softmax(logits, dim=-1).view(B, k, -1) + running_scores[:, :, None]
            V = log_probs.size(-1)
            top_scores, top_idx = torch.topk(log_probs.view(B, k * V), n_keep)
            parent, token = top_idx // V, top_idx % V
            cand = torch.take_along_dim(running, parent[:, :, None], dim=1)
            cand[:, :, cur] = token
            cand_len = torch.take_along_dim(running_len, parent, dim=1) + 1
            done = cur + 1 >= max_length
            hits = (token == eos) | done if eos is not None else torch.full_like(token, done, dtype=torch.bool)
            # the best k candidates that do not stop keep running
            alive_scores = top_scores + hits.float() * -1e9
            keep = torch.topk(alive_scores, k)[1]
            running = torch.take_along_dim(cand, keep[:, :, None], dim=1)
            running_scores = torch.take_along_dim(alive_scores, keep, dim=1)
            running_len = torch.take_along_dim(cand_len, keep, dim=1)
            parents = torch.take_along_dim(parent, keep, dim=1)
            # finished candidates among the first k compete with the finished hypotheses so far
            just_finished = hits & top_k_mask[None, :]
            scored = top_scores / ((cur + 1 - 1) ** length_penalty)
            scored = scored + (~improvable).float() * -1e9 + (~just_finished).float() * -1e9
            merged_scores = torch.cat([finished_scores, scored], dim=1)
            best = torch.topk(merged_scores, k)[1]
            finished_seqs = torch.take_along_dim(torch.cat([finished_seqs, cand], dim=1), best[:, :, None], dim=1)
            finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
            lengths = torch.take_along_dim(torch.cat([lengths, cand_len], dim=1), best, dim=1)
            is_finished = torch.take_along_dim(torch.cat([is_finished, just_finished], dim=1), best, dim=1)
            if cache is not None:
                offset = torch.arange(B, device=device)[:, None] * k
                cache.reorder((parents + offset).view(-1))
            cur += 1
            best_running = running_scores[:, :1] / ((cur - 1) ** length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], -1e9)
            improvable = improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)
            if not bool(improvable.any()) or bool(hits.all()):
                break
        out = finished_seqs[:, 0]
        return out[:, :1 + int(lengths[:, 0].max())]

    @classmethod
    def from_hf(cls, hf_model: Any) -> T5:
        """A :class:`T5` with the weights of a ``transformers.T5ForConditionalGeneration``.

        The names are identical. Whether the head is tied is read from the tensors (is ``lm_head.weight``
        the ``shared`` one?), the rescaling from HF's config.
        """
        tied = hf_model.lm_head.weight.data_ptr() == hf_model.shared.weight.data_ptr()
        config = T5Config.from_hf(hf_model.config, tie_word_embeddings=tied)
        model = cls(config)
        sd = {k: v for k, v in hf_model.state_dict().items()
              if not k.endswith("EncDecAttention.relative_attention_bias.weight")}  # unused, in old checkpoints
        model.load_state_dict(sd, strict=True)
        if tied:
            model.lm_head.weight = model.shared.weight  # keep the tie after loading
        return model.to(next(hf_model.parameters()).dtype)

    def to_hf(self) -> Any:
        """A ``transformers.T5ForConditionalGeneration`` with this model's weights (the reference the tests
        and notebook 10 compare with). transformers 5 always ties the head in its config and keeps T5 1.0
        vs 1.1 in the rescaling, so an untied head is given its own tensor after construction."""
        from transformers import T5Config as HFT5Config
        from transformers import T5ForConditionalGeneration

        c = self.config
        if c.scale_decoder_outputs != c.tie_word_embeddings:
            raise ArgumentError("HF T5 rescales exactly when the head is tied; this config mixes the two")
        hf_config = HFT5Config(vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                               num_layers=c.num_layers, num_decoder_layers=c.num_decoder_layers,
                               num_heads=c.num_heads, relative_attention_num_buckets=c.relative_attention_num_buckets,
                               relative_attention_max_distance=c.relative_attention_max_distance,
                               dropout_rate=c.dropout_rate, layer_norm_epsilon=c.layer_norm_epsilon,
                               feed_forward_proj=c.feed_forward_proj, tie_word_embeddings=c.tie_word_embeddings,
                               pad_token_id=c.pad_token_id, eos_token_id=c.eos_token_id,
                               decoder_start_token_id=c.decoder_start_token_id)
        hf = T5ForConditionalGeneration(hf_config)
        if not c.tie_word_embeddings:
            hf.lm_head.weight = nn.Parameter(torch.empty_like(self.lm_head.weight))
        hf.load_state_dict(self.state_dict(), strict=True)
        return hf.to(next(self.parameters()).dtype).eval()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def t5_param_count(config: T5Config) -> int:
    """Parameters of :class:`T5` by formula: ``V d`` (shared) ``[+ V d`` (untied head)``]`` + per encoder
    block ``4 d i + FF + 2 d`` + per decoder block ``8 d i + FF + 3 d`` + two final norms + two bias tables
    ``n_buckets * H`` (``i = H d_kv``; ``FF = (2 or 3) d d_ff``)."""
    d, i = config.d_model, config.inner_dim
    ff = (3 if config.is_gated else 2) * d * config.d_ff
    enc = config.num_layers * (4 * d * i + ff + 2 * d)
    dec = config.num_decoder_layers * (8 * d * i + ff + 3 * d)
    emb = config.vocab_size * d * (1 if config.tie_word_embeddings else 2)
    return emb + enc + dec + 2 * d + 2 * config.relative_attention_num_buckets * config.num_heads
