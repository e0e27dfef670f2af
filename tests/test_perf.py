"""lmcourse.perf and lmcourse.flops basics: peak FLOP/s measurement, throughput bookkeeping, MFU."""

from __future__ import annotations

import time

import pytest
import torch

from lmcourse.flops import forward_flops_per_token, matmul_params, mfu, training_flops_per_token
from lmcourse.perf import Throughput, bf16_supported, measure_peak_flops, peak_memory_bytes


def test_peak_flops_is_positive_and_cached():
    peak = measure_peak_flops(torch.float32, "cpu", size=256, repeats=2, use_cache=False)
    assert 1e8 < peak < 1e14
    assert measure_peak_flops() == measure_peak_flops()  # cached per process
    assert isinstance(bf16_supported("cpu"), bool)
    assert peak_memory_bytes("cpu") > 10 * 2**20


def test_throughput_counts_tokens_and_time():
    meter = Throughput(flops_per_token=1e6, peak_flops=1e9)
    for tokens in (100, 300):
        meter.start()
        time.sleep(0.01)
        meter.stop(tokens)
    assert meter.tokens == 400 and meter.steps == 2 and meter.seconds >= 0.02
    assert meter.tokens_per_second == pytest.approx(400 / meter.seconds)
    assert meter.mfu == pytest.approx(meter.tokens_per_second * 1e6 / 1e9)
    with pytest.raises(RuntimeError):
        Throughput().stop(1)
    assert Throughput().mfu is None


def test_flops_formula_and_matmul_params():
    # 6N + 12 L H Q T with N = 1e6, L = 2, H = 4, Q = 16, T = 128
    assert training_flops_per_token(10**6, 2, 4, 16, 128) == 6e6 + 12 * 2 * 4 * 16 * 128
    assert forward_flops_per_token(10**6, 2, 4, 16, 128) == pytest.approx((6e6 + 12 * 2 * 4 * 16 * 128) / 3)
    assert mfu(1000.0, 1e6, 1e10) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(10, 4)
            self.wpe = torch.nn.Embedding(8, 4)
            self.ln_f = torch.nn.LayerNorm(4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.wte.weight  # tied: counted once

    assert matmul_params(Tiny()) == 10 * 4
