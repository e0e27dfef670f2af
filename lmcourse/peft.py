"""Parameter-efficient fine-tuning: LoRA and bottleneck adapters from scratch, BitFit, and the same
methods (plus prompt/prefix tuning) through the ``peft`` library.

Fine-tuning all ~22M weights of MiniLM per task is cheap here, but for a 7B model one copy per task is
not. Parameter-efficient methods freeze the pretrained weights and train a small number of new ones:

- **LoRA** (Hu et al. 2021): ``W x + (α/r) B A x`` with ``A ∈ R^{r×d_in}``, ``B ∈ R^{d_out×r}``, ``B = 0``
  at the start so training starts from the pretrained function; after training ``B A`` can be merged
  into ``W`` (no extra inference cost). Trainable: ``r (d_in + d_out)`` per adapted matrix.
- **Bottleneck adapters** (Houlsby et al. 2019; Pfeiffer et al. 2021): ``h + U f(D h)`` after a sublayer,
  ``D ∈ R^{m×d}``, ``U ∈ R^{d×m}`` (``U = 0`` at the start). Trainable: ``2 d m + m + d`` per adapter.
  peft 0.21 has no bottleneck adapter, so it lives here.
- **BitFit** (Ben Zaken et al. 2022): train only the bias vectors.
- **Prompt tuning** (Lester et al. 2021) and **prefix tuning** (Li & Liang 2021): through ``peft``.

In every method the task head (``classifier``) is trained too, as peft does for ``task_type="SEQ_CLS"``.

Note on the name: this module is ``lmcourse.peft``; inside it ``import peft`` (absolute import) is the
Hugging Face library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lmcourse.errors import ArgumentError, UnknownNameError

HEAD_NAMES = ("classifier", "score")


# ------------------------------------------------------------------------------------------ LoRA
class LoRALinear(nn.Module):
    """An ``nn.Linear`` plus a low-rank update: ``base(x) + (alpha / r) * B(A(dropout(x)))``.

    ``A`` is initialised like ``nn.Linear`` (Kaiming-uniform, ``a = sqrt(5)``) and ``B`` with zeros,
    as in ``peft``, so the wrapped layer starts out computing exactly ``base(x)``.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ArgumentError(f"LoRA rank r must be positive, got {r}")
        self.base = base
        self.r = int(r)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, self.r, bias=False, dtype=base.weight.dtype,
                                device=base.weight.device)
        self.lora_B = nn.Linear(self.r, base.out_features, bias=False, dtype=base.weight.dtype,
                                device=base.weight.device)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # code that reads .weight (e.g. dtype checks) sees the base weight
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / r) B A``: the change LoRA makes to ``W``."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``B A`` into ``W``: the layer becomes a plain linear map again (no inference overhead)."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take ``B A`` out of ``W`` again (to keep training or to swap adapters)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets: Iterable[str]) -> bool:
    """peft's rule for a list of target names: the module name equals a target or ends with ``.target``."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def freeze_except(model: nn.Module, keep: Iterable[str] = HEAD_NAMES) -> nn.Module:
    """``requires_grad = False`` for every parameter whose name has no component in ``keep``."""
    keep = tuple(keep)
    for name, p in model.named_parameters():
        parts = name.split(".")
        p.requires_grad = any(k in parts for k in keep)
    return model


def inject_lora(model: nn.Module, target_modules: Iterable[str] = ("query", "value"), r: int = 8,
                alpha: float = 16, dropout: float = 0.0, train_head: bool = True) -> nn.Module:
    """Replace the ``nn.Linear`` modules named in ``target_modules`` by :class:`LoRALinear` (in place)
    and freeze everything except the LoRA matrices (and the classifier head when ``train_head``)."""
    targets = tuple(target_modules)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)]
    if not names:
        raise UnknownNameError(f"no nn.Linear module matches target_modules={list(targets)}")
    freeze_except(model, HEAD_NAMES if train_head else ())
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), r=r, alpha=alpha, dropout=dropout))
    for m in lora_layers(model):
        m.lora_A.weight.requires_grad = True
        m.lora_B.weight.requires_grad = True
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    for m in lora_layers(model):
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_layers(model):
        m.unmerge()
    return model


def copy_lora_from_peft(ours: nn.Module, peft_model: nn.Module, adapter: str = "default") -> int:
    """Copy ``lora_A``/``lora_B`` (and the head) of a ``peft`` LoRA model into ours; returns #tensors copied.

    peft trains a copy of the head (``ModulesToSaveWrapper.modules_to_save[adapter]``); that copy is the one
    copied, so a trained peft model and ours compute the same function afterwards.
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    theirs = {n: m for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    copied = 0
    for name, m in ours.named_modules():
        if not isinstance(m, LoRALinear):
            continue
        match = [t for n, t in theirs.items() if n.endswith("." + name) or n == name]
        if len(match) != 1:
            raise ArgumentError(f"no unique peft LoRA layer for {name!r}")
        with torch.no_grad():
            m.lora_A.weight.copy_(match[0].lora_A[adapter].weight)
            m.lora_B.weight.copy_(match[0].lora_B[adapter].weight)
        copied += 2
    heads = {n: w for n, w in peft_model.named_modules()
             if isinstance(w, ModulesToSaveWrapper) and n.split(".")[-1] in HEAD_NAMES}
    for name, m in ours.named_modules():
        if name.split(".")[-1] not in HEAD_NAMES:
            continue
        match = [w for n, w in heads.items() if n.endswith("." + name) or n == name]
        if len(match) == 1:
            state = match[0].modules_to_save[adapter].state_dict()
            m.load_state_dict(state)
            copied += len(state)
    return copied


# ------------------------------------------------------------------------------------------ adapters
class BottleneckAdapter(nn.Module):
    """``h + U relu(D h)``: down-project to ``m``, non-linearity, up-project (zero-initialised)."""

    def __init__(self, hidden: int, bottleneck: int = 64, activation: str = "relu"):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[activation]
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class WithAdapter(nn.Module):
    """A sublayer's output projection followed by an adapter (before BERT's residual + LayerNorm)."""

    def __init__(self, base: nn.Linear, bottleneck: int = 64, activation: str = "relu"):
        super().__init__()
        self.base = base
        self.adapter = BottleneckAdapter(base.out_features, bottleneck, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


#: Where adapters go in a BERT layer: Pfeiffer after the feed-forward block, Houlsby also after attention.
ADAPTER_PLACEMENTS = {
    "pfeiffer": (r"layer\.\d+\.output\.dense$",),
    "houlsby": (r"layer\.\d+\.output\.dense$", r"layer\.\d+\.attention\.output\.dense$"),
}


def inject_adapters(model: nn.Module, bottleneck: int = 64, placement: str = "pfeiffer",
                    activation: str = "relu", train_head: bool = True) -> nn.Module:
    """Insert bottleneck adapters (in place) and freeze everything else except the head.

    Adapters sit after the output projection of a sublayer and before its residual + LayerNorm, the
    position of Houlsby et al. 2019 (Figure 2); ``"pfeiffer"`` keeps only the one after the feed-forward block.
    """
    if placement not in ADAPTER_PLACEMENTS:
        raise UnknownNameError(f"unknown adapter placement {placement!r}; known: {sorted(ADAPTER_PLACEMENTS)}")
    patterns = [re.compile(p) for p in ADAPTER_PLACEMENTS[placement]]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(p.search(n) for p in patterns)]
    if not names:
        raise UnknownNameError(f"no module matches adapter placement {placement!r} (is this a BERT-like model?)")
    freeze_except(model, HEAD_NAMES if train_head else ())
    for name in names:
        _set_module(model, name, WithAdapter(model.get_submodule(name), bottleneck, activation))
    for m in model.modules():
        if isinstance(m, BottleneckAdapter):
            for p in m.parameters():
                p.requires_grad = True
    return model


# ------------------------------------------------------------------------------------------ BitFit
def bitfit(model: nn.Module, train_head: bool = True) -> nn.Module:
    """Train only bias vectors (and the head): BitFit, the simplest parameter-efficient baseline."""
    for name, p in model.named_parameters():
        in_head = any(h in name.split(".") for h in HEAD_NAMES)
        p.requires_grad = name.endswith(".bias") or bool(train_head and in_head)
    return model


# ------------------------------------------------------------------------------------------ peft library
def peft_lora(model: nn.Module, target_modules: Iterable[str] = ("query", "value"), r: int = 8, alpha: float = 16,
              dropout: float = 0.0) -> nn.Module:
    """The same LoRA through ``peft`` (``LoraConfig`` + ``get_peft_model``)."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=list(target_modules))
    return get_peft_model(model, cfg)


def peft_prompt_tuning(model: nn.Module, num_virtual_tokens: int = 20) -> nn.Module:
    """Prompt tuning (Lester et al. 2021) via ``peft``: ``num_virtual_tokens`` trainable input embeddings."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    cfg = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=num_virtual_tokens)
    return get_peft_model(model, cfg)


def peft_prefix_tuning(model: nn.Module, num_virtual_tokens: int = 20) -> nn.Module:
    """Prefix tuning (Li & Liang 2021) via ``peft``: trainable keys/values prepended in every layer."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    cfg = PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=num_virtual_tokens)
    return get_peft_model(model, cfg)


# ------------------------------------------------------------------------------------------ formulas
def head_params(model: nn.Module) -> int:
    """Parameters of the classification head (trained by every method)."""
    return sum(p.numel() for n, p in model.named_parameters() if any(h in n.split(".") for h in HEAD_NAMES))


def expected_trainable(method: str, config, head: int, **kw: Any) -> int:
    """The trainable-parameter count each method should have, from the model config alone (BERT layout).

    ``d`` hidden size, ``L`` layers, ``f`` feed-forward size: LoRA on query+value ``L · 2 · r (d + d)``;
    Pfeiffer adapters ``L (2 d m + m + d)`` (Houlsby: twice); prompt tuning ``n d``; prefix tuning
    ``n · 2 L d``; BitFit: every bias (``L (7d + f) + 2d`` for BERT incl. LayerNorm biases
    and embedding LayerNorm and pooler) + head.
    """
    d, L, f = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    if method in ("lora", "lora-peft"):
        r = kw.get("r", 8)
        n_targets = len(tuple(kw.get("target_modules", ("query", "value"))))
        return L * n_targets * r * (d + d) + head
    if method.startswith("adapter"):
        m = kw.get("bottleneck", 64)
        per_layer = 2 if method == "adapter-houlsby" or kw.get("placement") == "houlsby" else 1
        return L * per_layer * (2 * d * m + m + d) + head
    if method == "prompt":
        return kw.get("num_virtual_tokens", 20) * d + head
    if method == "prefix":
        return kw.get("num_virtual_tokens", 20) * 2 * L * d + head
    if method == "bitfit":
        # per layer: q,k,v,attn-out (4d), attn LayerNorm (d), intermediate (f), output (d), output LayerNorm (d)
        # + embedding LayerNorm (d) + pooler dense (d); the head's bias is inside `head`
        return L * (7 * d + f) + 2 * d + head
    raise UnknownNameError(f"no formula for method {method!r}")


# ------------------------------------------------------------------------------------------ one switch
#: Learning rates that work for each method on MiniLM/BERT: few trainable weights want larger steps.
METHOD_LEARNING_RATES: dict[str, float] = {"full": 5e-5, "bitfit": 1e-3, "lora": 5e-4, "lora-peft": 5e-4,
                                           "adapter": 1e-3, "adapter-houlsby": 1e-3, "prompt": 3e-2, "prefix": 1e-2}

METHODS = ("full", "bitfit", "lora", "lora-peft", "adapter", "adapter-houlsby", "prompt", "prefix")


def apply_method(model: nn.Module, method: str, **kw: Any) -> nn.Module:
    """Turn a freshly loaded classifier into the given method's trainable set-up."""
    if method == "full":
        return model
    if method == "bitfit":
        return bitfit(model)
    if method == "lora":
        return inject_lora(model, kw.get("target_modules", ("query", "value")), kw.get("r", 8), kw.get("alpha", 16),
                           kw.get("dropout", 0.0))
    if method == "lora-peft":
        return peft_lora(model, kw.get("target_modules", ("query", "value")), kw.get("r", 8), kw.get("alpha", 16),
                         kw.get("dropout", 0.0))
    if method == "adapter":
        return inject_adapters(model, kw.get("bottleneck", 64), "pfeiffer")
    if method == "adapter-houlsby":
        return inject_adapters(model, kw.get("bottleneck", 64), "houlsby")
    if method == "prompt":
        return peft_prompt_tuning(model, kw.get("num_virtual_tokens", 20))
    if method == "prefix":
        return peft_prefix_tuning(model, kw.get("num_virtual_tokens", 20))
    raise UnknownNameError(f"unknown parameter-efficient method {method!r}; known: {', '.join(METHODS)}")


def method_hook(method: str, **kw: Any):
    """A ``model_init_hook`` for :func:`lmcourse.finetuning.finetune` that applies ``method``."""
    if method not in METHODS:
        raise UnknownNameError(f"unknown parameter-efficient method {method!r}; known: {', '.join(METHODS)}")
    return lambda model: apply_method(model, method, **kw)
