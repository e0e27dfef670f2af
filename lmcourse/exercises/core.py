"""The machinery of the exercises: an exercise, its cases, the mistakes it recognises, and the checker.

An exercise of kind ``"code"`` asks for a function. Its checker calls the learner's function and the course's
reference on the same seeded random inputs and edge cases (odd sizes, padding, masks, a batch of one) and
compares the outputs (shape first, then values). On the first case that differs it tries each *mistake* the
exercise knows: a mistake is a wrong implementation written the way learners get it wrong (a missing scale, a
mask on the wrong side...). When the learner's output equals that mistake's output, the message gives the
mistake's hint; otherwise the general hint. Exercises whose answer is random (MLM masking) or an opinion (open
exercises) bring their own ``custom`` checker.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lmcourse.errors import ArgumentError


@dataclass(frozen=True)
class Case:
    """One input of a checker: ``fn(*args, **kwargs)``, named for the message (``"batch of one, padded"``)."""

    name: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return f"{self.name}: ({', '.join(parts)})"


@dataclass(frozen=True)
class Mistake:
    """A common wrong answer: ``impl`` computes what it gives (same signature as the answer), ``hint`` says what
    to fix. ``name`` is short ("no 1/sqrt(d_k) scale")."""

    name: str
    impl: Callable[..., Any]
    hint: str


@dataclass
class CheckResult:
    """What :func:`lmcourse.exercises.check` found. ``passed``; ``message`` (what a learner reads); ``case`` (the
    first failing case, ``None`` when passed); ``hint`` (the hint that was given, ``None`` when passed);
    ``mistake`` (the name of the recognised mistake, if one was)."""

    id: str
    passed: bool
    message: str
    case: str | None = None
    hint: str | None = None
    mistake: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:  # the message itself is printed by check(); the repr stays one line
        return f"CheckResult(id={self.id!r}, passed={self.passed})"


@dataclass
class Exercise:
    """One exercise. ``reference`` is the course's implementation (the solution); ``cases()`` the checker's inputs;
    ``mistakes`` the wrong answers it recognises; ``hint`` the general hint; ``shows`` the lmcourse objects whose
    source :func:`lmcourse.exercises.solution` shows beside the reference. ``custom(fn) -> (case, problem, hint,
    mistake)`` replaces the comparison with the reference (``case is None``: passed). ``compare(expected, got)``
    may replace the default comparison (returns ``None`` when equal, else what differs)."""

    id: str
    chapter: int
    title: str
    statement: str
    reference: Callable[..., Any]
    hint: str
    cases: Callable[[], list[Case]] | None = None
    mistakes: Sequence[Mistake] = ()
    kind: str = "code"  # "code" or "open"
    shows: Sequence[Any] = ()
    custom: Callable[[Callable[..., Any]], tuple[str | None, str, str | None, str | None]] | None = None
    compare: Callable[[Any, Any], str | None] | None = None
    atol: float = 1e-5
    rtol: float = 1e-4

    def differs(self, expected: Any, got: Any) -> str | None:
        if self.compare is not None:
            return self.compare(expected, got)
        return difference(expected, got, atol=self.atol, rtol=self.rtol)


# ----------------------------------------------------------------------------------------------- comparison
def _short(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, np.ndarray):
        return f"array{x.shape}"
    if isinstance(x, Mapping):
        return f"dict of {len(x)}"
    if isinstance(x, list | tuple) and len(x) > 6:
        return f"{type(x).__name__} of {len(x)}"
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_array(x: Any) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy() if x.is_floating_point() or x.dtype == torch.bool \
            else x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, bool | int | float | np.number) and not isinstance(x, bool):
        return np.asarray(x, dtype=np.float64)
    return None


def difference(expected: Any, got: Any, *, atol: float = 1e-5, rtol: float = 1e-4, where: str = "") -> str | None:
    """``None`` when ``got`` equals ``expected`` (tensors and arrays to ``atol``/``rtol``, shapes exactly), else
    one sentence saying where and how they differ: shape, then the first differing value."""
    at = f" at {where}" if where else ""
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"expected a dict{at}, got {type(got).__name__}"
        if set(expected) != set(got):
            missing, extra = sorted(map(str, set(expected) - set(got))), sorted(map(str, set(got) - set(expected)))
            return f"keys differ{at}: missing {missing[:5]}, unexpected {extra[:5]}"
        for k in expected:
            d = difference(expected[k], got[k], atol=atol, rtol=rtol, where=f"{where}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(expected, tuple | list) and not isinstance(expected, str):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return (f"expected a {type(expected).__name__} of {len(expected)}{at}, got "
                    f"{type(got).__name__}{f' of {len(got)}' if isinstance(got, tuple | list) else ''}")
        if all(isinstance(e, str | bool | type(None)) for e in expected):
            if list(expected) != list(got):
                first = next(i for i, (e, g) in enumerate(zip(expected, got)) if e != g)
                return f"item {first}{at} differs: expected {expected[first]!r}, got {got[first]!r}"
            return None
        for i, (e, g) in enumerate(zip(expected, got)):
            d = difference(e, g, atol=atol, rtol=rtol, where=f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if got == expected else f"expected {expected!r}{at}, got {_short(got)}"
    e = _as_array(expected)
    if e is None:
        return None if got == expected else f"expected {expected!r}{at}, got {got!r}"
    if isinstance(got, bool) or got is None:
        return f"expected {_short(expected)}{at}, got {got!r}"
    if isinstance(expected, torch.Tensor) and not isinstance(got, torch.Tensor):
        return f"expected a torch tensor{at}, got {type(got).__name__}"
    if isinstance(expected, torch.Tensor) and expected.dtype == torch.bool and got.dtype != torch.bool:
        return f"expected a boolean tensor{at} (True = may attend), got dtype {str(got.dtype).replace('torch.', '')}"
    g = _as_array(got)
    if g is None:
        try:
            g = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError):
            return f"expected {_short(expected)}{at}, got {type(got).__name__}"
    if e.shape != g.shape:
        return f"shape{at}: expected {e.shape if e.shape else 'a scalar'}, got {g.shape if g.shape else 'a scalar'}"
    if e.size == 0:
        return None
    ef, gf = e.astype(np.float64), g.astype(np.float64)
    same_inf = (np.isinf(ef) & np.isinf(gf) & (np.sign(ef) == np.sign(gf))) | (np.isnan(ef) & np.isnan(gf))
    close = same_inf | np.isclose(ef, gf, atol=atol, rtol=rtol)
    if close.all():
        return None
    idx = tuple(int(i) for i in np.argwhere(~close)[0])
    n_bad = int((~close).sum())
    pos = f"index {idx if len(idx) != 1 else idx[0]}" if idx else "the value"
    return (f"value{at}, {pos}: expected {_fmt(ef[idx])}, got {_fmt(gf[idx])} "
            f"({n_bad} of {e.size} entries differ)")


def _fmt(v: float) -> str:
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.6g}"


# --------------------------------------------------------------------------------------------- the checker
def _call(fn: Callable[..., Any], case: Case) -> Any:
    # every call gets its own copy: an answer that writes into its inputs must not change the next call's
    return fn(*copy.deepcopy(case.args), **copy.deepcopy(dict(case.kwargs)))


def run_checker(ex: Exercise, fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn`` against ``ex``: the first failing case, what differs, the hint for the recognised mistake."""
    if not callable(fn):
        raise ArgumentError(f"check({ex.id!r}, fn): fn must be the function you wrote (a callable), "
                            f"got {type(fn).__name__}")
    if ex.custom is not None:
        try:
            case, problem, hint, mistake = ex.custom(fn)
        except NotImplementedError:
            return _not_written(ex)
        except Exception as err:  # a learner's bug is a failed check, not a traceback
            return CheckResult(ex.id, False, f"✗ {ex.id}: your answer raised {type(err).__name__}: {err}\n"
                               f"  hint: {ex.hint}", case="first call", hint=ex.hint)
        if case is None:
            return CheckResult(ex.id, True, f"✓ {ex.id}: {problem}")
        hint = hint or ex.hint
        return CheckResult(ex.id, False, f"✗ {ex.id}: {case}\n  {problem}\n  hint: {hint}", case=case, hint=hint,
                           mistake=mistake)
    cases = ex.cases() if ex.cases is not None else []
    outputs: list[tuple[Case, Any, Any]] = []  # (case, expected, got) up to and including the first failure
    failure: tuple[Case, str] | None = None
    for case in cases:
        expected = _call(ex.reference, case)
        try:
            got = _call(fn, case)
        except NotImplementedError:
            return _not_written(ex)
        except Exception as err:
            return CheckResult(ex.id, False, f"✗ {ex.id}: case {case.describe()}\n  your function raised "
                               f"{type(err).__name__}: {err}\n  hint: {ex.hint}", case=case.name, hint=ex.hint)
        outputs.append((case, expected, got))
        problem = ex.differs(expected, got)
        if problem is not None and failure is None:
            failure = (case, problem)
    if failure is None:
        return CheckResult(ex.id, True, f"✓ {ex.id}: all {len(cases)} cases agree with the course's reference")
    case, problem = failure
    mistake = _recognise(ex, outputs, case)
    hint = mistake.hint if mistake else ex.hint
    head = f"✗ {ex.id}: case {case.describe()}\n  {problem}"
    if mistake:
        head += f"\n  this looks like: {mistake.name}"
    return CheckResult(ex.id, False, f"{head}\n  hint: {hint}", case=case.name, hint=hint,
                       mistake=mistake.name if mistake else None)


def _recognise(ex: Exercise, outputs: list[tuple[Case, Any, Any]], failing: Case) -> Mistake | None:
    """The known mistake that reproduces the learner's outputs: it must match the first failing case, and of
    those the one matching the most cases wins (two mistakes can agree on one case and not on the others)."""
    best, best_score = None, -1
    for m in ex.mistakes:
        score, matches_failing = 0, False
        for case, _, got in outputs:
            try:
                wrong = _call(m.impl, case)
            except Exception:
                continue
            if ex.differs(wrong, got) is None:
                score += 1
                matches_failing = matches_failing or case is failing
        if matches_failing and score > best_score:
            best, best_score = m, score
    return best


def _not_written(ex: Exercise) -> CheckResult:
    return CheckResult(ex.id, False, f"… {ex.id}: not written yet (your function raises NotImplementedError). "
                       f"Replace exercises.unanswered({ex.id!r}) (or the body of your function) by your code and "
                       f"run the cell again.", case="not written", hint=ex.hint)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
