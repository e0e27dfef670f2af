"""lmcourse.spread: mean ± std over seeds and the "beyond the spread" rule."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from lmcourse.errors import ArgumentError
from lmcourse.spread import NO_DIFFERENCE, compare, plot_seeds, seed_table, significant_gains, spread


def test_spread_matches_the_sample_statistics():
    vals = [0.81, 0.79, 0.84, 0.80]
    s = spread(vals)
    assert s.n == 4
    assert s.mean == pytest.approx(statistics.fmean(vals), abs=1e-15)
    assert s.std == pytest.approx(statistics.stdev(vals), abs=1e-15)
    assert s.std == pytest.approx(float(np.std(vals, ddof=1)), abs=1e-15)
    assert s.format(2) == f"0.81 ± {statistics.stdev(vals):.2f} (n=4)"


def test_single_run_has_no_spread():
    s = spread([0.5])
    assert np.isnan(s.std) and s.format() == "0.500 (n=1)"
    c = compare([0.9], [0.1])
    assert not c.measurable and "no conclusion" in c.verdict


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [float("inf")]])
def test_spread_rejects_empty_or_non_finite(bad):
    with pytest.raises(ArgumentError):
        spread(bad)


def test_compare_needs_the_gap_to_exceed_both_spreads():
    a, b = [0.80, 0.82, 0.84], [0.765, 0.785, 0.805]  # std 0.02 each, gap 0.035 < their sum 0.04
    c = compare(a, b, names=("lora", "full"))
    assert c.difference == pytest.approx(0.035)
    assert c.margin == pytest.approx(0.04)
    assert not c.measurable and NO_DIFFERENCE in c.verdict
    c2 = compare([0.85, 0.87, 0.89], [0.76, 0.78, 0.80], names=("lora", "full"))  # gap 0.09 > 0.04
    assert c2.measurable and c2.verdict.startswith("lora is higher than full by 0.090")
    c3 = compare([0.76, 0.78, 0.80], [0.85, 0.87, 0.89], names=("full", "lora"))
    assert c3.measurable and "lower" in c3.verdict


def test_seed_table_groups_in_order_and_formats():
    rows = [{"config": c, "seed": s, "acc": v} for c, vs in (("b", [0.5, 0.7]), ("a", [0.9, 0.9, 0.9]))
            for s, v in enumerate(vs)]
    df = seed_table(rows, ["config"], "acc")
    assert list(df["config"]) == ["b", "a"]
    assert list(df["runs"]) == [2, 3]
    assert df["mean"].tolist() == pytest.approx([0.6, 0.9])
    assert df["std"].tolist() == pytest.approx([statistics.stdev([0.5, 0.7]), 0.0])
    assert df["mean ± std"].iloc[0] == "0.600 ± 0.141 (n=2)"
    with pytest.raises(ArgumentError, match="lack"):
        seed_table(rows, ["method"], "acc")


def test_plot_seeds_draws_every_seed_and_the_mean():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"k": k, "seed": s, "score": k / 100 + s / 1000} for k in (8, 16, 64) for s in range(3)]
    fig, ax = plt.subplots()
    cats = plot_seeds(ax, rows, "k", "score", label="x")
    assert cats == [8, 16, 64]
    dots = ax.collections[:3]
    assert sum(len(d.get_offsets()) for d in dots) == 9
    line = ax.lines[0]  # the errorbar's mean markers
    assert np.allclose(line.get_ydata(), [k / 100 + 0.001 for k in (8, 16, 64)])
    plt.close(fig)


def test_significant_gains_corrects_for_many_comparisons():
    from scipy import stats

    # a gain just past its spread (0.021 against 0.020; one-sided Welch p = 0.005) ...
    chance = compare([0.70, 0.72, 0.70, 0.72, 0.71], [0.699, 0.679, 0.699, 0.679, 0.689], ("lucky", "twin"))
    assert chance.measurable and chance.difference > 0
    rng = np.random.default_rng(0)
    nulls = [compare(rng.normal(0.7, 0.01, 5), rng.normal(0.7, 0.01, 5)) for _ in range(9)]
    real = compare([0.90, 0.91, 0.92, 0.90, 0.91], [0.70, 0.71, 0.70, 0.69, 0.70], ("pretrained", "twin"))
    # ... passes alone, but not as one of ten comparisons; a large gain passes among them
    assert significant_gains([chance]) == [True]
    assert significant_gains([chance, *nulls]) == [False] * 10
    got = significant_gains([chance, *nulls, real])
    assert got[-1] is True and not any(got[1:-1])
    # the same as scipy's one-sided Welch tests followed by Benjamini-Hochberg
    p = [stats.ttest_ind(c.a.values, c.b.values, equal_var=False, alternative="greater").pvalue
         for c in [chance, *nulls, real]]
    q = stats.false_discovery_control(p, method="bh")
    assert got == [bool(c.measurable and c.difference > 0 and qi <= 0.05) for c, qi in zip([chance, *nulls, real], q)]
    # a loss is never a gain; no variance gives no test; bad rates and no comparisons
    assert significant_gains([compare([0.5, 0.5], [0.6, 0.6])]) == [False]
    assert significant_gains([]) == []
    with pytest.raises(ArgumentError, match="fdr"):
        significant_gains([real], fdr=0)
