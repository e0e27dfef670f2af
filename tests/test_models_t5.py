"""The from-scratch T5 against Hugging Face T5ForConditionalGeneration (tiny random configs): logits,
loss, greedy and beam-search generation, and the decoder KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import T5Config as HFT5Config
from transformers import T5ForConditionalGeneration

from lmcourse.errors import ArgumentError
from lmcourse.generation import make_sampler
from lmcourse.models.t5 import T5, T5Cache, T5Config, relative_position_bucket, t5_param_count

VOCAB = 37


def _hf_tiny(d_model: int = 32, d_kv: int = 8, d_ff: int = 40, layers: int = 2, dec_layers: int | None = None,
             heads: int = 4, buckets: int = 32, max_distance: int = 128, ff: str = "relu", tied: bool = True,
             seed: int = 0, vocab: int = VOCAB, scale: float = 1.0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = HFT5Config(vocab_size=vocab, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=layers,
                     num_decoder_layers=dec_layers, num_heads=heads, relative_attention_num_buckets=buckets,
                     relative_attention_max_distance=max_distance, dropout_rate=0.0, feed_forward_proj=ff,
                     tie_word_embeddings=tied, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        if not tied:  # transformers 5 always ties the head in the config; give it its own weights (T5 1.1)
            model.lm_head.weight = nn.Parameter(torch.randn(vocab, d_model))
        for name, p in model.named_parameters():  # RMS norms start at 1: randomise them so the test sees them
            if "layer_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif "Attention" in name or "Dense" in name:
                p.mul_(scale)  # larger weights: less repetitive greedy outputs
    return model


def _inputs(B: int = 3, S: int = 13, T: int = 9, seed: int = 1) -> dict[str, torch.Tensor]:
    """Odd lengths; row 1 padded on the right, row 2 on the left, in encoder and decoder."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, S), generator=g)
    dec = torch.randint(2, VOCAB, (B, T), generator=g)
    mask, dec_mask = torch.ones(B, S, dtype=torch.long), torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, :4] = 0
    dec_mask[1, 6:] = 0
    dec_mask[2, :3] = 0
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)


CONFIGS = [  # (d_model, d_kv, heads, buckets, max_distance, ff, tied, layers, dec_layers)
    (32, 8, 4, 32, 128, "relu", True, 2, None),
    (24, 6, 2, 8, 16, "gated-gelu", False, 1, 3),
    (16, 4, 1, 6, 9, "relu", False, 3, 2),
    (40, 12, 5, 11, 20, "gated-gelu", True, 2, 2),  # H * d_kv != d_model, odd bucket count
]


@pytest.mark.parametrize("d_model,d_kv,heads,buckets,max_distance,ff,tied,layers,dec_layers", CONFIGS)
def test_logits_and_loss_match_hf(d_model, d_kv, heads, buckets, max_distance, ff, tied, layers, dec_layers):
    hf = _hf_tiny(d_model, d_kv, 2 * d_model + 3, layers, dec_layers, heads, buckets, max_distance, ff, tied,
                  seed=d_model)
    ours = T5.from_hf(hf).eval()
    assert ours.config.tie_word_embeddings == tied and ours.config.scale_decoder_outputs == tied
    assert (ours.lm_head.weight is ours.shared.weight) == tied
    batch = _inputs()
    with torch.no_grad():
        ref = hf(**batch).logits
        out = ours(**batch).logits
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"]).logits,
                                   hf(input_ids=batch["input_ids"],
                                      decoder_input_ids=batch["decoder_input_ids"]).logits, atol=1e-5, rtol=0)
        labels = batch["decoder_input_ids"].masked_fill(batch["decoder_attention_mask"] == 0, -100)
        ref_loss = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss = ours(batch["input_ids"], batch["attention_mask"], labels=labels).loss
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)


def test_state_dict_names_are_hf_names():
    for tied, ff in [(True, "relu"), (False, "gated-gelu")]:
        hf = _hf_tiny(ff=ff, tied=tied, dec_layers=3)
        ours = T5(T5Config.from_hf(hf.config, tie_word_embeddings=tied))
        assert set(ours.state_dict()) == set(hf.state_dict())
        for k, v in hf.state_dict().items():
            assert ours.state_dict()[k].shape == v.shape, k
        assert ours.encoder.embed_tokens is ours.shared and ours.decoder.embed_tokens is ours.shared
        assert t5_param_count(ours.config) == ours.num_params()
        assert ours.num_params() == sum(p.numel() for p in hf.parameters())


def test_param_count_t5_small():
    with torch.device("meta"):  # t5-small (60.5M with the tied head) without allocating memory
        n_ours = T5(T5Config()).num_params()
    assert t5_param_count(T5Config()) == n_ours == 60_506_624


@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (8, 20), (7, 9)])
def test_relative_position_bucket_matches_hf(buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        ref = T5Attention._relative_position_bucket(rel, bidirectional, buckets, max_distance)
        ours = relative_position_bucket(rel, bidirectional, buckets, max_distance)
        assert torch.equal(ours, ref)
        assert int(ours.min()) == 0 and int(ours.max()) == (buckets - 1 if not bidirectional else ref.max())


def test_padding_on_the_left_changes_nothing_at_real_positions():
    ours = T5.from_hf(_hf_tiny()).eval()
    ids = torch.randint(2, VOCAB, (1, 7))
    dec = torch.randint(2, VOCAB, (1, 5))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = ours(ids, decoder_input_ids=dec).logits
        left = ours(padded, mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(left, plain, atol=1e-5, rtol=0)  # relative positions: only distances matter


def _hf_generate(hf, ids, mask, n, beams=1, eos=True):
    return hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, num_beams=beams, do_sample=False,
                       eos_token_id=1 if eos else None, pad_token_id=0, decoder_start_token_id=0,
                       length_penalty=1.0, early_stopping=False)


@pytest.mark.parametrize("ff,tied", [("relu", True), ("gated-gelu", False)])
def test_greedy_generation_matches_hf(ff, tied):
    hf = _hf_tiny(ff=ff, tied=tied, seed=3, scale=3.0)
    with torch.no_grad():
        hf.lm_head.weight[1].mul_(2.5)  # a likelier EOS: one row stops early and is padded
    ours = T5.from_hf(hf).eval()
    batch = _inputs(B=6, seed=5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for eos in (True, False):
        ref = _hf_generate(hf, ids, mask, 15, eos=eos)
        for use_cache in (True, False):
            out = ours.generate(ids, mask, max_new_tokens=15, use_cache=use_cache, eos_token_id=1 if eos else None)
            assert torch.equal(out, ref), (eos, use_cache)
        if eos:
            assert bool((ref[:, -1] == 0).any())  # padding after an EOS
    assert max(len(set(row.tolist())) for row in ref) > 3  # not a constant sequence
    assert torch.equal(ref[:, 0], torch.zeros(6, dtype=torch.long))  # starts with the decoder start token


def test_beam_search_matches_hf():
    n_eos, n_short = 0, 0
    for beams, seed in [(2, 0), (3, 1), (4, 2), (5, 7)]:
        hf = _hf_tiny(ff="gated-gelu" if seed % 2 else "relu", tied=seed % 2 == 0, seed=10 + seed, vocab=13,
                      scale=3.0)
        with torch.no_grad():
            hf.lm_head.weight[1].mul_(2.0)  # a likelier EOS: hypotheses finish at different steps
        ours = T5.from_hf(hf).eval()
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(2, 13, (3, 11), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 7:] = 0
        mask[2, :3] = 0
        for n in (1, 6, 12):
            ref = _hf_generate(hf, ids, mask, n, beams=beams)
            n_eos += int((ref[:, 1:] == 1).sum())
            n_short += int(ref.size(1) < n + 1)
            for use_cache in (True, False):
                out = ours.generate(ids, mask, max_new_tokens=n, num_beams=beams, use_cache=use_cache)
                assert torch.equal(out, ref), (beams, n, use_cache, out, ref)
        ref = _hf_generate(hf, ids, mask, 8, beams=beams, eos=False)
        assert torch.equal(ours.generate(ids, mask, max_new_tokens=8, num_beams=beams, eos_token_id=None), ref)
    # finished hypotheses and the early stop were exercised, not just running beams
    assert n_eos > 0 and n_short > 0


def test_kv_cache_equals_full_decoder_pass():
    ours = T5.from_hf(_hf_tiny(ff="gated-gelu", dec_layers=3)).eval()
    batch = _inputs()
    ids, mask, dec = batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"]
    with torch.no_grad():
        full = ours(ids, mask, decoder_input_ids=dec).logits
        enc = ours.encode(ids, mask)
        cache, pieces, start = None, [], 0
        for n in (4, 1, 1, 3):
            out = ours(attention_mask=mask, decoder_input_ids=dec[:, start:start + n], encoder_outputs=enc,
                       kv_cache=cache, use_cache=True)
            cache, start = out.kv_cache, start + n
            pieces.append(out.logits)
    assert isinstance(cache, T5Cache) and cache.seq_len == 9 and len(cache) == 3
    assert cache.keys[2].shape == (3, 4, 9, 8)
    assert cache.cross_keys[2].shape == (3, 4, 13, 8)  # over the encoder positions, computed once
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_sampling_hook_and_errors():
    ours = T5.from_hf(_hf_tiny(seed=4)).eval()
    ids = torch.randint(2, VOCAB, (2, 6))
    gen = torch.Generator().manual_seed(0)
    top1 = ours.generate(ids, max_new_tokens=8, sample_fn=make_sampler(top_k=1, generator=gen))
    assert torch.equal(top1, ours.generate(ids, max_new_tokens=8))  # top-1 sampling is greedy
    seeded = [ours.generate(ids, max_new_tokens=8, sample_fn=make_sampler(temperature=2.0, top_p=0.9,
                                                                          generator=torch.Generator().manual_seed(1)))
              for _ in range(2)]
    assert torch.equal(*seeded)
    with pytest.raises(ArgumentError):
        ours(ids)  # neither decoder_input_ids nor labels
    with pytest.raises(ArgumentError):
        ours.generate(ids, max_new_tokens=0)
    with pytest.raises(ArgumentError):
        ours.generate(ids, num_beams=2, sample_fn=make_sampler(top_k=3))
    with pytest.raises(ArgumentError):
        T5Config(feed_forward_proj="swish")


def test_kv_cache_benchmark_runs_on_t5():
    from lmcourse.generation import kv_cache_benchmark

    ours = T5.from_hf(_hf_tiny(seed=2, scale=3.0)).eval()
    rows = kv_cache_benchmark(ours, torch.randint(2, VOCAB, (2, 9)), [3, 7], generate_kwargs={"eos_token_id": None})
    assert [r["new_tokens"] for r in rows] == [3, 7]
    assert all(r["identical"] for r in rows)  # the cache changes the speed, never the tokens


def test_seq2seq_flops_formula_equals_counted_flops():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from lmcourse.measurement import model_flops_per_token, seq2seq_training_flops

    for ff, tied, dec_layers in [("gated-gelu", False, 3), ("relu", True, 1)]:
        cfg = T5Config(vocab_size=50, d_model=32, d_kv=6, d_ff=48, num_layers=2, num_decoder_layers=dec_layers,
                       num_heads=4, feed_forward_proj=ff, tie_word_embeddings=tied, dropout_rate=0.0)
        model = T5(cfg)
        ids, dec = torch.randint(0, 50, (2, 11)), torch.randint(0, 50, (2, 7))
        # the math backend: attention as plain matmuls, which the counter sees
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(ids, labels=dec).loss.backward()
        assert counter.get_total_flops() == 2 * seq2seq_training_flops(cfg, 11, 7)
    with pytest.raises(ValueError, match="seq2seq_training_flops"):
        model_flops_per_token(model, 11)


@pytest.mark.parametrize("ff,tied", [("relu", True), ("gated-gelu", False)])
def test_to_hf_round_trip(ff, tied):
    torch.manual_seed(5)
    ours = T5(T5Config(vocab_size=VOCAB, d_model=24, d_kv=8, d_ff=30, num_layers=2, num_decoder_layers=1,
                       num_heads=3, relative_attention_num_buckets=10, relative_attention_max_distance=20,
                       feed_forward_proj=ff, tie_word_embeddings=tied, dropout_rate=0.0)).eval()
    hf = ours.to_hf()
    assert (hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()) == tied
    batch = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, hf(**batch).logits, atol=1e-5, rtol=0)
        back = T5.from_hf(hf)
        torch.testing.assert_close(back(**batch).logits, hf(**batch).logits, atol=1e-5, rtol=0)
    assert back.config == ours.config
