"""BERT encoder from scratch in one readable file: config, embeddings, post-LN layers, pooler.

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers":

    x = LayerNorm(word[ids] + position[pos] + token_type[types]);  x = dropout(x)
    for each layer:  x = LayerNorm(x + dropout(W_O · SelfAttention(x)))   # post-LN: norm after the residual
                     x = LayerNorm(x + dropout(W_2 · GELU(W_1 x)))         # exact (erf) GELU, HF "gelu"
    pooled = tanh(W_p x[:, 0])                                              # the [CLS] vector

Module and parameter names are exactly those of Hugging Face's ``BertModel`` (``embeddings.word_embeddings``,
``encoder.layer.0.attention.self.query``, ``...attention.output.LayerNorm``, ``pooler.dense`` ...), so
``load_state_dict(hf_model.state_dict())`` works with no renaming at all. The only oddity this costs is
a submodule called ``self`` (``attention.self``), as in HF and the original TensorFlow code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.errors import ArgumentError


@dataclass
class BertConfig:
    """Sizes of a BERT encoder (defaults: BERT-base)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    add_pooling_layer: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ArgumentError(f"hidden_size={self.hidden_size} must be divisible by "
                            f"num_attention_heads={self.num_attention_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf_config: Any, add_pooling_layer: bool = True) -> BertConfig:
        """From a ``transformers.BertConfig`` (absolute positions and the exact GELU only)."""
        if getattr(hf_config, "hidden_act", "gelu") != "gelu":
            raise ArgumentError(f"BertModel implements the exact GELU only, HF config has {hf_config.hidden_act!r}")
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ArgumentError("BertModel implements absolute position embeddings only")
        names = [f for f in cls.__dataclass_fields__ if f != "add_pooling_layer"]
        return cls(**{f: getattr(hf_config, f) for f in names}, add_pooling_layer=add_pooling_layer)


class BertOutput(NamedTuple):
    """``last_hidden_state (B, T, d)`` and ``pooler_output (B, d)`` (None without a pooler)."""

    last_hidden_state: Tensor
    pooler_output: Tensor | None


class BertEmbeddings(nn.Module):
    """Sum of word, position and token-type (segment) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        T = input_ids.size(1)
        if self.position_embeddings.num_embeddings < T:
            raise ArgumentError(f"sequence of {T} tokens is longer than max_position_embeddings="
                            f"{self.position_embeddings.num_embeddings}; truncate it")
        pos = torch.arange(T, device=input_ids.device)
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        # summed in HF's order (word + type + position) so fp32 rounding matches too
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention (no output projection: that is :class:`BertSelfOutput`)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        q, k, v = (proj(x).view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))  # (B, H, T, head_dim)
        # mask: boolean (B, 1, 1, T), True = real key; every query may look at every real key
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, D)  # merge heads


class BertSelfOutput(nn.Module):
    """Output projection of attention, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h)))


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)  # the HF name; `self.self` is legal Python, if odd
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    """First half of the feed-forward block: Linear(d, d_ff) and the exact GELU ``x Φ(x)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))  # approximate="none": erf form, HF "gelu"


class BertFFNOutput(nn.Module):
    """Second half: Linear(d_ff, d), dropout, residual, LayerNorm. (HF calls this class ``BertOutput``.)"""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h)))


class BertLayer(nn.Module):
    """One encoder layer: attention sublayer then feed-forward sublayer, each ``LN(x + f(x))``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertFFNOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """``tanh(W h_[CLS] + b)``: the sentence vector BERT's next-sentence head (and classifiers) read."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class BertModel(nn.Module):
    """The BERT encoder. ``model(input_ids, attention_mask, token_type_ids)`` -> :class:`BertOutput`."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if config.add_pooling_layer else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's init: N(0, 0.02) weights, zero biases, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        """The word embedding (the Hugging Face accessor): the encoder only looks it up, so
        :func:`lmcourse.measurement.model_flops_per_token` leaves it out of the matmul parameters."""
        return self.embeddings.word_embeddings

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> BertOutput:
        """``input_ids (B, T)``; ``attention_mask (B, T)`` 1 = real token, 0 = padding (tokenizer output)."""
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return BertOutput(x, self.pooler(x) if self.pooler is not None else None)

    @classmethod
    def from_hf(cls, hf_model_or_path: Any, add_pooling_layer: bool | None = None) -> BertModel:
        """A :class:`BertModel` with the weights of a HF ``BertModel`` (or ``BertFor...`` model, or a path
        / short name such as ``"minilm-l6"`` that ``AutoModel.from_pretrained`` loads offline)."""
        hf = hf_model_or_path
        if isinstance(hf, str):
            from transformers import AutoModel

            from lmcourse.models import resolve

            hf = AutoModel.from_pretrained(resolve(hf))
        hf = getattr(hf, "bert", hf)  # BertForSequenceClassification etc. wrap the encoder as .bert
        sd = hf.state_dict()
        has_pooler = any(k.startswith("pooler.") for k in sd)
        config = BertConfig.from_hf(hf.config, add_pooling_layer=has_pooler if add_pooling_layer is None
                                    else add_pooling_layer)
        model = cls(config)
        if not config.add_pooling_layer:
            sd = {k: v for k, v in sd.items() if not k.startswith("pooler.")}
        sd = {k: v for k, v in sd.items() if not k.endswith(("position_ids", "token_type_ids"))}  # buffers
        model.load_state_dict(sd, strict=True)
        return model.to(next(hf.parameters()).dtype)


def bert_param_count(config: BertConfig) -> int:
    """Parameters of :class:`BertModel` by formula.

    Embeddings ``(V + P + S) d + 2d``; per layer ``4 (d^2 + d)`` (Q, K, V, O) ``+ 2 d d_ff + d_ff + d``
    (FFN) ``+ 2 * 2d`` (two LayerNorms); pooler ``d^2 + d``.
    """
    d, f = config.hidden_size, config.intermediate_size
    emb = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * (2 * d)
    pooler = d * d + d if config.add_pooling_layer else 0
    return emb + config.num_hidden_layers * layer + pooler
