"""Seeds and spread: how the course turns several runs into a number and a comparison into a conclusion.

A single run is one draw: the seed fixes the initialisation of new weights, dropout masks, the order of
batches and any subsample. A number the course reports from a comparison is therefore the **mean ± sample
standard deviation over seeds** (:class:`Spread`), and two configurations are called different only when the
gap between their means is larger than the two spreads together (:func:`compare`): the ±1 std error bars do
not overlap. That rule is deliberately simple and conservative; with three seeds it misses small real
effects rather than reporting noise as findings. Anything inside the spread is reported as "no measurable
difference at this budget".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lmcourse.errors import ArgumentError

NO_DIFFERENCE = "no measurable difference at this budget"


@dataclass(frozen=True)
class Spread:
    """Runs of one configuration that differ only in the seed."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof = 1); ``nan`` for a single run, which has no spread."""
        if self.n < 2:
            return float("nan")
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (self.n - 1))

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``"0.812 ± 0.011 (n=3)"``; a single run prints without a ± (it has no spread)."""
        if self.n < 2:
            return f"{scale * self.mean:.{digits}f} (n=1)"
        return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f} (n={self.n})"

    def __str__(self) -> str:
        return self.format()


def spread(values: Iterable[float]) -> Spread:
    """A :class:`Spread` of finite numbers (one per seed)."""
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ArgumentError("spread() needs at least one value (one run per seed)")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise ArgumentError(f"spread() got non-finite values {bad}: a run diverged or was not scored")
    return Spread(vals)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the gap of the means and whether it is larger than the spread."""

    name_a: str
    name_b: str
    a: Spread
    b: Spread

    @property
    def difference(self) -> float:
        """mean(a) − mean(b)."""
        return self.a.mean - self.b.mean

    @property
    def margin(self) -> float:
        """What the gap must exceed: std(a) + std(b) (``nan`` when either side has one run)."""
        return self.a.std + self.b.std

    @property
    def measurable(self) -> bool:
        """True when both sides have ≥ 2 seeds and |gap| > std(a) + std(b)."""
        return self.a.n >= 2 and self.b.n >= 2 and abs(self.difference) > self.margin

    @property
    def verdict(self) -> str:
        gap = f"{self.difference:+.3f}"
        if self.a.n < 2 or self.b.n < 2:
            return f"{self.name_a} vs {self.name_b}: {gap} from a single seed, no spread: no conclusion"
        if not self.measurable:
            return f"{self.name_a} vs {self.name_b}: {gap}, inside the spread ±{self.margin:.3f}: {NO_DIFFERENCE}"
        word = "higher" if self.difference > 0 else "lower"
        return f"{self.name_a} is {word} than {self.name_b} by {abs(self.difference):.3f} (spread ±{self.margin:.3f})"

    def __str__(self) -> str:
        return self.verdict


def compare(a: Iterable[float] | Spread, b: Iterable[float] | Spread, names: tuple[str, str] = ("a", "b")
            ) -> Comparison:
    """Compare two configurations run over seeds (see the module docstring for the rule)."""
    sa = a if isinstance(a, Spread) else spread(a)
    sb = b if isinstance(b, Spread) else spread(b)
    return Comparison(names[0], names[1], sa, sb)


def significant_gains(comparisons: Sequence[Comparison], fdr: float = 0.05) -> list[bool]:
    """Which of several comparisons show ``a`` above ``b`` when they are read together.

    Any one of ten comparisons clears its spread by chance far more often than a single one does, so a claim
    of the form "some variant beats its control" must pass a correction for multiple comparisons. Each gain
    gets a one-sided Welch test (``scipy.stats.ttest_ind``, ``alternative="greater"``), and the p-values of all
    comparisons go through Benjamini–Hochberg (``scipy.stats.false_discovery_control``) at rate ``fdr``. A
    comparison counts only when it is also :attr:`Comparison.measurable` with a positive gap. Sides with no
    variance at all give no test (p = 1)."""
    from scipy import stats

    if not 0 < fdr < 1:
        raise ArgumentError(f"fdr is a false-discovery rate in (0, 1), got {fdr}")
    if not comparisons:
        return []
    pvalues = []
    for c in comparisons:
        p = float("nan")
        if c.a.n >= 2 and c.b.n >= 2 and (c.a.std > 0 or c.b.std > 0):
            with warnings.catch_warnings():  # one side of identical scores (a run stuck at the majority class)
                warnings.simplefilter("ignore", RuntimeWarning)
                p = stats.ttest_ind(c.a.values, c.b.values, equal_var=False, alternative="greater").pvalue
        pvalues.append(1.0 if not math.isfinite(p) else float(p))
    adjusted = stats.false_discovery_control(pvalues, method="bh")
    return [bool(c.measurable and c.difference > 0 and q <= fdr) for c, q in zip(comparisons, adjusted)]

def seed_table(rows: Sequence[dict[str, Any]], by: Sequence[str], value: str, digits: int = 3):
    """One row per group of ``by``: runs, mean, std and the printable ``mean ± std`` (a DataFrame).

    ``rows`` hold one run each (typically with a ``seed`` column); groups keep their first-seen order."""
    import pandas as pd

    by = list(by)
    if not rows:
        raise ArgumentError("seed_table() got no rows: nothing was run")
    missing = sorted({c for c in [*by, value] for r in rows if c not in r})
    if missing:
        raise ArgumentError(f"seed_table(): rows lack the column(s) {missing}")
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r[c] for c in by), []).append(r[value])
    out = []
    for key, vals in groups.items():
        s = spread(vals)
        out.append({**dict(zip(by, key)), "runs": s.n, "mean": s.mean, "std": s.std,
                    "mean ± std": s.format(digits)})
    return pd.DataFrame(out)


def spreads(rows: Sequence[dict[str, Any]], by: str, value: str) -> dict[Any, Spread]:
    """``{group: Spread}`` of ``value`` per value of the column ``by`` (first-seen order)."""
    groups: dict[Any, list[float]] = {}
    for r in rows:
        groups.setdefault(r[by], []).append(r[value])
    return {k: spread(v) for k, v in groups.items()}


def plot_seeds(ax, rows: Sequence[dict[str, Any]], x: str, value: str, *, horizontal: bool = False,
               label: str | None = None, color: str | None = None, offset: float = 0.0):
    """Each seed as a small dot and the mean ± std as a bar with caps, one position per value of ``x``.

    Categorical ``x`` (strings) go to positions 0, 1, ...; returns the categories in plotted order."""
    import numpy as np

    per = spreads(rows, x, value)
    cats = list(per)
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cats)
    pos = np.asarray(cats, dtype=float) if numeric else np.arange(len(cats), dtype=float)
    pos = pos * (1 + offset) if numeric and offset else pos + offset
    means = [per[c].mean for c in cats]
    stds = [0.0 if per[c].n < 2 else per[c].std for c in cats]
    rng = np.random.default_rng(0)  # jitter only, for legibility
    for p, c in zip(pos, cats):
        vals = np.asarray(per[c].values)
        jitter = (rng.uniform(-0.08, 0.08, len(vals)) * (p if numeric else 1)) if len(vals) > 1 else 0
        pts = (vals, np.full(len(vals), p) + jitter) if horizontal else (np.full(len(vals), p) + jitter, vals)
        ax.scatter(*pts, s=12, alpha=0.45, color=color, zorder=3)
    if horizontal:
        ax.errorbar(means, pos, xerr=stds, fmt="o", capsize=4, color=color, label=label, zorder=4)
        if not numeric:
            ax.set_yticks(pos, [str(c) for c in cats])
    else:
        ax.errorbar(pos, means, yerr=stds, fmt="o", capsize=4, color=color, label=label, zorder=4)
        if not numeric:
            ax.set_xticks(pos, [str(c) for c in cats])
    return cats
