"""T5's span corruption: lengths, measured noise density and span length over many draws, reassembly."""

from __future__ import annotations

import importlib

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


def test_segment_length_pmf_is_the_exact_distribution():
    import itertools
    import math

    from lmcourse.pretraining.span_corruption import segment_length_pmf

    for n, k in [(7, 3), (9, 1), (10, 4), (19, 6)]:
        pmf = segment_length_pmf(n, k)
        assert sum(pmf) == pytest.approx(1.0, abs=1e-12)
        # brute force: every way to cut n items into k non-empty segments, equally likely
        first, last, cuts = [0] * n, [0] * n, list(itertools.combinations(range(1, n), k - 1))
        assert len(cuts) == math.comb(n - 1, k - 1)
        for c in cuts:
            bounds = [0, *c, n]
            first[bounds[1] - bounds[0] - 1] += 1
            last[bounds[-1] - bounds[-2] - 1] += 1
        for counts in (first, last):
            assert [x / len(cuts) for x in counts[:len(pmf)]] == pytest.approx(pmf, abs=1e-12)
            assert not any(counts[len(pmf):])
    with pytest.raises(ArgumentError):
        segment_length_pmf(3, 4)


def _masks(draws: int, length: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [noise_span_mask(length, generator=g) for _ in range(draws)]


def _balls_into_bins(num_items, num_segments, generator):
    """A plausible wrong sampler: one item per segment, the rest thrown into segments uniformly (too even)."""
    extra = torch.randint(num_segments, (num_items - num_segments,), generator=generator)
    return 1 + torch.bincount(extra, minlength=num_segments)


def _longest_first(num_items, num_segments, generator):
    """The right lengths in the wrong order: the pooled histogram is exact, the positions are not."""
    sc = importlib.import_module("lmcourse.pretraining.span_corruption")
    return sc._uniform_segmentation(num_items, num_segments, generator).sort(descending=True).values


def test_segmentation_chisquare_accepts_t5s_sampler_and_rejects_biased_ones(monkeypatch):
    sc = importlib.import_module("lmcourse.pretraining.span_corruption")  # the module, not the function

    level = 1e-3
    for length, seed in [(128, 0), (200, 2)]:  # 19 noise tokens in 6 spans; 30 in 10
        res = sc.segmentation_chisquare(_masks(600, length, seed))
        assert res["df"] > 10 and res["draws"] == 600
        assert res["p_value"] > level, res
    # p is uniform under the null: over 12 seeds of a small test, neither all above 0.5 nor all below
    ps = [sc.segmentation_chisquare(_masks(150, 64, 100 + s))["p_value"] for s in range(10)]
    assert 1 <= sum(p > 0.5 for p in ps) <= 9, ps
    monkeypatch.setattr(sc, "_uniform_segmentation", sc._random_segmentation, raising=False)
    for biased in (_balls_into_bins, _longest_first):
        monkeypatch.setattr(sc, "_random_segmentation", biased)
        res = sc.segmentation_chisquare(_masks(400, 128, 0))
        assert res["p_value"] < level, (biased.__name__, res)
    with pytest.raises(ArgumentError, match="one length"):
        sc.segmentation_chisquare([torch.zeros(10, dtype=torch.bool), torch.zeros(12, dtype=torch.bool)])
    with pytest.raises(ArgumentError, match="at least one"):
        sc.segmentation_chisquare([])
