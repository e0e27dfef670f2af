"""T5's span corruption: lengths, measured noise density and span length over many draws, reassembly."""

from __future__ import annotations

import pytest
import torch

from lmcourse.errors import ArgumentError
from lmcourse.pretraining import (
    corrupted_lengths,
    noise_span_mask,
    reassemble_spans,
    span_corruption,
    span_corruption_batch,
    span_counts,
)

SENTINELS = list(range(1000, 1200))  # ids no text below uses, like T5's <extra_id_k> at the vocabulary's end


def _runs(mask: torch.Tensor) -> list[tuple[bool, int]]:
    """(is_noise, length) of each run of equal values."""
    runs: list[tuple[bool, int]] = []
    for v in mask.tolist():
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    return runs


def test_t5_counts_and_the_paper_example():
    assert span_counts(512) == (77, 26)  # T5: 15 % of 512 tokens, mean span 3
    assert span_counts(10) == (2, 1) and span_counts(2) == (1, 1) and span_counts(3, 0.9) == (2, 1)
    assert corrupted_lengths(568) == (568 - 85 + 28, 85 + 28)
    g = torch.Generator().manual_seed(0)
    text = list(range(100, 111))  # "Thank you for inviting me to your party last week ."
    inputs, targets = span_corruption(text, sentinel_ids=SENTINELS, generator=g)
    assert (len(inputs), len(targets)) == corrupted_lengths(11)
    assert reassemble_spans(inputs, targets, SENTINELS) == text
    assert targets[0] == SENTINELS[0] and inputs[0] == text[0]  # the text starts with kept tokens


def test_density_and_span_length_over_many_draws():
    g = torch.Generator().manual_seed(1)
    noise, spans, span_lengths = 0, 0, []
    per_position = torch.zeros(200)
    draws = 400
    for _ in range(draws):
        mask = noise_span_mask(200, generator=g)
        per_position += mask.float()
        runs = _runs(mask)
        assert not runs[0][0] and runs[-1][0]  # starts kept, ends with a noise span
        assert [r[0] for r in runs] == [k % 2 == 1 for k in range(len(runs))]  # alternating, no empty span
        noise += int(mask.sum())
        spans += sum(1 for r in runs if r[0])
        span_lengths += [n for is_noise, n in runs if is_noise]
    assert noise / (draws * 200) == pytest.approx(0.15, abs=1e-9)  # 30 of 200, every draw
    assert sum(span_lengths) / len(span_lengths) == pytest.approx(3.0, abs=1e-9)  # 30 tokens in 10 spans
    assert min(span_lengths) >= 1 and max(span_lengths) > 6  # random lengths, not all 3
    # the spans fall anywhere: away from the ends (the first token is always kept, the last always noise)
    # every position is noise about 15 % of the time
    freq = per_position[10:-10] / draws
    assert per_position[0] == 0 and per_position[-1] == draws
    assert 0.12 < float(freq.mean()) < 0.18 and float(freq.min()) > 0.05 and float(freq.max()) < 0.25
    # over many lengths the measured density stays at 15 % (T5 rounds per text) and spans at ~3 tokens
    dens, means = [], []
    for n in range(20, 700, 7):
        mask = noise_span_mask(n, generator=g)
        runs = [k for is_noise, k in _runs(mask) if is_noise]
        dens.append(float(mask.float().mean()))
        means.append(sum(runs) / len(runs))
    assert sum(dens) / len(dens) == pytest.approx(0.15, abs=0.005)
    assert sum(means) / len(means) == pytest.approx(3.0, abs=0.15)


def test_inputs_and_targets_reassemble_the_original():
    g = torch.Generator().manual_seed(2)
    for n in [2, 3, 5, 17, 64, 301]:
        for density, span in [(0.15, 3.0), (0.5, 1.0), (0.3, 8.0)]:
            text = torch.randint(0, 1000, (n,), generator=g)
            inputs, targets = span_corruption(text, density, span, sentinel_ids=SENTINELS, generator=g)
            assert isinstance(inputs, torch.Tensor)
            assert reassemble_spans(inputs.tolist(), targets.tolist(), SENTINELS) == text.tolist()
            assert (inputs.numel(), targets.numel()) == corrupted_lengths(n, density, span)
            _, num_spans = span_counts(n, density, span)
            assert inputs[torch.isin(inputs, torch.tensor(SENTINELS))].tolist() == SENTINELS[:num_spans]
            assert targets[torch.isin(targets, torch.tensor(SENTINELS))].tolist() == SENTINELS[:num_spans]


def test_seeded_and_batched():
    text = list(range(50))
    a = span_corruption(text, sentinel_ids=SENTINELS, generator=torch.Generator().manual_seed(3))
    b = span_corruption(text, sentinel_ids=SENTINELS, generator=torch.Generator().manual_seed(3))
    assert a == b
    blocks = torch.randint(0, 900, (4, 40))
    batch = span_corruption_batch(blocks, SENTINELS, eos_token_id=1, generator=torch.Generator().manual_seed(0))
    n_in, n_out = corrupted_lengths(40)
    assert batch["input_ids"].shape == (4, n_in + 1) and batch["labels"].shape == (4, n_out + 1)
    assert bool((batch["labels"][:, -1] == 1).all()) and bool(batch["attention_mask"].all())
    for row, inp, lab in zip(blocks, batch["input_ids"], batch["labels"], strict=True):
        assert reassemble_spans(inp[:-1].tolist(), lab[:-1].tolist(), SENTINELS) == row.tolist()


def test_bad_arguments():
    with pytest.raises(ArgumentError, match="sentinel_ids"):
        span_corruption([1, 2, 3])
    with pytest.raises(ArgumentError, match="sentinel"):
        span_corruption(list(range(200)), sentinel_ids=[7, 8])
    with pytest.raises(ArgumentError, match="noise_density"):
        span_corruption([1, 2, 3], noise_density=1.5, sentinel_ids=SENTINELS)
    with pytest.raises(ArgumentError, match="at least 2"):
        span_corruption([1], sentinel_ids=SENTINELS)
