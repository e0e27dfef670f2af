"""Explaining a fine-tuned classifier's predictions, and checking the explanations (chapter 12).

An attribution gives each input token a score for "how much it pushed the prediction". Drawing one is easy;
the course checks each method twice:

* **axioms**: integrated gradients (Sundararajan et al. 2017) must satisfy *completeness* (the scores sum to
  ``f(x) − f(baseline)``), up to the error of the numerical integral, and equal captum's implementation;
* **faithfulness**: deleting the tokens a method ranks highest should make the prediction collapse faster
  than deleting random tokens (deletion curve), and inserting them first should restore it faster
  (insertion curve). Each curve is summarised by its AOPC (Samek et al. 2017), one number per sentence, and
  two methods are compared on the same sentences with :func:`lmcourse.spread.compare` (``paired=True``: a t
  interval of the per-sentence differences; ``lmcourse.spread.verdict_key`` names the verdict).

Attention is not an attribution by construction; :func:`raw_attention` and :func:`attention_rollout`
(Abnar & Zuidema 2020) turn it into token scores so that it can be put through the same faithfulness test.

Probing (:func:`layer_probe`, :func:`probe_selectivity`) asks a different question: what can a linear model
read off each layer's hidden states, compared with a control task of random labels (Hewitt & Liang 2019)?

Every function works on a Hugging Face BERT-style classifier (``model(input_ids=..., attention_mask=...)``
returning ``.logits``; ``inputs_embeds`` accepted) in eval mode; one sentence is a ``(1, T)`` tensor without
padding, a batch is ``(B, T)`` with an attention mask.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcourse.errors import ArgumentError, UnknownNameError

INTEGRATION_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
OUTPUTS = ("prob", "logit", "log_prob")
CURVE_KINDS = ("deletion", "insertion")


# ------------------------------------------------------------------------------------------ helpers
def _check_eval(model: nn.Module) -> None:
    if model.training:
        raise ArgumentError("the model is in training mode (dropout makes every attribution random); "
                            "call model.eval() first")


def _as_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ArgumentError(f"input_ids must have shape (T,) or (B, T), got {tuple(ids.shape)}")
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
    if mask.dim() == 1:
        mask = mask[None]
    if mask.shape != ids.shape:
        raise ArgumentError(f"attention_mask {tuple(mask.shape)} must have the shape of input_ids {tuple(ids.shape)}")
    return ids, mask


def _targets(target: int | Sequence[int] | torch.Tensor, batch: int) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long)
    if t.dim() == 0:
        t = t.repeat(batch)
    if t.shape != (batch,):
        raise ArgumentError(f"target must be one class index or one per example ({batch}), got {tuple(t.shape)}")
    return t


def class_score(logits: torch.Tensor, target: torch.Tensor, output: str = "prob") -> torch.Tensor:
    """The scalar per example that is explained: the target class's probability (default), logit or log-prob."""
    if output not in OUTPUTS:
        raise UnknownNameError(f"unknown output {output!r}; choose one of {OUTPUTS}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[-1]):
        raise ArgumentError(f"target classes {target.tolist()} out of range for {logits.shape[-1]} outputs")
    if output == "prob":
        z = logits.softmax(-1)
    elif output == "log_prob":
        z = logits.log_softmax(-1)
    else:
        z = logits
    return z.gather(-1, target[:, None].to(z.device))[:, 0]


def embeddings_score(model: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor,
                     output: str = "prob") -> torch.Tensor:
    """``f`` evaluated at given word embeddings: BERT adds the position and segment embeddings itself."""
    return class_score(model(inputs_embeds=embeds, attention_mask=attention_mask).logits, target, output)


def predict_proba(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """Class probabilities of a batch of token ids (rows in chunks of ``batch_size``)."""
    ids, mask = _as_batch(input_ids, attention_mask)
    out = []
    with torch.inference_mode():
        for s in range(0, len(ids), batch_size):
            out.append(model(input_ids=ids[s:s + batch_size], attention_mask=mask[s:s + batch_size]
                             ).logits.softmax(-1).numpy())
    return np.concatenate(out)


def captum_forward(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(input_ids, attention_mask) -> class probabilities``: the forward function captum's attribution
    classes call (with ``additional_forward_args=(attention_mask,)`` and ``target=class``)."""
    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.softmax(-1)
    return forward


def encode(tokenizer, texts: Sequence[str], max_length: int = 64) -> list[dict[str, torch.Tensor]]:
    """One ``{"input_ids", "attention_mask"}`` of shape ``(1, T)`` per text, without padding."""
    return [{k: v for k, v in tokenizer(t, truncation=True, max_length=max_length, return_tensors="pt").items()
             if k in ("input_ids", "attention_mask")} for t in texts]


BASELINE_TOKENS = ("pad", "mask", "unk")


def reference_ids(input_ids: torch.Tensor, tokenizer, token: str = "pad") -> torch.Tensor:
    """An IG baseline for text: every token replaced by the tokenizer's ``[PAD]`` (``token="pad"``, the usual
    one), ``[MASK]`` (``"mask"``: the perturbation of the faithfulness test and of SHAP's text masker) or
    ``[UNK]`` (``"unk"``), the special tokens kept."""
    if token not in BASELINE_TOKENS:
        raise UnknownNameError(f"unknown baseline token {token!r}; choose one of {BASELINE_TOKENS}")
    replace = getattr(tokenizer, f"{token}_token_id", None)
    if replace is None:
        raise ArgumentError(f"the tokenizer has no {token} token")
    ids = torch.as_tensor(input_ids).clone()
    special = torch.tensor([i in set(tokenizer.all_special_ids) for i in ids.flatten().tolist()]).view(ids.shape)
    ids[~special] = int(replace)
    return ids


# ------------------------------------------------------------------------------------------ gradients
def gradient_x_input(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     target: int | Sequence[int] | torch.Tensor, output: str = "prob") -> torch.Tensor:
    """Per-token ``∑_d x_d · ∂f/∂x_d`` at the word embeddings ``x``: the first-order Taylor term (B, T)."""
    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    t = _targets(target, len(ids))
    x = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(embeddings_score(model, x, mask, t, output).sum(), x)
    return (x * grad).sum(-1).detach() * mask


def integration_points(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``α_s`` in [0, 1] and weights ``w_s`` with ``∫₀¹ g(α) dα ≈ ∑ w_s g(α_s)``.

    Gauss-Legendre (captum's default) is exact for polynomials of degree ``2·steps − 1``; the Riemann rules
    have error ``O(1/steps)`` (left, right) or ``O(1/steps²)`` (middle, trapezoid). ``riemann_trapezoid`` is
    the textbook rule (weights ``1/(steps−1)``, halved at the ends); captum's variant of that name uses
    ``1/steps``."""
    if method not in INTEGRATION_METHODS:
        raise UnknownNameError(f"unknown integration method {method!r}; choose one of {INTEGRATION_METHODS}")
    minimum = 2 if method == "riemann_trapezoid" else 1
    if int(steps) != steps or steps < minimum:
        raise ArgumentError(f"steps must be an integer ≥ {minimum} for {method}, got {steps}")
    n = int(steps)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (x + 1.0), 0.5 * w
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n), w
    start = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n) + start) / n, np.full(n, 1.0 / n)


def _baseline_batch(model: nn.Module, ids: torch.Tensor, baseline_ids: torch.Tensor | None) -> torch.Tensor:
    """The baseline token ids of a batch: ``baseline_ids`` if given, else ``[PAD]`` at every position (captum's
    default for token ids); its shape must be that of ``ids``."""
    if baseline_ids is None:
        pad = getattr(model.config, "pad_token_id", None)
        baseline_ids = torch.full_like(ids, 0 if pad is None else int(pad))
    base, _ = _as_batch(baseline_ids, None)
    if base.shape != ids.shape:
        raise ArgumentError(f"baseline_ids {tuple(base.shape)} must have the shape of input_ids {tuple(ids.shape)}")
    return base


def integrated_gradients(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         target: int | Sequence[int] | torch.Tensor, baseline_ids: torch.Tensor | None = None,
                         steps: int = 50, method: str = "gausslegendre", output: str = "prob",
                         internal_batch_size: int | None = None) -> torch.Tensor:
    """Integrated gradients on the word embeddings, summed over the hidden dimension (B, T).

    ``IG_i = (x_i − x'_i) · ∫₀¹ ∂f(x' + α(x − x'))/∂x_i dα`` with ``x`` the word embeddings of ``input_ids``
    and ``x'`` those of ``baseline_ids`` (default: ``[PAD]`` at every position, captum's default for token
    ids; :func:`reference_ids` keeps ``[CLS]``/``[SEP]``). The path for one sentence is one batch of
    ``steps`` inputs (split into ``internal_batch_size`` rows)."""
    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    t = _targets(target, len(ids))
    base = _baseline_batch(model, ids, baseline_ids)
    alphas, weights = integration_points(steps, method)
    emb = model.get_input_embeddings()
    chunk = internal_batch_size or len(alphas)
    out = torch.zeros(ids.shape, dtype=emb.weight.dtype)
    for b in range(len(ids)):
        with torch.no_grad():
            x, x0 = emb(ids[b:b + 1]), emb(base[b:b + 1])
        a = torch.as_tensor(alphas, dtype=x.dtype)[:, None, None]
        w = torch.as_tensor(weights, dtype=x.dtype)[:, None, None]
        total = torch.zeros_like(x[0])
        for s in range(0, len(alphas), chunk):
            path = (x0 + a[s:s + chunk] * (x - x0)).requires_grad_(True)
            n = len(path)
            score = embeddings_score(model, path, mask[b:b + 1].expand(n, -1), t[b:b + 1].expand(n), output)
            (grad,) = torch.autograd.grad(score.sum(), path)
            total += (w[s:s + chunk] * grad).sum(0)
        out[b] = ((x[0] - x0[0]) * total).sum(-1) * mask[b]
    return out


def captum_integrated_gradients(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                                target: int | Sequence[int] | torch.Tensor, baseline_ids: torch.Tensor,
                                steps: int = 50, method: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """captum's ``LayerIntegratedGradients`` on the word embeddings, summed over the hidden dimension (B, T),
    and its convergence delta (B,): ``Σ_i IG_i − (f(x) − f(x'))``, what :func:`completeness_gap` computes."""
    from captum.attr import LayerIntegratedGradients

    ids, mask = _as_batch(input_ids, attention_mask)
    lig = LayerIntegratedGradients(captum_forward(model), model.get_input_embeddings())
    base = _baseline_batch(model, ids, baseline_ids)
    attr, delta = lig.attribute(ids, baselines=base, target=_targets(target, len(ids)),
                                additional_forward_args=(mask,), n_steps=steps, method=method,
                                return_convergence_delta=True)
    return (attr.sum(-1) * mask).detach(), delta.detach()


def completeness_gap(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     target: int | Sequence[int] | torch.Tensor, attributions: torch.Tensor,
                     baseline_ids: torch.Tensor | None = None, output: str = "prob") -> torch.Tensor:
    """``∑_i IG_i − (f(x) − f(x'))`` per example: zero for the exact integral (the completeness axiom)."""
    ids, mask = _as_batch(input_ids, attention_mask)
    t = _targets(target, len(ids))
    base = _baseline_batch(model, ids, baseline_ids)
    attr = torch.as_tensor(attributions)
    if attr.dim() == 1:
        attr = attr[None]
    if attr.shape != ids.shape:
        raise ArgumentError(f"attributions {tuple(attr.shape)} must have the shape of input_ids {tuple(ids.shape)}")
    with torch.no_grad():
        fx = class_score(model(input_ids=ids, attention_mask=mask).logits, t, output)
        f0 = class_score(model(input_ids=base, attention_mask=mask).logits, t, output)
    return (attr.sum(-1).to(fx.dtype) - (fx - f0)).detach()


# ------------------------------------------------------------------------------------------ attention
def attentions(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, ...]:
    """Every layer's attention probabilities, each ``(B, heads, T, T)`` (rows: queries, columns: keys)."""
    ids, mask = _as_batch(input_ids, attention_mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    if not getattr(out, "attentions", None) or out.attentions[0] is None:
        raise ArgumentError("the model returned no attention probabilities: load it with "
                            "attn_implementation='eager' (fused SDPA kernels never form the matrix)")
    return tuple(a.detach() for a in out.attentions)


def attentions_from_queries_keys(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                                 ) -> tuple[torch.Tensor, ...]:
    """Every layer's attention probabilities recomputed from the model's own queries and keys: layer ``l``'s
    input hidden states (``output_hidden_states``) through its query and key projections,
    ``softmax(Q Kᵀ / √d_head + padding bias)`` per head, ``(B, heads, T, T)`` per layer. An independent path to
    what :func:`attentions` reads from ``output_attentions``, for BERT-family encoders
    (``model.base_model.encoder.layer[l].attention.self`` with ``query``/``key``)."""
    ids, mask = _as_batch(input_ids, attention_mask)
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0].attention, "self"):
        raise ArgumentError("attentions_from_queries_keys needs a BERT-family encoder "
                            "(base_model.encoder.layer[l].attention.self)")
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        out = []
        for layer, h in zip(layers, hidden):
            sa = layer.attention.self
            heads = model.config.num_attention_heads
            d = h.shape[-1] // heads

            def split(x, heads=heads, d=d):
                return x.view(x.shape[0], x.shape[1], heads, d).transpose(1, 2)

            scores = split(sa.query(h)) @ split(sa.key(h)).transpose(-1, -2) / math.sqrt(d)
            scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
            out.append(scores.softmax(-1))
    return tuple(out)


def _stack_attentions(attns: Sequence[torch.Tensor] | torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(attns, np.ndarray | torch.Tensor):
        a = torch.as_tensor(attns)
    else:
        if len(attns) == 0:
            raise ArgumentError("no attention layers given")
        a = torch.stack([torch.as_tensor(x) for x in attns])
    if a.dim() == 4:  # (layers, heads, T, T): one example
        a = a[:, None]
    if a.dim() != 5 or a.shape[-1] != a.shape[-2]:
        raise ArgumentError(f"attentions must be layers of (B, heads, T, T), got shape {tuple(a.shape)}")
    return a


def raw_attention(attns: Sequence[torch.Tensor] | torch.Tensor | np.ndarray, layer: int = -1) -> torch.Tensor:
    """The ``[CLS]`` query's attention in one layer (default: the last), averaged over heads: (B, T)."""
    a = _stack_attentions(attns)
    return a[layer].mean(1)[:, 0]


def attention_rollout(attns: Sequence[torch.Tensor] | torch.Tensor | np.ndarray, add_residual: bool = True
                      ) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each position (B, T, T).

    Per layer: average the heads, add the residual connection as ``A' = ½A + ½I``, renormalise rows; then
    multiply the layers, the last on the left: ``R = A'_L ⋯ A'_1``. ``R[:, 0]`` scores the tokens for
    ``[CLS]``, the position the classifier reads."""
    a = _stack_attentions(attns).mean(2)  # (L, B, T, T)
    if add_residual:
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
    rollout = a[0]
    for layer in a[1:]:
        rollout = layer @ rollout
    return rollout


# ------------------------------------------------------------------------------------------ faithfulness
def _protected(ids: torch.Tensor, mask: torch.Tensor, protected: torch.Tensor | None) -> torch.Tensor:
    if protected is None:  # [CLS] and [SEP] of a single BERT sentence: the first and last real positions
        protected = torch.zeros_like(ids, dtype=torch.bool)
        real = mask[0].nonzero()[:, 0]
        protected[0, real[0]] = True
        protected[0, real[-1]] = True
    protected = torch.as_tensor(protected, dtype=torch.bool)
    return protected if protected.dim() == 2 else protected[None]


def _ranking(scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Positions of ``candidates`` sorted by decreasing score (ties: left to right)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    pos = candidates.nonzero()[:, 0]
    order = torch.sort(-s[pos], stable=True).indices
    return pos[order]


def _counts(n: int, points: int | None) -> list[int]:
    if points is None:
        return list(range(n + 1))
    if points < 2:
        raise ArgumentError(f"a curve needs at least 2 points (none and all tokens changed), got {points}")
    return [round(f * n) for f in np.linspace(0.0, 1.0, points)]


def perturbed_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, scores: torch.Tensor,
                     kind: str = "deletion", replace_id: int = 103, protected: torch.Tensor | None = None,
                     points: int | None = None) -> torch.Tensor:
    """The inputs a deletion or insertion curve scores, one row per point (P, T).

    Deletion: row k has the k highest-scoring tokens replaced by ``replace_id`` (``[MASK]``, the length and
    positions stay); insertion: row k has every token replaced except the k highest-scoring ones. Protected
    positions (default ``[CLS]``/``[SEP]``) never change. ``points=None``: one row per token count
    0 … n; an integer: that many evenly spaced fractions of the n tokens."""
    if kind not in CURVE_KINDS:
        raise UnknownNameError(f"unknown curve kind {kind!r}; choose one of {CURVE_KINDS}")
    ids, mask = _as_batch(input_ids, attention_mask)
    if len(ids) != 1:
        raise ArgumentError(f"perturbed_inputs takes one sentence (1, T), got a batch of {len(ids)}")
    s = torch.as_tensor(scores).flatten()
    if s.numel() != ids.shape[1]:
        raise ArgumentError(f"{s.numel()} scores for {ids.shape[1]} tokens: one score per token is needed")
    candidates = (mask[0] > 0) & ~_protected(ids, mask, protected)[0]
    order = _ranking(s, candidates)
    rows = []
    for k in _counts(len(order), points):
        row = ids[0].clone()
        if kind == "deletion":
            row[order[:k]] = replace_id
        else:
            row[order[k:]] = replace_id
        rows.append(row)
    return torch.stack(rows)


def _curve(model, input_ids, attention_mask, scores, kind, target, replace_id, protected, points, batch_size):
    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    rows = perturbed_inputs(ids, mask, scores, kind, replace_id, protected, points)
    if target is None:
        target = int(predict_proba(model, ids, mask).argmax(-1)[0])
    return predict_proba(model, rows, mask.expand(len(rows), -1), batch_size)[:, int(target)]


def deletion_curve(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   scores: torch.Tensor, target: int | None = None, replace_id: int = 103,
                   protected: torch.Tensor | None = None, points: int | None = None, batch_size: int = 64
                   ) -> np.ndarray:
    """Probability of ``target`` (default: the predicted class) as the top-scored tokens are masked, one by
    one (or at ``points`` evenly spaced fractions); a faithful ranking makes it fall fast."""
    return _curve(model, input_ids, attention_mask, scores, "deletion", target, replace_id, protected, points,
                  batch_size)


def insertion_curve(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    scores: torch.Tensor, target: int | None = None, replace_id: int = 103,
                    protected: torch.Tensor | None = None, points: int | None = None, batch_size: int = 64
                    ) -> np.ndarray:
    """Probability of ``target`` as the top-scored tokens are put back into a fully masked sentence; a
    faithful ranking makes it rise fast."""
    return _curve(model, input_ids, attention_mask, scores, "insertion", target, replace_id, protected, points,
                  batch_size)


def aopc(curve: Sequence[float] | np.ndarray, kind: str = "deletion") -> float:
    """Area over the perturbation curve (Samek et al. 2017): ``1/(K+1) ∑_{k=0}^{K} (f(x⁰) − f(xᵏ))``.

    For an insertion curve the sign is turned, ``mean_k (f(xᵏ) − f(x⁰))``, so that for both kinds larger
    means more faithful (the prediction moves faster in the ranking's order)."""
    if kind not in CURVE_KINDS:
        raise UnknownNameError(f"unknown curve kind {kind!r}; choose one of {CURVE_KINDS}")
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or len(c) < 2:
        raise ArgumentError(f"aopc needs a 1-D curve of at least 2 points, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ArgumentError("aopc got a curve with non-finite values")
    d = c[0] - c if kind == "deletion" else c - c[0]
    return float(d.mean())


def random_scores(length: int, seed: int) -> torch.Tensor:
    """Scores that rank the tokens in a random order: the baseline every attribution must beat."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(int(length), generator=g)


def faithfulness(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 scores: Mapping[str, torch.Tensor], target: int | None = None, replace_id: int = 103,
                 protected: torch.Tensor | None = None, points: int | None = None, batch_size: int = 128
                 ) -> dict[str, dict[str, Any]]:
    """Deletion and insertion curves and their AOPC for several rankings of one sentence.

    All rows of all methods go through the model in shared batches, each distinct row once; returns
    ``{method: {"deletion": curve, "insertion": curve, "deletion_aopc": ..., "insertion_aopc": ...}}``."""
    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    if target is None:
        target = int(predict_proba(model, ids, mask).argmax(-1)[0])
    blocks, names = [], []
    for name, s in scores.items():
        for kind in CURVE_KINDS:
            blocks.append(perturbed_inputs(ids, mask, s, kind, replace_id, protected, points))
            names.append((name, kind))
    rows = torch.cat(blocks)
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)  # the end points are shared by every method
    probs = predict_proba(model, unique, mask.expand(len(unique), -1), batch_size)[inverse.numpy(), int(target)]
    out: dict[str, dict[str, Any]] = {}
    start = 0
    for (name, kind), block in zip(names, blocks):
        curve = probs[start:start + len(block)]
        start += len(block)
        entry = out.setdefault(name, {})
        entry[kind] = curve
        entry[f"{kind}_aopc"] = aopc(curve, kind)
    return out


ERASER_BINS = (0.01, 0.05, 0.10, 0.20, 0.50)


def eraser_counts(n: int, bins: Sequence[float] = ERASER_BINS) -> list[int]:
    """Tokens in each ERASER bin of a sentence of ``n`` tokens: ``ceil(k · n)`` (at least one token, so that
    the 1 % bin of a short sentence is its top token, not nothing)."""
    if any(not 0 < b <= 1 for b in bins):
        raise ArgumentError(f"ERASER bins are fractions in (0, 1], got {tuple(bins)}")
    return [min(n, max(1, math.ceil(b * n - 1e-9))) for b in bins]


def eraser_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  scores: Mapping[str, torch.Tensor], target: int | None = None,
                  bins: Sequence[float] = ERASER_BINS, protected: torch.Tensor | None = None, pad_id: int = 0,
                  batch_size: int = 128) -> dict[str, dict[str, Any]]:
    """ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020) of several rankings of one sentence.

    For each bin ``k`` (a fraction of the unprotected tokens, :func:`eraser_counts`), the top-``k`` tokens
    of the ranking are the rationale. The tokens are *removed*, not masked (the sentence gets shorter, as in
    ERASER): comprehensiveness ``f(x) − f(x ∖ rationale)`` (large: the model needed the rationale) and
    sufficiency ``f(x) − f(rationale only)`` (small: the rationale alone keeps the prediction), with the
    protected ``[CLS]``/``[SEP]`` always kept; each score is the mean over the bins (ERASER's AOPC form).
    Returns ``{method: {"comprehensiveness", "sufficiency", "comprehensiveness_bins",
    "sufficiency_bins"}}``."""
    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    if len(ids) != 1:
        raise ArgumentError(f"eraser_scores takes one sentence (1, T), got a batch of {len(ids)}")
    if target is None:
        target = int(predict_proba(model, ids, mask).argmax(-1)[0])
    keep_always = _protected(ids, mask, protected)[0] & (mask[0] > 0)
    candidates = (mask[0] > 0) & ~keep_always
    counts = eraser_counts(int(candidates.sum()), bins)
    rows: list[torch.Tensor] = [ids[0][mask[0] > 0]]
    for s in scores.values():
        st = torch.as_tensor(s).flatten()
        if st.numel() != ids.shape[1]:
            raise ArgumentError(f"{st.numel()} scores for {ids.shape[1]} tokens: one score per token is needed")
        order = _ranking(st, candidates)
        for k in counts:
            top = torch.zeros_like(candidates)
            top[order[:k]] = True
            rows.append(ids[0][(mask[0] > 0) & ~top])  # comprehensiveness: the rationale removed
            rows.append(ids[0][keep_always | top])  # sufficiency: the rationale alone
    width = max(len(r) for r in rows)
    batch = torch.full((len(rows), width), int(pad_id), dtype=ids.dtype)
    batch_mask = torch.zeros((len(rows), width), dtype=mask.dtype)
    for i, r in enumerate(rows):
        batch[i, :len(r)] = r
        batch_mask[i, :len(r)] = 1
    p = predict_proba(model, batch, batch_mask, batch_size)[:, int(target)].astype(np.float64)
    full, rest = p[0], p[1:].reshape(len(scores), len(counts), 2)
    out = {}
    for (name, _), r in zip(scores.items(), rest):
        comp, suff = full - r[:, 0], full - r[:, 1]
        out[name] = {"comprehensiveness": float(comp.mean()), "sufficiency": float(suff.mean()),
                     "comprehensiveness_bins": comp, "sufficiency_bins": suff}
    return out


def mean_curve(curves: Sequence[np.ndarray], points: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Curves of different lengths resampled on ``points`` fractions of tokens changed, then averaged."""
    grid = np.linspace(0.0, 1.0, points)
    if not curves:
        raise ArgumentError("mean_curve got no curves")
    return grid, np.mean([np.interp(grid, np.linspace(0.0, 1.0, len(c)), c) for c in curves], axis=0)


# ------------------------------------------------------------------------------------------ SHAP
def shap_attributions(model: nn.Module, tokenizer, texts: Sequence[str], targets: Sequence[int] | None = None,
                      max_evals: int = 200, max_length: int = 64, batch_size: int = 64, seed: int = 0
                      ) -> list[np.ndarray]:
    """SHAP values (``shap.maskers.Text`` on the model's tokenizer), one array per text aligned with
    ``tokenizer(text)["input_ids"]`` (special tokens included).

    The masker replaces hidden tokens by ``[MASK]``; shap's Partition explainer computes Owen values on a
    hierarchy of token groups, at most ``max_evals`` model calls per sentence, which is what makes SHAP the
    expensive method. They sum to ``f(text) − f(every token masked)`` for any ``max_evals`` (the hierarchy's
    credit is split exactly), so that sum checks nothing; :func:`exact_shapley` gives the Shapley values they
    approximate."""
    import shap

    _check_eval(model)

    def proba(batch: Sequence[str]) -> np.ndarray:
        enc = tokenizer(list(batch), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return predict_proba(model, enc["input_ids"], enc["attention_mask"], batch_size)

    # seed= reaches shap's own generator (the Partition explainer's clustering is deterministic anyway); the
    # global numpy state is left alone
    explainer = shap.Explainer(proba, shap.maskers.Text(tokenizer), algorithm="partition", seed=seed)
    explanation = explainer(list(texts), max_evals=max_evals, batch_size=batch_size, silent=True)
    out = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        values = np.asarray(explanation.values[i])
        if values.shape[0] != len(ids):
            raise ArgumentError(f"SHAP split text {i} into {values.shape[0]} tokens, the tokenizer into {len(ids)}; "
                                "texts longer than max_length cannot be aligned")
        t = int(proba([text]).argmax(-1)[0]) if targets is None else int(targets[i])
        out.append(values[:, t].astype(np.float64))
    return out


def exact_shapley(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, target: int,
                  replace_id: int, protected: torch.Tensor | None = None, max_players: int = 10,
                  batch_size: int = 256) -> np.ndarray:
    """Exact Shapley values of the tokens of one sentence (1, T), from scratch: ``(T,)``, 0 at protected
    positions (default ``[CLS]``/``[SEP]``).

    The players are the ``n`` other tokens; a coalition ``S`` is scored by ``v(S) = f`` (the ``target``
    class's probability) of the sentence with every player outside ``S`` replaced by ``replace_id`` (SHAP's
    ``[MASK]`` text masker). Token ``i`` gets the *weighted* average of its marginal contributions,

        ``φ_i = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S))``,

    weights under which every coalition size counts equally. All ``2^n`` coalitions go through the model, so
    ``n`` is capped by ``max_players``."""
    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    if len(ids) != 1:
        raise ArgumentError(f"exact_shapley takes one sentence (1, T), got a batch of {len(ids)}")
    players = ((mask[0] > 0) & ~_protected(ids, mask, protected)[0]).nonzero()[:, 0]
    n = len(players)
    if n > max_players:
        raise ArgumentError(f"{n} tokens need 2^{n} model calls for exact Shapley values; at most "
                            f"{max_players} players (raise max_players or pick a shorter sentence)")
    codes = np.arange(2 ** n)
    member = (codes[:, None] >> np.arange(n)[None]) & 1  # (2^n, n): player j in coalition code
    rows = ids[0].repeat(len(codes), 1)
    for j, pos in enumerate(players.tolist()):
        rows[torch.as_tensor(member[:, j] == 0), pos] = int(replace_id)
    v = predict_proba(model, rows, mask.expand(len(rows), -1), batch_size)[:, int(target)].astype(np.float64)
    size = member.sum(1)
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) if k < n else 0.0
                       for k in range(n + 1)])
    phi = np.zeros(ids.shape[1])
    for j, pos in enumerate(players.tolist()):
        without = codes[member[:, j] == 0]
        phi[pos] = float((weight[size[without]] * (v[without | (1 << j)] - v[without])).sum())
    return phi


def shap_exact(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, target: int,
               replace_id: int, protected: torch.Tensor | None = None, batch_size: int = 256) -> np.ndarray:
    """The same Shapley values as :func:`exact_shapley`, computed by ``shap`` (the reference): Kernel SHAP
    (``shap.KernelExplainer``) given a budget of every one of the ``2^n`` coalitions, whose weighted linear
    regression then returns the Shapley values exactly (Lundberg & Lee 2017, Theorem 2). The players are the
    unprotected positions as features, a hidden one takes the background value ``replace_id`` (one background
    row), and the model maps a row of player ids back to the full sentence. ``(T,)``, 0 at protected
    positions. (shap's Exact explainer computes the same, but compiles with numba for half a minute first.)"""
    import shap

    _check_eval(model)
    ids, mask = _as_batch(input_ids, attention_mask)
    players = ((mask[0] > 0) & ~_protected(ids, mask, protected)[0]).nonzero()[:, 0]

    def f(rows: np.ndarray) -> np.ndarray:
        full = ids[0].repeat(len(rows), 1)
        full[:, players] = torch.as_tensor(np.rint(np.asarray(rows)).astype(np.int64), dtype=full.dtype)
        return predict_proba(model, full, mask.expand(len(full), -1), batch_size)[:, int(target)]

    x = ids[0, players].numpy()[None].astype(np.float64)
    explainer = shap.KernelExplainer(f, np.full_like(x, float(replace_id)))
    values = np.asarray(explainer.shap_values(x, nsamples=2 ** len(players), silent=True)).reshape(-1)
    out = np.zeros(ids.shape[1])
    out[players.numpy()] = values
    return out


# ------------------------------------------------------------------------------------------ probing
# ------------------------------------------------------------------------------------------ probing
def hidden_states(model: nn.Module, tokenizer, texts: Sequence[str], max_length: int = 64, pooling: str = "mean",
                  batch_size: int = 64) -> np.ndarray:
    """Sentence vectors of every layer, ``(layers + 1, N, hidden)``: index 0 is the embedding layer.

    ``pooling="mean"`` averages the non-padding positions, ``"cls"`` takes position 0."""
    if pooling not in ("mean", "cls"):
        raise UnknownNameError(f"unknown pooling {pooling!r}; choose 'mean' or 'cls'")
    model = model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[s:s + batch_size]), padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hs = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       output_hidden_states=True).hidden_states
            h = torch.stack(hs)  # (L+1, B, T, D)
            if pooling == "cls":
                out.append(h[:, :, 0].float().numpy())
            else:
                m = enc["attention_mask"][None, :, :, None].to(h.dtype)
                out.append(((h * m).sum(2) / m.sum(2)).float().numpy())
    return np.concatenate(out, axis=1)


def length_bins(texts: Sequence[str], edges: Sequence[float]) -> np.ndarray:
    """Sentence length in words, as the bin index of ``edges`` (``np.digitize``; e.g. train-set tertiles)."""
    return np.digitize([len(t.split()) for t in texts], np.asarray(edges))


def word_presence(texts: Sequence[str], word: str) -> np.ndarray:
    """1 where ``word`` is one of the whitespace-separated words of the lower-cased text, else 0."""
    w = word.lower()
    return np.array([int(w in t.lower().split()) for t in texts])


def control_labels(types: Sequence[Any], labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """A control task (Hewitt & Liang 2019): each distinct *type* gets one random label, drawn from the
    empirical distribution of ``labels``; every example of that type carries it.

    The labels are a function of something the representation encodes (the type), but an arbitrary one: a
    probe that scores well on it is memorising, not reading out a property."""
    y = np.asarray(labels)
    if len(types) != len(y):
        raise ArgumentError(f"{len(types)} types for {len(y)} labels: one type per example is needed")
    values, counts = np.unique(y, return_counts=True)
    rng = np.random.default_rng(seed)
    distinct = list(dict.fromkeys(types))
    drawn = rng.choice(values, size=len(distinct), p=counts / counts.sum())
    table = dict(zip(distinct, drawn))
    return np.array([table[t] for t in types])


def seen_type_share(train_types: Sequence[Any], test_types: Sequence[Any]) -> float:
    """Share of test examples whose control-task type occurs in the probe's training examples. Hewitt &
    Liang's control task is only learnable for those: an unseen type's control label cannot be memorised, so
    a low share pushes the control to chance and inflates selectivity."""
    seen = set(train_types)
    if len(test_types) == 0:
        raise ArgumentError("seen_type_share got no test types")
    return float(np.mean([t in seen for t in test_types]))


def _words(text: str) -> list[str]:
    return text.lower().split()


def near_duplicates(texts: Sequence[str], against: Sequence[str], n: int = 4) -> np.ndarray:
    """Which ``texts`` overlap a text of ``against`` (boolean per text): they share a word ``n``-gram, or a
    text of fewer than ``n`` words occurs whole, word-aligned, inside one of ``against``. SST-2's training set
    holds overlapping sub-phrases of the same reviews, so a random split puts near-copies on both sides. (A
    short phrase of ``against`` inside a longer text is not counted: single words such as "good" are phrases
    of their own in SST-2.)"""
    if n < 1:
        raise ArgumentError(f"n-gram length must be at least 1, got {n}")
    grams: set[tuple[str, ...]] = set()
    joined = []
    for t in against:
        w = _words(t)
        grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
        joined.append(" " + " ".join(w) + " ")
    haystack = "\n".join(joined)
    out = []
    for t in texts:
        w = _words(t)
        if len(w) >= n:
            out.append(any(tuple(w[i:i + n]) in grams for i in range(len(w) - n + 1)))
        else:
            out.append(bool(w) and f" {' '.join(w)} " in haystack)
    return np.array(out, dtype=bool)


def _check_probe_data(X: np.ndarray, y: np.ndarray, what: str) -> None:
    if X.ndim != 3:
        raise ArgumentError(f"{what} features must be (layers, N, hidden), got shape {X.shape}")
    if X.shape[1] != len(y):
        raise ArgumentError(f"{what}: {X.shape[1]} feature rows for {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ArgumentError(f"{what} labels have a single class: a probe has nothing to learn")


def layer_probe(train_X: np.ndarray, train_y: Sequence[int], test_X: np.ndarray, test_y: Sequence[int],
                C: float | Sequence[float] | None = None, max_iter: int = 2000, seed: int = 0,
                return_c: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Test accuracy of a logistic-regression probe trained per layer (features standardised): (layers,).

    ``C=None`` (default) is the course's probe protocol, :func:`lmcourse.readout.fit_probe`: C chosen per
    layer on a fixed grid by cross-validation inside the probe-training examples; a number (or one per
    layer) fixes it. ``return_c=True`` also returns the C of every layer."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lmcourse.readout import blas_threads, fit_probe

    ytr, yte = np.asarray(train_y), np.asarray(test_y)
    _check_probe_data(np.asarray(train_X), ytr, "train")
    if np.asarray(test_X).ndim != 3 or test_X.shape[1] != len(yte):
        raise ArgumentError(f"test features {np.asarray(test_X).shape} must be (layers, {len(yte)}, hidden)")
    if train_X.shape[0] != test_X.shape[0] or train_X.shape[2] != test_X.shape[2]:
        raise ArgumentError(f"train {train_X.shape} and test {test_X.shape} features have different layers/width")
    n_layers = train_X.shape[0]
    cs = [None] * n_layers if C is None else (
        [float(C)] * n_layers if np.ndim(C) == 0 else [float(c) for c in C])
    if len(cs) != n_layers:
        raise ArgumentError(f"{len(cs)} C values for {n_layers} layers")
    accs, chosen = [], []
    for layer in range(n_layers):
        if cs[layer] is None:
            probe = fit_probe(train_X[layer], ytr, seed=seed, max_iter=max_iter)
            pred, c = probe.predict(test_X[layer]), probe.C
        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=cs[layer], max_iter=max_iter))
            with blas_threads():
                model.fit(train_X[layer], ytr)
                pred = model.predict(test_X[layer])
            c = cs[layer]
        accs.append(float((pred == yte).mean()))
        chosen.append(np.nan if c is None else float(c))
    return (np.array(accs), np.array(chosen)) if return_c else np.array(accs)


def probe_selectivity(train_X: np.ndarray, train_y: Sequence[int], test_X: np.ndarray, test_y: Sequence[int],
                      train_types: Sequence[Any], test_types: Sequence[Any], seeds: int | Sequence[int] = 0,
                      C: float | None = None) -> dict[str, np.ndarray]:
    """Task accuracy, control accuracy and selectivity = task − control, per layer (Hewitt & Liang 2019).

    The task probe follows the probe protocol (``C=None``: C per layer by cross-validation inside the
    probe-training examples, :func:`layer_probe`); each control probe uses the task probe's C of that layer,
    so that task and control are read by a probe of the same complexity (Hewitt & Liang's comparison). The
    control labels come from :func:`control_labels` over the train and test types together, so a type seen
    in training keeps its label at test time, and follow the task's label distribution. One control task per
    seed in ``seeds``: ``control``/``selectivity`` are means over them, ``*_std`` the sample std (``nan`` for
    one seed), ``control_runs`` every seed's accuracies (seeds, layers), ``C`` the C of each layer and
    ``seen_share`` the share of test types seen in probe training (:func:`seen_type_share`)."""
    seed_list = [int(seeds)] if isinstance(seeds, int | np.integer) else [int(s) for s in seeds]
    if not seed_list:
        raise ArgumentError("probe_selectivity needs at least one control seed")
    types = list(train_types) + list(test_types)
    if len(types) != len(train_y) + len(test_y):
        raise ArgumentError(f"{len(types)} types for {len(train_y) + len(test_y)} examples: one type per example")
    labels = np.concatenate([np.asarray(train_y), np.asarray(test_y)])
    task, chosen = layer_probe(train_X, train_y, test_X, test_y, C, return_c=True)
    chosen_c = [1.0 if np.isnan(c) else c for c in chosen]
    runs = []
    for seed in seed_list:
        control = control_labels(types, labels, seed)
        ctr, cte = control[:len(train_types)], control[len(train_types):]
        if len(np.unique(ctr)) < 2:  # every seen type drew one label: the control predicts it
            runs.append(np.full(len(task), float((cte == ctr[0]).mean())))
            continue
        runs.append(layer_probe(train_X, ctr, test_X, cte, chosen_c))
    runs_arr = np.array(runs)
    std = runs_arr.std(0, ddof=1) if len(runs) > 1 else np.full(len(task), np.nan)
    ctrl = runs_arr.mean(0)
    return {"task": task, "control": ctrl, "control_std": std, "selectivity": task - ctrl,
            "selectivity_std": std, "control_runs": runs_arr, "C": chosen,
            "seen_share": np.float64(seen_type_share(list(train_types), list(test_types)))}


# ------------------------------------------------------------------------------------------ pictures
def _colour(score: float, scale: float) -> tuple[float, float, float, float]:
    """Red for positive evidence, blue for negative, transparent for zero."""
    v = 0.0 if scale == 0 else max(-1.0, min(1.0, score / scale))
    return (0.84, 0.15, 0.16, abs(v)) if v >= 0 else (0.12, 0.47, 0.71, abs(v))


SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>")


def _prepare(tokens: Sequence[str], scores: Sequence[float]) -> tuple[list[str], np.ndarray, float]:
    """Tokens, scores with special tokens set to 0 (they are never deleted either, and attention's large
    ``[CLS]``/``[SEP]`` share would wash out every word), and the colour scale max |score|."""
    s = np.asarray(scores, dtype=np.float64).flatten().copy()
    if len(tokens) != len(s):
        raise ArgumentError(f"{len(tokens)} tokens and {len(s)} scores: one score per token is needed")
    s[[t in SPECIAL_TOKENS for t in tokens]] = 0.0
    scale = float(np.abs(s).max()) if len(s) else 0.0
    return list(tokens), s, scale


def _lines(tokens: Sequence[str], width: int) -> list[list[int]]:
    """Token indices per line when wrapped at ``width`` characters."""
    lines: list[list[int]] = [[]]
    x = 0
    for i, tok in enumerate(tokens):
        w = len(tok) + 1
        if x + w > width and x > 0:
            lines.append([])
            x = 0
        lines[-1].append(i)
        x += w
    return lines


def render_token_heatmap(tokens: Sequence[str], scores: Sequence[float], title: str | None = None) -> str:
    """Tokens as HTML spans coloured by score (red +, blue −, opacity ∝ |score| / max |score|; special tokens
    uncoloured)."""
    toks, s, scale = _prepare(tokens, scores)
    spans = []
    for tok, v in zip(toks, s):
        r, g, b, a = _colour(v, scale)
        spans.append(f'<span title="{v:+.4f}" style="background: rgba({int(255 * r)},{int(255 * g)},'
                     f'{int(255 * b)},{a:.2f}); padding: 1px 2px; margin: 1px; border-radius: 3px; '
                     f'font-family: monospace">{html.escape(tok)}</span>')
    head = f"<div style='font-size: 90%; color: #555'>{html.escape(title)}</div>" if title else ""
    return f"<div style='margin: 4px 0; line-height: 1.9'>{head}{' '.join(spans)}</div>"


def side_by_side_html(panels: Sequence[str], titles: Sequence[str] | None = None) -> str:
    """HTML fragments in one row of columns (e.g. the most and least faithful example)."""
    titles = list(titles) if titles is not None else [""] * len(panels)
    cells = "".join(f"<td style='vertical-align: top; padding: 6px; width: {100 // max(1, len(panels))}%'>"
                    f"<b>{html.escape(t)}</b>{p}</td>" for p, t in zip(panels, titles))
    return f"<table style='width: 100%; table-layout: fixed'><tr>{cells}</tr></table>"


def plot_token_heatmap(ax, tokens: Sequence[str], scores: Sequence[float], title: str | None = None,
                       width: int = 60) -> None:
    """The matplotlib version of :func:`render_token_heatmap`: coloured text boxes, wrapped at ``width`` chars."""
    toks, s, scale = _prepare(tokens, scores)
    ax.set_axis_off()
    lines = _lines(toks, width)
    for row, line in enumerate(lines):
        x = 0
        for i in line:
            ax.text(x, -row, toks[i], fontsize=9, family="monospace", va="center",
                    bbox={"facecolor": _colour(s[i], scale), "edgecolor": "none", "pad": 1.5})
            x += len(toks[i]) + 1
    ax.set_xlim(0, width)
    ax.set_ylim(-len(lines) + 0.4, 0.6)
    if title:
        ax.set_title(title, fontsize=9, loc="left")


def plot_token_heatmaps(rows: Sequence[tuple[str, Sequence[str], Sequence[float]]], columns: int = 1,
                        width: int = 60, path: Any = None):
    """Several ``(title, tokens, scores)`` heatmaps in a grid of ``columns``; saved as PNG when ``path``."""
    import matplotlib.pyplot as plt

    if not rows:
        raise ArgumentError("plot_token_heatmaps got no rows")
    n_rows = math.ceil(len(rows) / columns)
    heights = [max(len(_lines(list(r[1]), width)) for r in rows[k * columns:(k + 1) * columns]) + 1.2
               for k in range(n_rows)]
    fig, axes = plt.subplots(n_rows, columns, figsize=(0.11 * width * columns, 0.24 * sum(heights)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (title, toks, s) in zip(axes.flat, rows):
        plot_token_heatmap(ax, toks, s, title, width)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_axis_off()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def display_tokens(tokenizer, input_ids: torch.Tensor) -> list[str]:
    """The tokens of one sentence as strings (for heatmaps)."""
    return tokenizer.convert_ids_to_tokens(torch.as_tensor(input_ids).flatten().tolist())


def explain(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, target: int,
            baseline_ids: torch.Tensor, steps: int = 32, random_seeds: Sequence[int] = (0,),
            extra: Mapping[str, Callable[[], torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """Every method's token scores for one sentence (1, T): gradient × input, integrated gradients, raw
    attention, attention rollout and ``random (seed s)`` orders; ``extra`` adds named score functions."""
    ids, mask = _as_batch(input_ids, attention_mask)
    attns = attentions(model, ids, mask)
    out = {"gradient×input": gradient_x_input(model, ids, mask, target)[0],
           "integrated gradients": integrated_gradients(model, ids, mask, target, baseline_ids, steps)[0],
           "raw attention": raw_attention(attns)[0],
           "attention rollout": attention_rollout(attns)[0, 0]}
    for s in random_seeds:
        out[f"random (seed {s})"] = random_scores(ids.shape[1], s + 1000 * int(ids[0].sum()))
    for name, fn in (extra or {}).items():
        out[name] = torch.as_tensor(fn())
    return out
