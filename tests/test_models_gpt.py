"""The from-scratch GPT-2 against Hugging Face GPT2LMHeadModel (tiny random configs), and its KV cache."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmcourse.errors import ArgumentError
from lmcourse.generation import make_sampler
from lmcourse.measurement import matmul_params, model_flops_per_token, training_flops_per_token
from lmcourse.models.gpt import GPT, GPTConfig, KVCache, gpt_param_count


def _hf_tiny(n_layer: int = 2, n_head: int = 4, n_embd: int = 32, n_positions: int = 40, vocab: int = 97,
             n_inner: int | None = None, seed: int = 0, init: float = 0.02) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     n_inner=n_inner, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=init)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF inits biases to zero and LN to 1/0: randomise them so the test sees them
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("n_layer,n_head,n_embd,n_inner", [(1, 1, 16, None), (2, 4, 32, None), (3, 2, 24, 40)])
def test_from_hf_logits_match(n_layer, n_head, n_embd, n_inner):
    hf = _hf_tiny(n_layer, n_head, n_embd, n_inner=n_inner)
    ours = GPT.from_hf(hf).eval()
    idx = torch.randint(0, hf.config.vocab_size, (3, 13))
    with torch.no_grad():
        ref = hf(idx).logits
        out = ours(idx)
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=0)
    # loss as HF computes it (HF shifts labels internally, ours takes already-shifted targets)
    with torch.no_grad():
        ref_loss = hf(idx, labels=idx).loss
        loss = ours(idx[:, :-1], targets=idx[:, 1:]).loss
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)


def test_tied_head_and_transposed_conv1d():
    hf = _hf_tiny()
    ours = GPT.from_hf(hf)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    torch.testing.assert_close(ours.transformer.h[0].attn.c_attn.weight, hf.transformer.h[0].attn.c_attn.weight.T)


def test_greedy_generation_matches_hf():
    hf = _hf_tiny(n_layer=2, n_head=2, n_embd=32, n_positions=64, seed=1, init=0.3)  # large weights: varied tokens
    ours = GPT.from_hf(hf).eval()
    prompt = torch.randint(1, hf.config.vocab_size, (2, 7))
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                      min_new_tokens=20, pad_token_id=0, eos_token_id=None)
    with_cache = ours.generate(prompt, max_new_tokens=20)
    without_cache = ours.generate(prompt, max_new_tokens=20, use_cache=False)
    assert torch.equal(with_cache, ref)
    assert max(len(set(row[7:].tolist())) for row in ref) > 3  # not a constant sequence
    assert torch.equal(without_cache, ref)


@pytest.mark.parametrize("chunks", [[5, 1, 1, 1], [1] * 6, [3, 4, 2]])
def test_kv_cache_equals_full_forward(chunks):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    idx = torch.randint(0, 50, (2, sum(chunks)))
    with torch.no_grad():
        full = model(idx).logits
        cache, pieces, start = None, [], 0
        for n in chunks:
            out = model(idx[:, start:start + n], kv_cache=cache, use_cache=True)
            cache, start = out.kv_cache, start + n
            pieces.append(out.logits)
    assert isinstance(cache, KVCache) and cache.seq_len == sum(chunks)
    assert cache.keys[1].shape == (2, 4, sum(chunks), 8)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_param_count_formula():
    for cfg in [GPTConfig(vocab_size=97, block_size=40, n_layer=2, n_head=4, n_embd=32),
                GPTConfig(vocab_size=11, block_size=7, n_layer=3, n_head=3, n_embd=24, n_inner=10, bias=False),
                GPTConfig()]:
        if cfg.n_layer < 12:
            model = GPT(cfg)
            assert gpt_param_count(cfg) == model.num_params()
            n_emb = (cfg.vocab_size + cfg.block_size) * cfg.n_embd
            assert model.num_params(non_embedding=True) == gpt_param_count(cfg) - n_emb
    with torch.device("meta"):  # GPT-2 small (124M) without allocating memory
        n_hf = sum(p.numel() for p in GPT2LMHeadModel(GPT2Config()).parameters())
        n_ours = GPT(GPTConfig()).num_params()
    assert gpt_param_count(GPTConfig()) == n_hf == n_ours == 124_439_808


def test_matmul_params_counts_tied_head_once():
    cfg = GPTConfig(vocab_size=97, block_size=40, n_layer=2, n_head=4, n_embd=32)
    model = GPT(cfg)
    ln = 2 * cfg.n_embd
    assert matmul_params(model) == gpt_param_count(cfg) - cfg.block_size * cfg.n_embd - (2 * cfg.n_layer + 1) * ln


def test_sampling_hook_and_errors():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    idx = torch.zeros(2, 3, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    out1 = model.generate(idx, 5, sample_fn=make_sampler(temperature=1.0, top_k=1, generator=gen))
    assert torch.equal(out1, model.generate(idx, 5))  # top-1 sampling is greedy
    out2 = model.generate(idx, 20, sample_fn=make_sampler(temperature=2.0, top_k=5, generator=gen))
    assert out2.shape == (2, 23) and int(out2.max()) < 30  # longer than block_size: context is cropped
    seeded = [model.generate(idx, 20, sample_fn=make_sampler(temperature=2.0, top_k=5,
                                                             generator=torch.Generator().manual_seed(0)))
              for _ in range(2)]
    assert torch.equal(*seeded)  # a seeded generator: the same samples
    with pytest.raises(ArgumentError):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ArgumentError):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ArgumentError):
        model.generate(idx, 1, sample_fn=make_sampler(temperature=0.0))


def test_embedding_accessors_show_the_tie_to_flops_counting():
    cfg = GPTConfig(vocab_size=97, block_size=40, n_layer=2, n_head=4, n_embd=32)
    model = GPT(cfg)
    assert model.get_input_embeddings() is model.transformer.wte
    assert model.get_output_embeddings() is model.lm_head
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # tied: the V x d matrix is multiplied on every token, so it is part of N (counted once)
    n = matmul_params(model)
    assert n >= cfg.vocab_size * cfg.n_embd
    T = 16
    assert model_flops_per_token(model, T) == training_flops_per_token(n, cfg.n_layer, cfg.n_head, cfg.head_dim, T)
    # untied, the input embedding is only looked up: the accessors let the FLOPs formula leave it out
    model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
    n_untied = matmul_params(model) - cfg.vocab_size * cfg.n_embd
    assert n_untied == n
    assert model_flops_per_token(model, T) == training_flops_per_token(n_untied, cfg.n_layer, cfg.n_head,
                                                                       cfg.head_dim, T)


def test_eos_stops_generation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    idx = torch.zeros(1, 2, dtype=torch.long)
    first = int(model.generate(idx, 1)[0, -1])
    out = model.generate(idx, 10, eos_token_id=first)
    assert out.shape == (1, 3)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1))
    idx = torch.randint(0, 20, (4, 16))
    from lmcourse.pretraining import decay_groups  # the one AdamW grouping of the course (GPT has none of its own)

    groups = decay_groups(model, 0.1)
    assert sum(p.numel() for g in groups for p in g["params"]) == model.num_params()  # the tied head once
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    opt = torch.optim.AdamW(groups, lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(idx[:, :-1], targets=idx[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
