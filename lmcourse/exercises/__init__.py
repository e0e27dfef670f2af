"""Exercises a learner can check: every chapter 01–14 ends with problems, an instant checker, hints and solutions.

In JupyterLab a learner writes their function in the exercise cell and calls ``check("<id>", their_function)``:
it runs in seconds on seeded random inputs and edge cases (odd sizes, padding, masks, a batch of one) against
the course's reference (the same code the tests check), prints the first failing case with expected vs got,
and a hint for the mistake it recognised ("scores are not divided by √d_k"). ``hint(id)`` and ``solution(id)``
are there when asked for; ``list_exercises()`` (and ``lmcourse exercises``) shows them by chapter with what the
learner has passed, kept in ``runs/exercises/progress.json``.

Headless runs (papermill through ``lmcourse run``/``course``, nbval) must run every chapter top to bottom with no
one typing: an exercise cell passes its function through :func:`solution_for_headless`, which returns the
reference there and the learner's own function in an interactive session. :func:`headless` says which it is.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmcourse.errors import ArgumentError
from lmcourse.exercises.core import CheckResult, Exercise, run_checker

__all__ = ["CheckResult", "Exercise", "check", "exercise", "exercises_of", "headless", "hint", "list_exercises",
           "progress_path", "solution", "solution_for_headless", "statement", "unanswered"]

MODE_ENV = "LMCOURSE_EXERCISES"  # "reference": use the reference (headless); "mine": the learner's code
PROGRESS_ENV = "LMCOURSE_EXERCISES_PROGRESS"  # where the passed exercises are kept (default runs/exercises/)
_HEADLESS_SIGNS = ("LMCOURSE_VERDICT_LOG",  # set by the repository's conftest for every pytest/nbval run
                   "PYTEST_CURRENT_TEST")
_HEADLESS_PROGRESS_ENV = "TQDM_DISABLE"  # lmcourse.runner sets it for the kernels of papermill runs


def _registry() -> dict[str, Exercise]:
    from lmcourse.exercises.catalog import EXERCISES

    return {ex.id: ex for ex in EXERCISES}


def exercise(id: str) -> Exercise:
    """The exercise named ``id``; an unknown id is one clear :class:`~lmcourse.errors.ArgumentError`."""
    reg = _registry()
    if not isinstance(id, str) or id not in reg:
        raise ArgumentError(f"unknown exercise {id!r}; the exercises are: {', '.join(reg)}")
    return reg[id]


def exercises_of(chapter: int) -> list[Exercise]:
    """The exercises of one chapter (1–14), in order."""
    found = [ex for ex in _registry().values() if ex.chapter == int(chapter)]
    if not found:
        chapters = sorted({ex.chapter for ex in _registry().values()})
        raise ArgumentError(f"chapter {chapter!r} has no exercises; chapters with exercises: {chapters}")
    return found


def headless() -> bool:
    """True in an unattended run (papermill through lmcourse's runner, nbval/pytest), False in a learner's session.

    ``$LMCOURSE_EXERCISES=reference`` forces headless, ``=mine`` forces the learner's code (to try one's answers
    in a papermill run, say)."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode in {"reference", "headless"}:
        return True
    if mode in {"mine", "learner"}:
        return False
    if mode:
        raise ArgumentError(f"${MODE_ENV} must be 'reference' or 'mine', got {mode!r}")
    if any(os.environ.get(name) for name in _HEADLESS_SIGNS):
        return True
    return os.environ.get(_HEADLESS_PROGRESS_ENV) == "1" and bool(os.environ.get("LMCOURSE_RUN_DIR"))


def solution_for_headless(id: str, fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """What an exercise cell checks: the reference in a headless run, else the learner's ``fn``.

    In a notebook::

        def attention(q, k, v, mask=None):
            raise NotImplementedError  # your code here
        attention = exercises.solution_for_headless("02.sdpa", attention)
        exercises.check("02.sdpa", attention)
    """
    ex = exercise(id)
    if headless() or fn is None:
        return ex.reference
    return fn


def unanswered(id: str) -> Callable[..., Any]:
    """The placeholder an exercise cell starts with: a function that raises ``NotImplementedError``, which
    :func:`check` reports as "not written yet" (no traceback). The learner replaces it by their own function."""
    exercise(id)

    def not_written(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"exercise {id}: replace exercises.unanswered({id!r}) by your own function")

    not_written.__name__ = f"unanswered_{id.replace('.', '_')}"
    return not_written


def statement(id: str) -> str:
    """What exercise ``id`` asks for."""
    ex = exercise(id)
    return f"[{ex.id}] {ex.title}\n{ex.statement}"


def hint(id: str, *, echo: bool = True) -> str:
    """The general hint of exercise ``id`` (printed, and returned)."""
    text = exercise(id).hint
    if echo:
        print(f"hint for {id}: {text}")
    return text


def solution(id: str, *, echo: bool = True) -> Callable[..., Any]:
    """The reference solution of exercise ``id`` (the callable), with its source shown (and the lmcourse code it
    calls)."""
    ex = exercise(id)
    if echo:
        from lmcourse.notebook import show_source

        objects = [ex.reference, *[o for o in ex.shows if o is not ex.reference]]
        try:
            show_source(*objects, markdown=_in_jupyter())
        except (OSError, TypeError):  # no source available (a builtin)
            print(f"solution of {id}: {ex.reference!r}")
    return ex.reference


def _in_jupyter() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def check(id: str, fn: Callable[..., Any], *, echo: bool = True, strict: bool | None = None) -> CheckResult:
    """Check the learner's ``fn`` for exercise ``id``: prints what was found and returns a :class:`CheckResult`
    (``passed``, ``message``, the failing ``case``, the ``hint``).

    A pass in a learner's session is recorded in :func:`progress_path`. ``strict`` (default: in a headless run)
    raises an :class:`AssertionError` on a failure, so a headless run of a chapter fails when its reference
    answer no longer passes its own checker."""
    ex = exercise(id)
    result = run_checker(ex, fn)
    if echo:
        print(result.message)
    is_reference = fn is ex.reference
    if result.passed and not is_reference and not headless():
        _record_pass(id)
    if (headless() if strict is None else strict) and not result.passed:
        raise AssertionError(result.message)
    return result


# ------------------------------------------------------------------------------------------------ progress
def progress_path() -> Path:
    """The learner's progress file: ``$LMCOURSE_EXERCISES_PROGRESS``, else ``runs/exercises/progress.json``."""
    value = os.environ.get(PROGRESS_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    from lmcourse.paths import REPO_ROOT

    return REPO_ROOT / "runs" / "exercises" / "progress.json"


def passed_exercises() -> dict[str, str]:
    """``{id: when it was first passed}`` from the progress file (empty when there is none or it is unreadable)."""
    import json

    path = progress_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    passed = data.get("passed", {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in passed.items()} if isinstance(passed, dict) else {}


def _record_pass(id: str) -> None:
    from lmcourse.tracking import write_json_atomic

    passed = passed_exercises()
    if id in passed:
        return
    passed[id] = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        write_json_atomic(progress_path(), {"passed": passed})
    except OSError as err:  # a read-only checkout must not fail the learner's check
        print(f"(could not record the pass in {progress_path()}: {err})")


def list_exercises(chapter: int | None = None, *, echo: bool = True) -> list[dict[str, Any]]:
    """Every exercise (or one chapter's), by chapter: id, kind, title and whether the learner passed it."""
    exs = exercises_of(chapter) if chapter is not None else list(_registry().values())
    passed = passed_exercises()
    rows = [{"chapter": f"{ex.chapter:02d}", "id": ex.id, "kind": ex.kind, "title": ex.title,
             "passed": "yes" if ex.id in passed else ""} for ex in exs]
    if echo:
        done = sum(1 for r in rows if r["passed"])
        current = None
        for r in rows:
            if r["chapter"] != current:
                current = r["chapter"]
                print(f"chapter {current}")
            mark = "✓" if r["passed"] else " "
            print(f"  {mark} {r['id']:26s} {r['kind']:4s}  {r['title']}")
        print(f"{done} of {len(rows)} passed (progress: {progress_path()})")
    return rows


def source_of(id: str) -> str:
    """The source text of the reference of ``id`` (what :func:`solution` shows)."""
    return inspect.getsource(exercise(id).reference)
