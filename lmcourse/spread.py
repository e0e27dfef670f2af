"""Seeds, intervals and verdicts: the one protocol every comparison in the course goes through.

A single run is one draw: the seed fixes the initialisation of new weights, dropout masks, the order of
batches and any subsample. A configuration is therefore summarised by its runs over seeds (:class:`Spread`),
and two configurations are compared by :func:`compare`, which applies four rules:

- **Liveness.** Given ``chance`` (the score of the task's constant predictor: the majority class, the mean
  prediction, a unigram model), an arm counts only when its own 95 % interval lies beyond it. An arm that did
  not learn makes the comparison *not measured*; it is never reported as "no measurable difference", which
  would read as a finding.
- **Pairing.** Arms that share seeds, subsets or dev examples are compared per pair (``paired=True``): the
  interval is a t interval of the per-pair differences, so what the pairs share cancels. Arms that share
  nothing get Welch's interval (unequal variances, Welch–Satterthwaite degrees of freedom).
- **A named interval.** :attr:`Comparison.interval` is a 95 % confidence interval of the difference of means,
  and every verdict names it ("+0.031, 95 % CI [+0.004, +0.058], paired t, 5 pairs"). Student's t is exact for
  normal scores at any count, which matters at the 3–5 seeds the course can afford; a percentile bootstrap
  over three values would undercover badly.
- **The unit of replication.** When an arm rests on one upstream run (one pretraining run, one teacher),
  ``upstream=`` says so in the verdict: the interval then covers the downstream draws (seeds, examples) only,
  not a rerun of the upstream step.

Several comparisons read together form a :class:`Family`; Benjamini–Hochberg runs within a family, never
across families. Every verdict is printed and recorded by one function, :func:`report`, under
``verdict/<name>/`` (``gap``, ``ci_low``, ``ci_high``, ``measured``).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmcourse.errors import ArgumentError

NO_DIFFERENCE = "no measurable difference at this budget"
NOT_MEASURED = "not measured"
#: when set (the test suite sets it for the notebooks nbval runs), :func:`report` appends each printed line
#: to this file, so that a verdict printed by any other route can be told apart (:func:`stray_verdict_lines`)
VERDICT_LOG_ENV = "LMCOURSE_VERDICT_LOG"
#: what marks a printed line as a verdict
VERDICT_WORDS = (NO_DIFFERENCE, "no measurable difference", NOT_MEASURED, "% CI", " is higher than ",
                 " is lower than ", "inside the spread", "beyond the spread")
LEVEL = 0.95  # every interval the course prints is a 95 % confidence interval


def _t_quantile(level: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


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

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Student's t confidence interval of the mean (``(nan, nan)`` for a single run)."""
        if self.n < 2:
            return float("nan"), float("nan")
        half = _t_quantile(level, self.n - 1) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``"0.812 ± 0.011 (n=3)"`` (mean ± sample std); a single run prints without a ± (it has no spread)."""
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


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}"


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the gap of the means, its 95 % confidence interval, and whether both arms learned.

    Made by :func:`compare`; see the module docstring for the rules."""

    name_a: str
    name_b: str
    a: Spread
    b: Spread
    paired: bool = False
    chance: float | None = None
    chance_label: str = "the constant predictor"
    higher_is_better: bool = True
    upstream: str | None = None
    level: float = LEVEL
    unlearned: tuple[tuple[str, str], ...] = ()  # (arm, what it did not learn), known from an earlier check
    fixed_b: bool = False  # b is one published number, not runs: a one-sample t interval of a's mean minus it

    @property
    def difference(self) -> float:
        """mean(a) − mean(b) (for paired arms also the mean of the per-pair differences)."""
        return self.a.mean - self.b.mean

    @property
    def n(self) -> int:
        """Pairs (paired), a's runs (against a fixed value) or the smaller arm's runs (unpaired)."""
        return self.a.n if self.paired or self.fixed_b else min(self.a.n, self.b.n)

    @property
    def method(self) -> str:
        return "paired t" if self.paired else "one-sample t" if self.fixed_b else "Welch t"

    def _has_interval(self) -> bool:
        return self.a.n >= 2 and (self.fixed_b or self.b.n >= 2)

    @property
    def differences(self) -> tuple[float, ...]:
        """The per-pair differences a − b (paired comparisons only)."""
        if not self.paired:
            raise ArgumentError("an unpaired comparison has no per-pair differences")
        return tuple(x - y for x, y in zip(self.a.values, self.b.values))

    def _se_df(self) -> tuple[float, float]:
        """Standard error of the difference and its degrees of freedom (paired t, or Welch–Satterthwaite)."""
        if self.paired:
            d = spread(self.differences)
            return d.std / math.sqrt(d.n), d.n - 1
        if self.fixed_b:
            return self.a.std / math.sqrt(self.a.n), self.a.n - 1
        va, vb = self.a.std ** 2 / self.a.n, self.b.std ** 2 / self.b.n
        se = math.sqrt(va + vb)
        if se == 0:
            return 0.0, float(self.a.n + self.b.n - 2)
        df = (va + vb) ** 2 / (va ** 2 / (self.a.n - 1) + vb ** 2 / (self.b.n - 1))
        return se, df

    @property
    def interval(self) -> tuple[float, float]:
        """The ``level`` (95 %) confidence interval of mean(a) − mean(b); ``(nan, nan)`` with a single run."""
        if not self._has_interval():
            return float("nan"), float("nan")
        se, df = self._se_df()
        half = _t_quantile(self.level, df) * se if se > 0 else 0.0
        return self.difference - half, self.difference + half

    @property
    def p_value(self) -> float:
        """Two-sided p-value of "no difference" from the same t statistic as :attr:`interval` (1 without one)."""
        from scipy import stats

        if not self._has_interval():
            return 1.0
        se, df = self._se_df()
        if se == 0:
            return 1.0 if self.difference == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.difference) / se, df))

    def _dead(self, s: Spread) -> bool:
        if self.chance is None:
            return False
        lo, hi = s.interval(self.level)
        return not (lo > self.chance if self.higher_is_better else hi < self.chance)

    @property
    def dead_arms(self) -> tuple[str, ...]:
        """The arms whose interval does not lie beyond ``chance`` (they did not learn); a fixed ``b`` is not
        checked (it is a published number, not a run)."""
        if not self._has_interval():
            return ()
        told = {arm for arm, _ in self.unlearned}
        arms = ((self.name_a, self.a),) if self.fixed_b else ((self.name_a, self.a), (self.name_b, self.b))
        return tuple(name for name, s in arms if self._dead(s) or name in told)

    @property
    def measured(self) -> bool:
        """Both arms have ≥ 2 runs (an interval) and, when ``chance`` is given, both beat it beyond their interval."""
        return self._has_interval() and not self.dead_arms

    @property
    def significant(self) -> bool:
        """Measured, and the confidence interval of the difference excludes 0."""
        lo, hi = self.interval
        return self.measured and (lo > 0 or hi < 0)

    @property
    def better(self) -> bool:
        """Significant in the direction of ``a`` being better (``higher_is_better`` decides the sign)."""
        return self.significant and (self.difference > 0) == self.higher_is_better

    def describe_interval(self, digits: int = 3) -> str:
        """``"+0.031, 95 % CI [+0.004, +0.058], paired t, 5 pairs"``."""
        lo, hi = self.interval
        count = (f"{self.n} pairs" if self.paired else f"{self.a.n} runs against a fixed value" if self.fixed_b
                 else f"{self.a.n} vs {self.b.n} runs")
        return (f"{_signed(self.difference, digits)}, {100 * self.level:g} % CI "
                f"[{_signed(lo, digits)}, {_signed(hi, digits)}], {self.method}, {count}")

    def verdict_text(self, digits: int = 3) -> str:
        head = f"{self.name_a} vs {self.name_b}"
        gap = _signed(self.difference, digits)
        if not self._has_interval():
            text = f"{head}: {gap} from a single run, no interval: {NOT_MEASURED}"
        elif self.dead_arms:
            told = {arm for arm, _ in self.unlearned}
            at_chance = [name for name in self.dead_arms if name not in told]
            parts = []
            if at_chance:
                lows = "; ".join(f"{name} {s.mean:.{digits}f}" for name, s in ((self.name_a, self.a),
                                                                                 (self.name_b, self.b))
                                 if name in at_chance)
                parts.append(f"{' and '.join(at_chance)} stayed at {self.chance_label}, not beyond it by "
                             f"{'their' if len(at_chance) > 1 else 'its'} own {100 * self.level:g} % CI "
                             f"({lows}; {self.chance_label} {self.chance:.{digits}f})")
            whats: dict[str, list[str]] = {}
            for arm, what in self.unlearned:
                whats.setdefault(arm, []).append(what)
            parts += [f"{arm} did not learn {', '.join(ws)}" for arm, ws in whats.items()]
            text = f"{head}: {NOT_MEASURED}: {'; '.join(parts)}"
        elif not self.significant:
            text = f"{head}: {self.describe_interval(digits)}: {NO_DIFFERENCE}"
        else:
            word = "higher" if self.difference > 0 else "lower"
            text = f"{self.name_a} is {word} than {self.name_b}: {self.describe_interval(digits)}"
        if self.upstream:
            text += f" [rests on {self.upstream}: the interval does not cover a rerun of it]"
        return text

    @property
    def verdict(self) -> str:
        return self.verdict_text()

    def __str__(self) -> str:
        return self.verdict


def compare(a: Iterable[float] | Spread, b: Iterable[float] | Spread | float, names: tuple[str, str] = ("a", "b"), *,
            paired: bool = False, chance: float | None = None, chance_label: str = "the constant predictor",
            higher_is_better: bool = True, upstream: str | None = None, level: float = LEVEL,
            unlearned: Iterable[tuple[str, str]] = ()) -> Comparison:
    """Compare two configurations run over seeds (see the module docstring for the rules).

    ``paired=True`` when ``a[i]`` and ``b[i]`` share a seed, a subset or the examples they are scored on (the
    values must then be in the same order). ``chance`` is the constant predictor's score on the task (with
    ``chance_label`` naming it in the verdict: "the majority class"); ``higher_is_better=False`` for losses.
    ``b`` may be one number (a published reference): the interval is then the one-sample t interval of
    mean(a) minus it. ``upstream`` names the one upstream run both arms rest on ("one pretraining run"), if
    any. ``unlearned`` lists ``(arm, what)`` for arms an earlier check found did not learn something the
    compared number reads (a task whose accuracy never left the majority class, say): such an arm is dead
    whatever its own scores."""
    fixed_b = isinstance(b, int | float) and not isinstance(b, bool)
    sa = a if isinstance(a, Spread) else spread(a)
    sb = spread([b]) if fixed_b else b if isinstance(b, Spread) else spread(b)
    if fixed_b and paired:
        raise ArgumentError("a fixed reference value has no pairs: pass paired=False")
    if paired and sa.n != sb.n:
        raise ArgumentError(f"a paired comparison needs one value per pair on each side, got {sa.n} and {sb.n}: "
                            "pass paired=False for arms that share nothing")
    if not 0 < level < 1:
        raise ArgumentError(f"level must be in (0, 1), got {level}")
    if chance is not None and not math.isfinite(float(chance)):
        raise ArgumentError(f"chance must be a finite score of the constant predictor, got {chance}")
    told = tuple((str(arm), str(what)) for arm, what in unlearned)
    strangers = sorted({arm for arm, _ in told} - set(names))
    if strangers:
        raise ArgumentError(f"unlearned names arms {strangers} that are not compared here ({names[0]!r}, "
                            f"{names[1]!r})")
    return Comparison(names[0], names[1], sa, sb, paired=paired, chance=None if chance is None else float(chance),
                      chance_label=chance_label, higher_is_better=higher_is_better, upstream=upstream, level=level,
                      unlearned=told, fixed_b=fixed_b)


def significant_gains(comparisons: Sequence[Comparison], fdr: float = 0.05) -> list[bool]:
    """Which of several comparisons, read together as one family, show ``a`` better than ``b``.

    Any one of ten comparisons clears its interval by chance far more often than a single one does, so a claim
    of the form "some variant beats its control" must pass a correction for multiple comparisons: the
    two-sided p-values of each comparison's own t statistic (:attr:`Comparison.p_value`, paired or Welch) go
    through Benjamini–Hochberg (``scipy.stats.false_discovery_control``) at rate ``fdr``. A comparison counts
    only when it is also measured (both arms learned) and its gap is in the better direction. Call it once per
    :class:`Family`, never over a mix of families."""
    from scipy import stats

    if not 0 < fdr < 1:
        raise ArgumentError(f"fdr is a false-discovery rate in (0, 1), got {fdr}")
    if not comparisons:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        adjusted = stats.false_discovery_control([c.p_value for c in comparisons], method="bh")
    return [bool(c.measured and c.significant and (c.difference > 0) == c.higher_is_better and q <= fdr)
            for c, q in zip(comparisons, adjusted)]


def verdict_key(label: str) -> str:
    """A label as one segment of a verdict name: ``"gradient×input"`` -> ``"gradient_x_input"``, ``"FGM ε=1"``
    -> ``"fgm_eps=1"``, ``"random order (mean of seeds)"`` -> ``"random_order_mean_of_seeds"``."""
    key = label.lower().replace("×", "_x_").replace("ε", "eps")
    key = re.sub(r"[^a-z0-9.+=-]+", "_", key).strip("_")
    if not key:
        raise ArgumentError(f"label {label!r} has no letter or digit to name a verdict by")
    return key


_NAME = re.compile(r"^[A-Za-z0-9_.+=-]+(/[A-Za-z0-9_.+=-]+)*$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ArgumentError(f"a verdict name is a metric path of letters, digits and _.+=- joined by '/', "
                            f"got {name!r}")
    return name


def verdict_metrics(comparison: Comparison) -> dict[str, float | int]:
    """What :func:`report` records of one comparison: ``gap``, ``ci_low``, ``ci_high`` and ``measured`` (1/0)."""
    lo, hi = comparison.interval
    return {"gap": comparison.difference, "ci_low": lo, "ci_high": hi, "measured": int(comparison.measured)}


def report(name: str, comparison: Comparison, *, digits: int = 3, echo: bool = True) -> Comparison:
    """Print a comparison's verdict and record it under ``verdict/<name>/``: the one way a chapter reports one.

    Returns the comparison, so a notebook can go on to assert on it."""
    from lmcourse.tracking import record_metrics

    _check_name(name)
    if not isinstance(comparison, Comparison):
        raise ArgumentError(f"report() takes a Comparison from lmcourse.spread.compare, got {type(comparison)}")
    record_metrics(verdict_metrics(comparison), prefix=f"verdict/{name}")
    line = f"[{name}] {comparison.verdict_text(digits)}"
    log = os.environ.get(VERDICT_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "line": line, "measured": comparison.measured}) + "\n")
    if echo:
        print(line)
    return comparison


def reported_lines(log: str | os.PathLike) -> set[str]:
    """The lines :func:`report` wrote to a verdict log (see ``VERDICT_LOG_ENV``)."""
    try:
        with open(log, encoding="utf-8") as f:
            return {json.loads(row)["line"] for row in f if row.strip()}
    except FileNotFoundError:
        return set()


def stray_verdict_lines(text: str, reported: set[str]) -> list[str]:
    """Lines of printed output that read as a verdict but were not printed by :func:`report`.

    A chapter that builds its own verdict text (``print(f"... no measurable difference")``, or a
    ``Comparison.verdict`` printed without being recorded) shows up here."""
    return [line for line in text.splitlines()
            if any(w in line for w in VERDICT_WORDS) and line.strip() not in reported]


@dataclass
class Family:
    """Comparisons read together (one claim of the form "some of these show a gain"), corrected together.

    Benjamini–Hochberg runs within the family only, so a gain in one family is never diluted by the nulls of
    another: keep arms of different kinds (teacher-guided and teacher-free, say) in separate families.
    ``two_sided=True`` for a family that asks "which arms differ" (a ranking of objectives) rather than "which
    variants beat their control": its summary then names significant differences in either direction."""

    name: str
    fdr: float = 0.05
    two_sided: bool = False
    comparisons: dict[str, Comparison] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not 0 < self.fdr < 1:
            raise ArgumentError(f"fdr is a false-discovery rate in (0, 1), got {self.fdr}")

    def add(self, name: str, comparison: Comparison) -> Comparison:
        """Add one comparison (printed and recorded by :func:`report` as ``<family>/<name>``)."""
        _check_name(name)
        if name in self.comparisons:
            raise ArgumentError(f"family {self.name!r} already has a comparison named {name!r}")
        self.comparisons[name] = comparison
        return report(f"{self.name}/{name}", comparison)

    def gains(self) -> dict[str, bool]:
        """Which comparisons show a gain (``a`` better) after Benjamini–Hochberg within this family."""
        return dict(zip(self.comparisons, significant_gains(list(self.comparisons.values()), self.fdr)))

    def differences(self) -> dict[str, bool]:
        """Which comparisons differ in either direction after Benjamini–Hochberg within this family."""
        from scipy import stats

        cs = list(self.comparisons.values())
        if not cs:
            return {}
        q = stats.false_discovery_control([c.p_value for c in cs], method="bh")
        return {k: bool(c.measured and c.significant and qi <= self.fdr) for k, c, qi in zip(self.comparisons, cs, q)}

    def summary(self) -> str:
        """One line: how many comparisons were measured and which survive the correction (recorded)."""
        from lmcourse.tracking import record_metrics

        measured = sum(c.measured for c in self.comparisons.values())
        if self.two_sided:
            found = [k for k, ok in self.differences().items() if ok]
            names = ", ".join(f"{k} ({'higher' if self.comparisons[k].difference > 0 else 'lower'})"
                              for k in found) or "none"
            what = "differences"
        else:
            found = [k for k, ok in self.gains().items() if ok]
            names = ", ".join(found) or "none"
            what = "gains"
        record_metrics({"comparisons": len(self.comparisons), "measured": measured, what: len(found)},
                       prefix=f"verdict/{self.name}")
        return (f"family {self.name!r}: {measured} of {len(self.comparisons)} comparisons measured; {what} after "
                f"Benjamini–Hochberg at FDR {self.fdr:g}: {names}")


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
