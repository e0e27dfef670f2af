"""lmcourse.attention against torch SDPA, nn.MultiheadAttention and HF's RoPE / sinusoidal references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse import attention as A
from lmcourse.context import resolve_context
from lmcourse.errors import ArgumentError, UnknownNameError

TOL = {"atol": 1e-6, "rtol": 0.0}


def _qkv(B=2, H=3, Tq=7, Tk=7, d=16, dv=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Tq, d, generator=g), torch.randn(B, H, Tk, d, generator=g),
            torch.randn(B, H, Tk, dv or d, generator=g))


@pytest.mark.parametrize("B,H,Tq,Tk,d,dv", [(1, 1, 1, 1, 4, 4), (2, 3, 7, 7, 16, 16), (3, 5, 9, 13, 8, 12),
                                            (2, 12, 17, 17, 32, 32)])
def test_sdpa_plain_matches_torch(B, H, Tq, Tk, d, dv):
    q, k, v = _qkv(B, H, Tq, Tk, d, dv)
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               **TOL)
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, scale=0.3),
                               F.scaled_dot_product_attention(q, k, v, scale=0.3), **TOL)


@pytest.mark.parametrize("Tq,Tk", [(5, 5), (11, 11), (4, 9), (9, 4)])
def test_sdpa_causal_matches_torch(Tq, Tk):
    q, k, v = _qkv(2, 4, Tq, Tk, 8)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # top-left aligned when Tq != Tk
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, is_causal=True), ref, **TOL)
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, mask=A.causal_mask(Tq, Tk)), ref, **TOL)


@pytest.mark.parametrize("lengths", [[7, 3], [1, 5, 7], [2, 2, 2, 7]])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_padding_and_causal_match_torch(lengths, causal):
    T = max(lengths)
    q, k, v = _qkv(len(lengths), 2, T, T, 8)
    pad = A.padding_mask(A.lengths_to_mask(lengths, T))
    assert pad.shape == (len(lengths), 1, 1, T)
    mask = A.combine_masks(pad, A.causal_mask(T) if causal else None)
    ours, w = A.scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref, **TOL)
    # float (additive) masks give the same result
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, mask=A.bool_to_additive(mask)), ref, **TOL)
    # weights: rows sum to one, padded keys get exactly zero weight
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-6, rtol=0)
    assert (w.masked_select(~mask.expand_as(w)) == 0).all()


def test_causal_mask_with_offset_is_kv_cache_slice():
    full = A.causal_mask(10)
    assert torch.equal(A.causal_mask(3, 10, offset=7), full[7:])
    assert torch.equal(A.causal_mask(4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    q, k, v = _qkv(1, 2, 10, 10, 8)
    last = A.scaled_dot_product_attention(q[..., 7:, :], k, v, mask=A.causal_mask(3, 10, offset=7))
    torch.testing.assert_close(last, F.scaled_dot_product_attention(q, k, v, is_causal=True)[..., 7:, :], **TOL)


@pytest.mark.parametrize("H,D", [(1, 8), (2, 8), (4, 32), (6, 24)])
def test_split_merge_heads_roundtrip(H, D):
    x = torch.randn(3, 5, D)
    s = A.split_heads(x, H)
    assert s.shape == (3, H, 5, D // H)
    torch.testing.assert_close(s[:, 1 % H, 2], x[:, 2, (1 % H) * (D // H):((1 % H) + 1) * (D // H)])
    torch.testing.assert_close(A.merge_heads(s), x, atol=0, rtol=0)
    with pytest.raises(ArgumentError):
        A.split_heads(torch.randn(1, 2, 10), 3)


def _torch_mha(D, H, seed):
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():  # torch inits the biases to zero: make them random so they are tested
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("D,H,T", [(8, 1, 5), (16, 2, 7), (24, 4, 9), (48, 6, 13)])
def test_mha_matches_torch_multihead_attention(D, H, T):
    mha = _torch_mha(D, H, seed=D + H)
    ours = A.MultiHeadAttention(D, H).eval().load_from_torch(mha)
    g = torch.Generator().manual_seed(T)
    x = torch.randn(3, T, D, generator=g)
    lengths = [T, T - 2, 1]
    keep = A.lengths_to_mask(lengths, T)  # True = real token (our convention)
    causal = A.causal_mask(T)
    with torch.no_grad():
        # no mask
        ref, ref_w = mha(x, x, x)
        out, w = ours(x, need_weights=True)
        torch.testing.assert_close(out, ref, **TOL)
        torch.testing.assert_close(w.mean(1), ref_w, **TOL)  # torch averages the heads by default
        # key padding (torch: True = ignore)
        ref, ref_w = mha(x, x, x, key_padding_mask=~keep, average_attn_weights=False)
        out, w = ours(x, key_mask=keep, need_weights=True)
        torch.testing.assert_close(out, ref, **TOL)
        torch.testing.assert_close(w, ref_w, **TOL)
        # padding + causal attn_mask (torch: bool True = not allowed)
        ref, _ = mha(x, x, x, key_padding_mask=~keep, attn_mask=~causal)
        out, _ = ours(x, key_mask=keep, attn_mask=causal)
        torch.testing.assert_close(out, ref, **TOL)
        torch.testing.assert_close(ours(x, key_mask=keep, is_causal=True)[0], ref, **TOL)
        # a float attn_mask (a random additive bias) with padding
        bias = torch.randn(T, T, generator=g)
        ref, _ = mha(x, x, x, key_padding_mask=~keep, attn_mask=bias)
        torch.testing.assert_close(ours(x, key_mask=keep, attn_mask=bias)[0], ref, **TOL)
        # cross-attention with different query and key lengths
        mem = torch.randn(3, T + 3, D, generator=g)
        ref, _ = mha(x, mem, mem)
        torch.testing.assert_close(ours(x, mem, mem)[0], ref, **TOL)


def test_mha_errors():
    with pytest.raises(ArgumentError):
        A.MultiHeadAttention(10, 3)
    with pytest.raises(ArgumentError):
        A.MultiHeadAttention(8, 2).load_from_torch(torch.nn.MultiheadAttention(8, 4))


def test_sinusoidal_matches_reference_and_is_a_rotation():
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    ref = torch.empty(50, 16)
    create_sinusoidal_embeddings(50, 16, ref)  # DistilBERT's table (interleaved sin/cos, as in the paper)
    pe = A.sinusoidal_positions(50, 16)
    torch.testing.assert_close(pe, ref, atol=1e-6, rtol=0)
    assert pe[0, 0::2].abs().max() == 0 and torch.all(pe[0, 1::2] == 1)
    # PE[p + k] = M_k PE[p] with the same matrix for every p (least squares recovers it exactly)
    k = 5
    M = torch.linalg.lstsq(pe[:40].double(), pe[k:40 + k].double()).solution
    torch.testing.assert_close((pe[10:30].double() @ M), pe[10 + k:30 + k].double(), atol=1e-5, rtol=0)
    with pytest.raises(ArgumentError):
        A.sinusoidal_positions(4, 5)


def test_learned_positional_embedding():
    torch.manual_seed(0)
    lpe = A.LearnedPositionalEmbedding(10, 8)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(lpe(x, offset=3), x + lpe.embedding.weight[3:7], atol=0, rtol=0)
    with pytest.raises(ArgumentError):
        lpe(x, offset=7)


@pytest.mark.parametrize("head_dim,offset", [(8, 0), (16, 5), (64, 100)])
def test_rope_matches_hf_llama(head_dim, offset):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k, _ = _qkv(2, 3, 11, 11, head_dim)
    cos, sin = A.rope_cos_sin(11, head_dim, offset=offset)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    torch.testing.assert_close(A.apply_rope(q, cos, sin), ref_q, **TOL)
    torch.testing.assert_close(A.apply_rope(k, cos, sin), ref_k, **TOL)
    # a rotation: norms are preserved
    torch.testing.assert_close(A.apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=0)


def test_rope_scores_depend_only_on_offset():
    g = torch.Generator().manual_seed(0)
    d, T = 32, 40
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    cos, sin = A.rope_cos_sin(T, d, dtype=torch.float64)
    qs, ks = A.apply_rope(q.expand(T, d), cos, sin), A.apply_rope(k.expand(T, d), cos, sin)
    scores = qs @ ks.T  # scores[m, n] = <R_m q, R_n k>
    for delta in (-7, 0, 3, 12):
        diag = torch.diagonal(scores, offset=delta)
        assert (diag - diag[0]).abs().max() < 1e-10
    assert torch.diagonal(scores, 0).std() < 1e-10 and scores[0].std() > 0.1  # differs across offsets


def test_scaling_statistics():
    g = torch.Generator().manual_seed(0)
    for d in (4, 64, 512):
        s = A.dot_product_stats(d, 20000, generator=g)
        assert abs(s["var_unscaled"] / d - 1) < 0.1 and abs(s["var_scaled"] - 1) < 0.1
    big_unscaled = A.softmax_saturation(512, scaled=False, generator=g)
    big_scaled = A.softmax_saturation(512, scaled=True, generator=g)
    assert big_unscaled["max_weight"] > 0.8 > big_scaled["max_weight"]
    assert big_unscaled["grad_norm"] < 0.5 * big_scaled["grad_norm"]
    assert big_scaled["entropy"] > big_unscaled["entropy"]


def test_peak_activation_bytes_sees_score_matrix():
    q, k, v = _qkv(1, 2, 256, 256, 16)
    n_scores = 1 * 2 * 256 * 256 * 4
    ours = A.peak_activation_bytes(lambda: A.scaled_dot_product_attention(q, k, v))
    assert ours >= 2 * n_scores  # scores and softmax weights live together
    assert A.peak_activation_bytes(lambda: torch.zeros(1000)) == 4000


def test_peak_allocated_bytes_sees_what_a_dispatch_mode_cannot():
    """Memory a kernel allocates and frees inside itself is invisible to a dispatch mode; the allocator sees
    it. Modelled here by ops run with the dispatch modes switched off, as inside a fused C++ kernel."""
    from torch.utils._python_dispatch import _disable_current_modes

    def hidden_scratch():
        with _disable_current_modes():
            scratch = torch.ones(1 << 18)  # 1 MiB of float32, freed before the result is returned
            total = scratch.sum()
            del scratch
        return total.clone()

    assert A.peak_activation_bytes(hidden_scratch) < 1 << 10
    assert A.peak_allocated_bytes(hidden_scratch) >= 1 << 20
    assert A.peak_allocated_bytes(lambda: torch.zeros(1000)) == 4000
    with pytest.raises(ArgumentError):
        A.peak_allocated_bytes(lambda: torch.zeros(10, device="meta"), "meta")


def test_peak_allocated_bytes_of_naive_and_fused_attention():
    """Doubling T: the naive peak (scores + weights) grows 4x; SDPA's fused CPU kernel, scratch included,
    at most 2x (its output grows 2x, its per-thread blocks not at all at these lengths)."""
    naive, fused = {}, {}
    for T in (1024, 2048):
        q, k, v = _qkv(1, 1, T, T, 16)
        naive[T] = A.peak_allocated_bytes(lambda q=q, k=k, v=v: A.scaled_dot_product_attention(q, k, v))
        fused[T] = A.peak_allocated_bytes(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        assert naive[T] >= 2 * T * T * 4 and fused[T] >= q.numel() * 4  # two score matrices; the output
    assert 3.5 < naive[2048] / naive[1024] < 4.5
    assert fused[2048] / fused[1024] < 2.2


def _ctx(device: str = "cpu"):
    return resolve_context("smoke", device="cpu", bf16=False, threads=2).with_changes(device=device)


def test_measure_attention_cost_and_slope():
    rows = A.measure_attention_cost([64, 128], _ctx(), heads=2, head_dim=8, repeats=1, progress=False)
    assert {(r["impl"], r["seq_len"]) for r in rows} == {("ours", 64), ("ours", 128), ("sdpa", 64), ("sdpa", 128)}
    for key in ("peak_bytes", "tensor_peak_bytes"):
        ours = [r[key] for r in rows if r["impl"] == "ours"]
        assert 3.5 < ours[1] / ours[0] < 4.5, key  # quadratic memory
    sdpa = [r for r in rows if r["impl"] == "sdpa"]
    assert all(r["peak_bytes"] >= r["tensor_peak_bytes"] > 0 for r in sdpa)  # the allocator sees the outputs too
    assert {r["device"] for r in rows} == {"cpu"}
    x = [1, 2, 4, 8]
    assert math.isclose(A.loglog_slope(x, [3 * t**2 for t in x]), 2.0, rel_tol=1e-9)
    with pytest.raises(UnknownNameError):
        A.measure_attention_cost([8], _ctx(), impls=["flash3"], progress=False)


def test_measure_attention_cost_runs_on_the_context_device():
    """``meta`` tensors have shapes but no data: attention on them is free, so the measurement runs; its
    rows report the device the inputs were on. Computing on the CPU despite the context would say "cpu"."""
    rows = A.measure_attention_cost([32, 64], _ctx("meta"), heads=2, head_dim=8, repeats=1, progress=False)
    assert len(rows) == 4 and {r["device"] for r in rows} == {"meta"}
    assert {r["peak_bytes"] for r in rows} == {None}  # no allocator statistics on meta: not made up


def test_measure_attention_cost_waits_for_the_device(monkeypatch):
    """GPU kernels are asynchronous: every timing must synchronize the context's device."""
    calls = []
    monkeypatch.setattr(A, "synchronize", calls.append)
    A.measure_attention_cost([16], _ctx("meta"), heads=1, head_dim=4, repeats=2, impls=["ours"], progress=False)
    assert len(calls) == 3 and {str(d) for d in calls} == {"meta"}  # warm-up + one per repeat


def test_attention_cost_sizes_come_from_the_profile():
    from lmcourse.profiles import PROFILES

    for prof in PROFILES.values():
        sizes = prof.attention_cost
        assert set(sizes) == {"seq_lens", "batch", "heads", "head_dim", "repeats"}
        assert list(sizes["seq_lens"]) == sorted(sizes["seq_lens"])
    rows = A.measure_attention_cost(ctx=_ctx("meta"), progress=False, **PROFILES["smoke"].attention_cost)
    assert [r["seq_len"] for r in rows if r["impl"] == "ours"] == PROFILES["smoke"].attention_cost["seq_lens"]
