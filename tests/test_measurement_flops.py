"""lmcourse.measurement: the FLOPs formulas (6N + 12LHQT, the per-part breakdown) against counts and the models."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmcourse.measurement import attention_flops_share, flops_breakdown, matmul_params, training_flops_per_token
from lmcourse.models.gpt import GPT, GPTConfig


@pytest.mark.parametrize("d,L,H,f,V,T", [(768, 12, 12, 3072, 50257, 1024), (32, 2, 4, 48, 97, 17),
                                         (384, 6, 12, 1536, 30522, 128)])
def test_breakdown_sums_to_formula(d, L, H, f, V, T):
    parts = flops_breakdown(d, L, H, f, V, T)
    N = L * (4 * d * d + 2 * d * f) + d * V
    assert sum(parts.values()) == pytest.approx(training_flops_per_token(N, L, H, d // H, T), rel=1e-12)
    fwd = flops_breakdown(d, L, H, f, V, T, training=False)
    assert sum(fwd.values()) == pytest.approx(sum(parts.values()) / 3, rel=1e-12)
    assert flops_breakdown(d, L, H, f, V, T, lm_head=False)["LM head (tied embedding)"] == 0


def test_attention_share_grows_with_context():
    shares = [attention_flops_share(768, 12, 12, 3072, 50257, T) for T in (128, 1024, 8192, 65536)]
    assert all(a < b for a, b in itertools.pairwise(shares)) and 0 < shares[0] < 0.1 and shares[-1] > 0.5
    with pytest.raises(ValueError):
        flops_breakdown(10, 1, 3, 10, 10, 10)


def test_breakdown_matches_torch_flop_counter_on_gpt():
    """torch's FlopCounterMode counts the matmuls of a real forward pass (+ backward) of our GPT."""
    cfg = GPTConfig(vocab_size=101, block_size=64, n_layer=2, n_head=4, n_embd=32)
    model = GPT(cfg)
    B, T = 2, 64
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    # the math SDPA backend runs QK^T and AV as bmm, which the counter sees (the CPU flash kernel it does not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx[:, :-1], targets=idx[:, 1:]).loss.backward()
    T_eff = T - 1
    parts = flops_breakdown(cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.d_ff, cfg.vocab_size, T_eff)
    # the wte gradient of a lookup is no matmul; the formula's 6dV for the tied head is all matmul FLOPs
    assert counter.get_total_flops() == pytest.approx(sum(parts.values()) * B * T_eff, rel=1e-9)
    # matmul_params counts weights + biases; the weights alone are the breakdown's N
    n_weights = cfg.n_layer * (4 * cfg.n_embd**2 + 2 * cfg.n_embd * cfg.d_ff) + cfg.n_embd * cfg.vocab_size
    n_biases = cfg.n_layer * (3 * cfg.n_embd + cfg.n_embd + cfg.d_ff + cfg.n_embd)
    assert matmul_params(model) == n_weights + n_biases
