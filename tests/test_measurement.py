"""lmcourse.measurement basics: peak FLOP/s, throughput bookkeeping, MFU, peak memory, FLOPs per token."""

from __future__ import annotations

import inspect
import time

import pytest
import torch

from lmcourse.measurement import (
    PeakMemory,
    PeakTensorMemory,
    Throughput,
    bf16_supported,
    forward_flops_per_token,
    matmul_params,
    measure_peak_flops,
    mfu,
    model_flops_per_token,
    process_peak_memory_bytes,
    synchronize,
    training_flops_per_token,
)


def test_peak_flops_needs_dtype_and_device_and_is_cached():
    params = inspect.signature(measure_peak_flops).parameters
    assert params["dtype"].default is inspect.Parameter.empty and params["device"].default is inspect.Parameter.empty
    peak = measure_peak_flops(torch.float32, "cpu", size=256, repeats=2, use_cache=False)
    assert 1e8 < peak < 1e14
    first = measure_peak_flops(torch.float32, torch.device("cpu"), repeats=1)
    assert measure_peak_flops(torch.float32, "cpu", repeats=1) == first  # cached per (device, dtype, threads)
    assert isinstance(bf16_supported("cpu"), bool) and bf16_supported("meta") is False
    synchronize("cpu")  # a no-op on the CPU
    assert process_peak_memory_bytes("cpu") > 10 * 2**20


def test_throughput_counts_tokens_padding_and_time():
    meter = Throughput(peak_flops=1e9, device=torch.device("cpu"))
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.tensor([[1] * 8, [1] * 4 + [0] * 4])
    for _ in range(2):
        meter.start()
        time.sleep(0.01)
        meter.count(ids, mask)
        meter.stop()
    assert meter.tokens == 24 and meter.padded_tokens == 32 and meter.examples == 4 and meter.batches == 2
    assert meter.steps == 2 and meter.seconds >= 0.02 and meter.mean_padded_length == 8
    assert meter.tokens_per_second == pytest.approx(24 / meter.seconds)
    assert meter.flops_per_token is None and meter.mfu is None  # no model: no FLOPs
    summary = meter.summary()
    assert summary["padding_fraction"] == pytest.approx(0.25) and summary["device"] == "cpu"
    with pytest.raises(RuntimeError):
        Throughput().stop()


def test_throughput_mfu_uses_the_model_formula():
    from lmcourse.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = GPT(cfg)
    meter = Throughput(model=model, peak_flops=1e9)
    meter.start()
    meter.count(torch.zeros(4, 16, dtype=torch.long))
    meter.stop()
    fpt = model_flops_per_token(model, 16)
    assert meter.flops_per_token == fpt and meter.train_flops == fpt * 64
    assert meter.mfu == pytest.approx(mfu(meter.padded_tokens_per_second, fpt, 1e9))


def test_flops_formula_and_matmul_params():
    # 6N + 12 L H Q T with N = 1e6, L = 2, H = 4, Q = 16, T = 128
    assert training_flops_per_token(10**6, 2, 4, 16, 128) == 6e6 + 12 * 2 * 4 * 16 * 128
    assert forward_flops_per_token(10**6, 2, 4, 16, 128) == pytest.approx((6e6 + 12 * 2 * 4 * 16 * 128) / 3)
    assert mfu(1000.0, 1e6, 1e10) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        training_flops_per_token(-1, 1, 1, 1, 1)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(10, 4)
            self.wpe = torch.nn.Embedding(8, 4)
            self.ln_f = torch.nn.LayerNorm(4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.wte.weight  # tied: counted once

    assert matmul_params(Tiny()) == 10 * 4
    assert matmul_params(Tiny(), exclude=(Tiny().wte.weight,)) == 10 * 4  # another tensor: nothing excluded


def test_encoder_flops_leave_out_the_looked_up_embedding():
    from lmcourse.models.bert import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=20)
    model = BertModel(cfg)
    n = matmul_params(model, exclude=(model.get_input_embeddings().weight,))
    assert n == matmul_params(model) - 100 * 16
    assert model_flops_per_token(model, 10) == training_flops_per_token(n, 1, 2, 8, 10)


def test_peak_memory_trackers():
    with PeakTensorMemory() as tracker:
        x = torch.zeros(1000)
        y = torch.zeros(500)
        del x, y
    assert tracker.peak == 6000
    with PeakMemory("cpu") as mem:
        big = torch.ones(8 * 2**20)  # 32 MiB
        time.sleep(0.1)
        del big
    assert mem.peak >= 0
