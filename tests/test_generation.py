"""Decoding strategies against transformers' logits warpers, samplers, and KV-cache generation."""

from __future__ import annotations

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lmcourse import generation as G
from lmcourse.errors import ArgumentError


def _logits(seed: int, b: int = 8, v: int = 200, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, v, generator=g) * scale


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))  # the same kept set
    assert torch.equal(a[torch.isfinite(a)], b[torch.isfinite(b)])  # exactly the same values


@pytest.mark.parametrize("t", [0.3, 0.7, 1.0, 1.5])
def test_temperature_matches_hf(t):
    x = _logits(0)
    _same(G.apply_temperature(x, t), TemperatureLogitsWarper(t)(None, x.clone()))


@pytest.mark.parametrize("k", [1, 2, 5, 50, 199, 200, 500])
def test_top_k_matches_hf(k):
    for seed in range(3):
        x = _logits(seed)
        _same(G.top_k_filter(x, k), TopKLogitsWarper(k)(None, x.clone()))
    assert int(torch.isfinite(G.top_k_filter(_logits(0), 5)).sum(-1).min()) == 5


def test_top_k_keeps_ties():
    x = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    assert torch.isfinite(G.top_k_filter(x, 2)).tolist() == [[False, True, True, True, False]]
    _same(G.top_k_filter(x, 2), TopKLogitsWarper(2)(None, x.clone()))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("scale", [0.5, 3.0, 10.0])
def test_top_p_matches_hf(p, scale):
    for seed in range(3):
        x = _logits(seed, scale=scale)
        _same(G.top_p_filter(x, p), TopPLogitsWarper(p)(None, x.clone()) if 0 < p < 1 else
              _hf_top_p_edge(x, p))


def _hf_top_p_edge(x, p):
    # TopPLogitsWarper rejects p outside (0, 1); its formula at the edges: p=1 keeps all, p=0 keeps the argmax
    if p >= 1:
        return x
    keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, x.argmax(-1, keepdim=True), True)
    return x.masked_fill(~keep, float("-inf"))


def test_top_p_is_the_smallest_nucleus():
    x = _logits(7, b=16, v=50)
    p = 0.8
    kept = torch.isfinite(G.top_p_filter(x, p))
    probs = x.softmax(-1)
    for row in range(x.size(0)):
        mass = probs[row][kept[row]].sum()
        assert mass >= p - 1e-6
        smallest_kept = probs[row][kept[row]].min()
        assert mass - smallest_kept < p + 1e-6  # dropping the least likely kept token falls below p
        assert probs[row][~kept[row]].max() <= smallest_kept if (~kept[row]).any() else True


@pytest.mark.parametrize(("t", "k", "p"), [(0.8, 10, 0.9), (1.3, 40, 0.5), (0.5, None, 0.95), (1.0, 3, None)])
def test_combined_pipeline_matches_hf(t, k, p):
    x = _logits(3)
    _same(G.process_logits(x, t, k, p), G.hf_processed(x, t, k, p))
    # and the reference really is transformers' processor chain (not our own functions)
    procs = [TemperatureLogitsWarper(t)] + ([TopKLogitsWarper(k)] if k else []) + ([TopPLogitsWarper(p)] if p else [])
    ref = x.clone()
    for proc in procs:
        ref = proc(None, ref)
    _same(G.process_logits(x, t, k, p), ref)


def test_samplers():
    x = _logits(1, b=4)
    assert torch.equal(G.make_sampler("greedy")(x), x.argmax(-1))
    s1 = G.make_sampler(temperature=0.7, top_k=5, generator=torch.Generator().manual_seed(0))
    s2 = G.make_sampler(temperature=0.7, top_k=5, generator=torch.Generator().manual_seed(0))
    a, b = s1(x), s2(x)
    assert torch.equal(a, b)
    top5 = torch.topk(x, 5, dim=-1).indices
    assert all(int(a[i]) in top5[i].tolist() for i in range(4))
    # top_k=1 sampling is greedy
    assert torch.equal(G.make_sampler(top_k=1)(x), x.argmax(-1))
    with pytest.raises(ArgumentError):
        G.make_sampler("beam")
    with pytest.raises(ArgumentError):
        G.apply_temperature(x, 0.0)
    with pytest.raises(ArgumentError):
        G.top_k_filter(x, 0)


def test_kv_cache_generation_is_identical_and_matches_hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmcourse.models.gpt import GPT

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    model = GPT.from_hf(hf).eval()
    prompt = torch.randint(0, 97, (2, 5))
    rows = G.kv_cache_benchmark(model, prompt, [4, 12])
    assert all(r["identical"] for r in rows) and all(r["tokens/s with cache"] > 0 for r in rows)
    assert {r["device"] for r in rows} == {"cpu"}
    ours = model.generate(prompt, 12, use_cache=True)
    ref = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0,
                      attention_mask=torch.ones_like(prompt))
    assert torch.equal(ours, ref)


def test_timed_generation_runs_on_the_model_device_and_waits_for_it(monkeypatch):
    """A CPU prompt is moved to the model's device (``meta`` here: shapes without data, so no GPU is
    needed; without the move the forward pass fails on mixed devices), and each timing synchronizes that
    device."""
    from lmcourse.models.gpt import GPT, GPTConfig

    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    calls = []
    monkeypatch.setattr(G, "synchronize", calls.append)
    out, tps = G.time_generation(model, torch.zeros(2, 3, dtype=torch.long), 4, use_cache=True, repeats=2)
    assert out.device.type == "meta" and tuple(out.shape) == (2, 7) and tps > 0
    assert len(calls) == 4 and {str(d) for d in calls} == {"meta"}  # before and after each timed run
    assert G.model_device(model).type == "meta" and G.model_device(torch.nn.ReLU()).type == "cpu"


def test_kv_cache_benchmark_warms_up_and_alternates_repeats():
    """Per length: ``warmup`` untimed runs of both, then ``repeats`` rounds of cached, uncached; the row's
    numbers are medians over the rounds and ``speedups`` lists each round's ratio."""

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = []

        def generate(self, prompt, max_new_tokens, use_cache, **kw):
            self.calls.append((max_new_tokens, use_cache))
            return torch.zeros(prompt.size(0), max_new_tokens, dtype=torch.long)

    model = Fake()
    rows = G.kv_cache_benchmark(model, torch.zeros(2, 3, dtype=torch.long), [4, 6], repeats=3, warmup=2)
    assert model.calls == [(n, c) for n in (4, 6) for c in [True, False] * (2 + 3)]
    assert [len(r["speedups"]) for r in rows] == [3, 3] and all(r["identical"] for r in rows)
    for r in rows:
        assert r["speedup"] == sorted(r["speedups"])[1]  # the median of three rounds
