"""Pruning: remove weights (unstructured) or whole attention heads (structured).

Unstructured magnitude pruning zeroes the smallest ``|w|`` of the Linear layers
(``torch.nn.utils.prune``); the matrices keep their shape, so dense kernels do the same work. Structured
pruning removes attention heads: the rows of Q, K, V and the columns of the output projection that belong to
a head go, and the matmuls shrink. Which heads? Michel et al. (2019) put a gate ``ξ_h`` (1 = on) on each
head's output and score it by ``I_h = E_x |∂L(x)/∂ξ_h|``: the size of the first-order change of each example's
loss if the head were removed. :func:`head_importance` computes it with one backward pass per batch (per-example
gates); :func:`masked_head_losses` is the brute-force version (one forward pass per head and gate value) it is
checked against, and with ``value=0`` the loss with the head actually removed.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lmcourse.errors import ArgumentError


# ------------------------------------------------------------------------------------------ unstructured
def prunable_linears(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The encoder's Linear layers as ``(module, "weight")`` pairs (the classifier head is left alone)."""
    return [(m, "weight") for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and "classifier" not in name]


def magnitude_prune(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``model`` with the ``sparsity`` fraction of smallest-magnitude encoder Linear weights set to
    zero, ranked globally across layers (``prune.global_unstructured`` with L1), the masks made permanent."""
    from torch.nn.utils import prune

    if not 0.0 <= sparsity < 1.0:
        raise ArgumentError(f"sparsity must be in [0, 1), got {sparsity}")
    model = copy.deepcopy(model)
    params = prunable_linears(model)
    if sparsity > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
        for module, name in params:
            prune.remove(module, name)
    return model


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exactly-zero weights in the encoder's Linear layers."""
    weights = [m.weight for m, _ in prunable_linears(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


# ------------------------------------------------------------------------------------------ heads
def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The ``attention`` modules (``.self`` with query/key/value, ``.output.dense``) of a BERT-like model."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None or not all(hasattr(layer, "attention") and hasattr(layer.attention, "self")
                                 for layer in layers):
        raise ArgumentError(f"{type(model).__name__} is not a BERT-like encoder: no encoder.layer[i].attention.self")
    return [layer.attention for layer in layers]


def head_counts(model: nn.Module) -> list[int]:
    """Attention heads left in each layer."""
    return [int(att.self.num_attention_heads) for att in attention_layers(model)]


@contextlib.contextmanager
def head_gates(model: nn.Module, gates: Tensor) -> Iterator[Tensor]:
    """Multiply the output of head ``h`` of layer ``l`` by ``gates[l, h]`` while the context is open.

    The gate sits where the heads are concatenated, at the input of the attention output projection; a gate of
    0 is exactly a removed head (the context vectors of a head enter the model only through those columns).
    ``gates`` of shape ``(batch, layers, heads)`` give every example of the batch its own gates (what
    :func:`head_importance` differentiates to get one gradient per example)."""
    atts = attention_layers(model)
    counts = head_counts(model)
    if tuple(gates.shape[-2:]) != (len(atts), max(counts)) or gates.dim() not in (2, 3):
        raise ArgumentError(f"gates must have shape (layers, heads) = ({len(atts)}, {max(counts)}) or "
                            f"(batch, layers, heads), got {tuple(gates.shape)}")
    handles = []
    for layer, att in enumerate(atts):
        size = att.self.attention_head_size

        def hook(module, args, layer=layer, size=size, heads=counts[layer]):
            (x,) = args
            g = gates[..., layer, :heads].to(x.device, x.dtype)
            if g.dim() == 2:  # per example: (batch, heads) -> (batch, 1 position, heads, 1)
                if g.size(0) != x.size(0):
                    raise ArgumentError(f"per-example gates for {g.size(0)} examples, the batch has {x.size(0)}")
                g = g[:, None, :]
            shaped = x.view(*x.shape[:-1], heads, size) * g[..., None]
            return (shaped.view(x.shape),)

        handles.append(att.output.dense.register_forward_pre_hook(hook))
    try:
        yield gates
    finally:
        for h in handles:
            h.remove()


def _batches_loss(model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> Iterator[Tensor]:
    device = next(model.parameters()).device
    for batch in batches:
        out = model(**{k: v.to(device) for k, v in batch.items()})
        yield out.loss


def head_importance(model: nn.Module, batches: Iterable[dict[str, Tensor]], normalize: bool = True,
                    per_example: bool = True) -> Tensor:
    """Michel et al. (2019) head importance ``I[l, h] = E_x |∂L(x)/∂ξ_{l,h}|`` (a ``(layers, heads)`` tensor).

    ``batches``: dicts of model inputs with ``labels`` (the loss is the model's, a mean over the batch).
    ``per_example`` (the paper's formula): every example gets its own gates, so one backward pass of the
    batch's summed loss gives every example's gradient, and their absolute values are averaged over all
    examples. ``per_example=False`` is what the bertology scripts compute instead: ``|∂(batch-mean loss)/∂ξ|``
    summed over the batches, where gradients of opposite sign cancel inside a batch (the two agree for
    batches of one example, up to the sum-versus-mean scale). With ``normalize`` each layer's scores are
    divided by their L2 norm, as in the paper, so layers compare. The model's weights get no gradient; it
    is put in eval mode (no dropout)."""
    model.eval()
    counts = head_counts(model)
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    importance = torch.zeros(len(counts), max(counts), dtype=dtype)
    examples = 0
    for batch in batches:
        n = int(next(iter(batch.values())).size(0))
        shape = (n, len(counts), max(counts)) if per_example else (len(counts), max(counts))
        gates = torch.ones(shape, requires_grad=True, dtype=dtype)
        with head_gates(model, gates):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            # the model's loss is a batch mean: times n it is the sum, whose gradient per gate is per example
            (grad,) = torch.autograd.grad(loss * n if per_example else loss, gates)
        importance += (grad.abs().sum(0) if per_example else grad.abs()).detach()
        examples += n
    if per_example:
        importance = importance / max(1, examples)
    if normalize:
        importance = importance / importance.norm(dim=1, keepdim=True).clamp_min(1e-20)
    return importance


def first_order_removal(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The first-order estimate of what removing each head does to the loss on ``batch``:
    ``L(ξ_h = 0) - L(ξ = 1) ≈ -∂L/∂ξ_h`` (signed; a ``(layers, heads)`` tensor), to set against the loss
    actually measured with the head removed (``masked_head_losses(model, batch, 0.0)`` minus the full loss)."""
    model.eval()
    counts = head_counts(model)
    dtype = next(model.parameters()).dtype
    gates = torch.ones(len(counts), max(counts), requires_grad=True, dtype=dtype)
    with head_gates(model, gates):
        (grad,) = torch.autograd.grad(next(_batches_loss(model, [batch])), gates)
    return -grad.detach()


def masked_head_losses(model: nn.Module, batch: dict[str, Tensor], value: float = 0.0) -> Tensor:
    """Brute force: the loss on ``batch`` with gate ``ξ_{l,h}`` set to ``value`` (others 1), one forward
    pass per head; a ``(layers, heads)`` tensor. ``value=0`` is the loss with that head masked out."""
    model.eval()
    counts = head_counts(model)
    out = torch.empty(len(counts), max(counts), dtype=torch.float64)
    with torch.no_grad():
        for layer in range(len(counts)):
            for head in range(counts[layer]):
                gates = torch.ones(len(counts), max(counts), dtype=torch.float64)
                gates[layer, head] = value
                with head_gates(model, gates):
                    out[layer, head] = next(_batches_loss(model, [batch])).double()
    return out


def prune_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Remove attention heads in place: ``{layer: [head, ...]}``. The Q/K/V rows and output-projection
    columns of those heads are cut with ``transformers.pytorch_utils.prune_linear_layer`` (transformers 5
    dropped ``PreTrainedModel.prune_heads``, so this is it for BERT-like models); at least one head stays."""
    from transformers.pytorch_utils import prune_linear_layer

    atts = attention_layers(model)
    for layer, drop in heads.items():
        att = atts[int(layer)]
        n, size = att.self.num_attention_heads, att.self.attention_head_size
        drop = sorted({int(h) for h in drop})
        if not drop:
            continue
        if any(not 0 <= h < n for h in drop) or len(drop) >= n:
            raise ArgumentError(f"layer {layer} has {n} heads: cannot remove {drop} (keep at least one)")
        keep = torch.tensor([h * size + i for h in range(n) if h not in drop for i in range(size)])
        att.self.query = prune_linear_layer(att.self.query, keep)
        att.self.key = prune_linear_layer(att.self.key, keep)
        att.self.value = prune_linear_layer(att.self.value, keep)
        att.output.dense = prune_linear_layer(att.output.dense, keep, dim=1)
        att.self.num_attention_heads = n - len(drop)
        att.self.all_head_size = att.self.num_attention_heads * size
    return model


def least_important_heads(importance: Tensor, counts: list[int], fraction: float) -> dict[int, list[int]]:
    """The ``fraction`` of heads with the lowest importance, over all layers, as ``{layer: [heads]}``; each
    layer keeps at least one head."""
    if not 0.0 <= fraction < 1.0:
        raise ArgumentError(f"fraction of heads to prune must be in [0, 1), got {fraction}")
    scored = sorted((float(importance[layer, h]), layer, h) for layer, n in enumerate(counts) for h in range(n))
    budget = round(fraction * sum(counts))
    chosen: dict[int, list[int]] = {}
    left = list(counts)
    for _, layer, head in scored:
        if budget == 0:
            break
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
            budget -= 1
    return chosen


def prune_least_important_heads(model: nn.Module, batches: list[dict[str, Any]], fraction: float) -> nn.Module:
    """A copy of ``model`` without the ``fraction`` least important heads (:func:`head_importance` on
    ``batches``)."""
    model = copy.deepcopy(model)
    importance = head_importance(model, batches)
    return prune_heads(model, least_important_heads(importance, head_counts(model), fraction))
