"""Decoding: greedy, temperature, top-k and top-p (nucleus) as functions on logits, and the KV-cache speedup.

A language model gives a distribution over the next token, ``softmax(logits)``. A decoding strategy
turns that into a choice:

* **greedy** — the argmax (deterministic; repetitive on long texts);
* **temperature** ``τ`` — sample from ``softmax(logits / τ)``: ``τ < 1`` sharpens, ``τ > 1`` flattens;
* **top-k** (Fan et al. 2018) — keep the ``k`` largest logits (and everything tied with the ``k``-th);
* **top-p / nucleus** (Holtzman et al. 2020) — keep the smallest set of most likely tokens whose
  probability mass reaches ``p``.

The filters set removed logits to ``-inf`` (so softmax gives them probability 0) and are written to give
exactly the kept sets and values of ``transformers``' ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
``TopPLogitsWarper``; the order temperature → top-k → top-p is the one ``generate`` applies.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lmcourse.errors import ArgumentError
from lmcourse.measurement import synchronize

FILTER_VALUE = float("-inf")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / τ`` (``τ > 0``; greedy decoding is the ``τ → 0`` limit and is :func:`greedy`)."""
    if not temperature > 0:
        raise ArgumentError(f"temperature must be > 0, got {temperature}; use greedy() for deterministic decoding")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int, min_tokens_to_keep: int = 1) -> Tensor:
    """Keep the ``k`` largest logits per row (ties with the ``k``-th value are kept too); others ``-inf``."""
    if k <= 0:
        raise ArgumentError(f"top_k must be a positive integer, got {k}")
    k = min(max(k, min_tokens_to_keep), logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, FILTER_VALUE)


def top_p_filter(logits: Tensor, p: float, min_tokens_to_keep: int = 1) -> Tensor:
    """Nucleus filter: keep the most likely tokens until their probability mass reaches ``p``.

    Written from the other end, as ``transformers`` does: sort ascending and drop the least likely tokens
    while their *cumulative* mass stays ``<= 1 - p``. The kept set is the smallest prefix (by descending
    probability) with mass ``>= p``, plus always the ``min_tokens_to_keep`` most likely tokens.
    """
    if not 0.0 <= p <= 1.0:
        raise ArgumentError(f"top_p must be in [0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1.0 - p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, FILTER_VALUE)


def greedy(logits: Tensor) -> Tensor:
    """The most likely token of each row (``(B, V) -> (B,)``)."""
    return logits.argmax(dim=-1)


def process_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> Tensor:
    """Temperature, then top-k, then top-p: the warped logits one samples from."""
    out = apply_temperature(logits, temperature) if temperature != 1.0 else logits
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None and top_p < 1.0:
        out = top_p_filter(out, top_p)
    return out


def make_sampler(strategy: str = "sample", temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None
                 ) -> Callable[[Tensor], Tensor]:
    """A ``sample_fn(logits (B, V)) -> (B,)`` for :meth:`lmcourse.models.gpt.GPT.generate`.

    ``strategy="greedy"`` ignores the other arguments; ``"sample"`` draws from the processed logits.
    """
    if strategy == "greedy":
        return greedy
    if strategy != "sample":
        raise ArgumentError(f"unknown decoding strategy {strategy!r}; use 'greedy' or 'sample'")

    def sample(logits: Tensor) -> Tensor:
        probs = process_logits(logits.float(), temperature, top_k, top_p).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).view(-1)

    return sample


def hf_processed(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> Tensor:
    """The same transformation with ``transformers``' logits warpers (the reference in tests/notebook)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k is not None:
        procs.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    dummy_ids = torch.zeros(logits.size(0), 1, dtype=torch.long)
    return procs(dummy_ids, logits.clone())


def kept_fraction(processed: Tensor) -> float:
    """Share of the vocabulary that survives the filters (finite logits)."""
    return float(torch.isfinite(processed).float().mean())


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def time_generation(model, prompt: Tensor, max_new_tokens: int, use_cache: bool, repeats: int = 1,
                    generate_kwargs: dict[str, Any] | None = None) -> tuple[Tensor, float]:
    """Greedy generation of ``max_new_tokens``; returns the tokens and the best tokens/s of ``repeats`` runs.

    The prompt is moved to the model's device, and each timing waits for the device to finish
    (:func:`lmcourse.measurement.synchronize`): GPU kernels run asynchronously. ``generate_kwargs`` go to
    ``model.generate`` (for the T5 of notebook 10: ``{"eos_token_id": None}``, so every run makes exactly
    ``max_new_tokens`` tokens).
    """
    device = model_device(model)
    prompt = prompt.to(device)
    best, out = float("inf"), prompt
    for _ in range(max(1, repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=max_new_tokens, use_cache=use_cache, **(generate_kwargs or {}))
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return out, prompt.size(0) * max_new_tokens / best


def kv_cache_benchmark(model, prompt: Tensor, lengths: Sequence[int], repeats: int = 1,
                       generate_kwargs: dict[str, Any] | None = None, warmup: int = 1) -> list[dict[str, Any]]:
    """Tokens/s of greedy generation with and without the KV cache for several generated lengths.

    Without a cache every step recomputes the whole context (``O(T^2)`` work for ``T`` tokens, plus
    attention ``O(T^3)``); with it a step processes one token (``O(T)`` in total per layer, attention
    ``O(T^2)``). Also checks that both produce the same tokens. Runs on the model's device (put the model
    on ``ctx.device`` first); the prompt is moved there. Works for any model whose ``generate`` takes
    ``max_new_tokens=`` and ``use_cache=`` (GPT and T5); ``generate_kwargs`` are passed on.

    For each length, ``warmup`` untimed runs of both (allocator, kernel selection, caches), then ``repeats``
    rounds that time the cached and the uncached run one after the other, so a slow moment of the machine
    hits both. A row gives the median tokens/s of each, ``speedup`` (the median of the per-round ratios) and
    ``speedups`` (every round's ratio, in order, for an interval).
    """
    rows = []
    model.eval()
    for n in lengths:
        for _ in range(max(0, warmup)):
            time_generation(model, prompt, n, True, 1, generate_kwargs)
            time_generation(model, prompt, n, False, 1, generate_kwargs)
        cached, plain, same = [], [], True
        for _ in range(max(1, repeats)):
            with_cache, tps_cache = time_generation(model, prompt, n, True, 1, generate_kwargs)
            without, tps_plain = time_generation(model, prompt, n, False, 1, generate_kwargs)
            cached.append(tps_cache)
            plain.append(tps_plain)
            same = same and bool(torch.equal(with_cache, without))
        ratios = [c / p for c, p in zip(cached, plain, strict=True)]
        rows.append({"new_tokens": n, "tokens/s with cache": statistics.median(cached),
                     "tokens/s without cache": statistics.median(plain), "speedup": statistics.median(ratios),
                     "speedups": ratios, "identical": same, "device": str(with_cache.device)})
    return rows
