"""GPT-2 from scratch in one readable file (nanoGPT style): config, blocks, KV cache, generation.

A decoder-only transformer (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"):

    x = wte[idx] + wpe[pos]
    for each block:  x = x + attn(ln_1(x))      # pre-LN, causal self-attention
                     x = x + mlp(ln_2(x))       # Linear 4d -> GELU (tanh approximation) -> Linear d
    logits = ln_f(x) @ wte^T                    # LM head tied to the token embedding

Parameter names are those of Hugging Face's ``GPT2LMHeadModel`` (``transformer.h.0.attn.c_attn.weight``
...), so :meth:`GPT.from_hf` is a plain ``load_state_dict`` after one documented change: HF stores the
weights of its ``Conv1D`` layers as ``(in, out)`` while ``nn.Linear`` stores ``(out, in)``, so those four
matrices per block are transposed.

The KV cache: during generation the keys and values of past positions never change (causal attention),
so each layer keeps them and a step only computes the new token's query/key/value. Positions of the
new tokens start at the cache length, and the causal mask is aligned bottom-right (new query ``i``
sits at position ``past + i`` and sees keys ``0 .. past + i``).
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
from lmcourse.generation import greedy


@dataclass
class GPTConfig:
    """Sizes of a GPT-2 style model (defaults: GPT-2 small, 124M parameters)."""

    vocab_size: int = 50257
    block_size: int = 1024  # maximum context length (number of learned positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int | None = None  # MLP hidden size; None means 4 * n_embd
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: True)
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ArgumentError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd) <= 0:
            raise ArgumentError(f"all GPTConfig sizes must be positive, got {self}")

    @property
    def d_ff(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_hf(cls, hf_config: Any) -> GPTConfig:
        """From a ``transformers.GPT2Config`` (only the GELU-tanh "gelu_new" activation is supported)."""
        act = getattr(hf_config, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ArgumentError(f"GPT supports the GELU tanh approximation only, HF config has {act!r}")
        return cls(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions, n_layer=hf_config.n_layer,
                   n_head=hf_config.n_head, n_embd=hf_config.n_embd, n_inner=hf_config.n_inner,
                   dropout=0.0, bias=True, layer_norm_epsilon=hf_config.layer_norm_epsilon)


class KVCache:
    """Keys and values of past positions, one ``(B, H, T_past, head_dim)`` pair per layer.

    ``update`` appends the new keys/values of one layer and returns everything seen so far. The model
    reads :attr:`seq_len` (before the forward pass) as the position offset of the new tokens.
    """

    def __init__(self, n_layer: int) -> None:
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer

    @property
    def seq_len(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def __len__(self) -> int:
        return len(self.keys)


class GPTOutput(NamedTuple):
    """``logits (B, T, V)``, ``loss`` (mean cross-entropy if targets were given) and the ``kv_cache``."""

    logits: Tensor
    loss: Tensor | None = None
    kv_cache: KVCache | None = None


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; one Linear makes q, k and v (``c_attn``), one projects back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, H, T, head_dim): heads become a batch dimension
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if kv_cache is not None:
            past = kv_cache.keys[layer].size(2) if kv_cache.keys[layer] is not None else 0
            k, v = kv_cache.update(layer, k, v)
        dropout_p = self.attn_dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:  # bottom-right causal mask: query i (position past + i) sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # merge heads
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear(d, 4d) -> GELU (tanh approximation, HF "gelu_new") -> Linear(4d, d)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.d_ff, bias=config.bias)
        self.c_proj = nn.Linear(config.d_ff, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 language model. ``model(idx)`` -> :class:`GPTOutput` (logits, loss, kv_cache)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        # GPT-2 scales the init of the projections that write into the residual stream by 1/sqrt(2 L)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied LM head is the token embedding); optionally without wpe/wte."""
        n = sum(p.numel() for p in self.parameters())  # parameters() already de-duplicates tied tensors
        if non_embedding:
            n -= self.transformer.wpe.weight.numel() + self.transformer.wte.weight.numel()
        return n

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding ``transformer.wte`` (the Hugging Face accessor, which
        :func:`lmcourse.measurement.model_flops_per_token` uses to see the tied LM head)."""
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head, whose weight *is* the token embedding's (tied)."""
        return self.lm_head

    def hidden_states(self, idx: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """The final (``ln_f``-normalised) hidden states ``(B, T, n_embd)`` the LM head reads: what a
        sequence classifier pools (notebook 10 compares objectives through this readout)."""
        T = idx.size(1)
        past = kv_cache.seq_len if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ArgumentError(f"sequence of {past + T} tokens (cache {past} + new {T}) is longer than "
                                f"block_size={self.config.block_size}; crop the context")
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, i)
        return self.transformer.ln_f(x)

    def forward(self, idx: Tensor, targets: Tensor | None = None, kv_cache: KVCache | None = None,
                use_cache: bool = False) -> GPTOutput:
        """Logits for token ids ``idx (B, T)``; with ``targets (B, T)`` also the mean cross-entropy
        (``-100`` targets are ignored). ``use_cache=True`` creates a cache if none is given and returns it;
        the positions of ``idx`` then start at ``kv_cache.seq_len``."""
        if use_cache and kv_cache is None:
            kv_cache = KVCache(self.config.n_layer)
        logits = self.lm_head(self.hidden_states(idx, kv_cache))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return GPTOutput(logits, loss, kv_cache if (use_cache or kv_cache is not None) else None)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, sample_fn: Callable[[Tensor], Tensor] | None = None,
                 use_cache: bool = True, eos_token_id: int | None = None) -> Tensor:
        """Extend ``idx (B, T)`` by ``max_new_tokens`` tokens.

        ``sample_fn(logits (B, V)) -> (B,)`` picks the next token from the last position's logits; the
        default is greedy argmax (same tokens as HF ``generate(do_sample=False)``). For temperature, top-k
        and top-p sampling pass :func:`lmcourse.generation.make_sampler`. With ``use_cache`` only the new
        token is fed at each step; without it the whole (cropped) context is recomputed, which is what the
        cache saves.
        Rows that produced ``eos_token_id`` keep emitting it.
        """
        pick = sample_fn or greedy
        cache = None
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        step_input = idx
        for _ in range(max_new_tokens):
            if use_cache:
                if cache is not None and cache.seq_len + 1 > self.config.block_size:
                    cache, step_input = None, idx[:, -self.config.block_size:]  # context full: restart
                out = self(step_input, kv_cache=cache, use_cache=True)
                cache = out.kv_cache
            else:
                out = self(idx[:, -self.config.block_size:])
            next_token = pick(out.logits[:, -1, :]).view(-1)
            if eos_token_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_token_id), next_token)
                finished |= next_token == eos_token_id
            idx = torch.cat([idx, next_token[:, None]], dim=1)
            step_input = next_token[:, None]
            if eos_token_id is not None and bool(finished.all()):
                break
        return idx

    @classmethod
    def from_hf(cls, hf_model: Any) -> GPT:
        """A :class:`GPT` with the weights of a ``transformers.GPT2LMHeadModel`` (or ``GPT2Model``).

        Names are identical; the ``Conv1D`` weights (``c_attn``, ``c_proj``, ``c_fc``) are transposed
        because HF stores them as ``(in_features, out_features)``.
        """
        config = GPTConfig.from_hf(hf_model.config)
        model = cls(config)
        sd = hf_model.state_dict()
        if not any(k.startswith("transformer.") for k in sd):  # a bare GPT2Model
            sd = {f"transformer.{k}": v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # old buffers
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        sd = {k: (v.t().contiguous() if k.endswith(conv1d) else v) for k, v in sd.items()}
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
        model.load_state_dict(sd, strict=True)
        model.lm_head.weight = model.transformer.wte.weight  # keep the tie after loading
        return model.to(next(hf_model.parameters()).dtype)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def gpt_param_count(config: GPTConfig) -> int:
    """Parameters of :class:`GPT` by formula (tied LM head counted once).

    ``V d + T_max d`` (embeddings) ``+ L (2 LN + 3d^2 + d^2 + 2 d d_ff`` weights ``+`` biases ``) + LN_f``.
    """
    d, f, L = config.n_embd, config.d_ff, config.n_layer
    b = 1 if config.bias else 0
    ln = d + b * d  # weight (+ bias)
    attn = d * 3 * d + b * 3 * d + d * d + b * d
    mlp = d * f + b * f + f * d + b * d
    return config.vocab_size * d + config.block_size * d + L * (2 * ln + attn + mlp) + ln
