"""The GLUE metric, shipped inside lmcourse as a local ``evaluate`` module (works offline).

``load_glue_metric("mrpc").compute(predictions=..., references=...)`` returns the same keys as the
Hub's ``glue`` metric plus ``combined_score`` for two-number tasks. ``glue_score`` averages per-task
scores the way the GLUE leaderboard does (``mnli_average`` is its one MNLI matched/mismatched average).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lmcourse.errors import LmcourseError, UnknownNameError

GLUE_METRIC_DIR = Path(__file__).resolve().parent / "evaluate_modules" / "glue"
GLUE_METRIC_CONFIGS = ("cola", "stsb", "mrpc", "qqp", "sst2", "mnli", "mnli_mismatched", "mnli_matched",
                       "qnli", "rte", "wnli", "hans")
TASK_TO_CONFIG = {"ax": "mnli"}


def load_glue_metric(task: str, **kwargs):
    """The ``evaluate`` GLUE metric for ``task`` (a GLUE task or metric config name), loaded by path."""
    import evaluate

    config = TASK_TO_CONFIG.get(str(task).lower(), str(task).lower())
    if config not in GLUE_METRIC_CONFIGS:
        raise UnknownNameError(f"unknown GLUE metric config {task!r}; choose one of {', '.join(GLUE_METRIC_CONFIGS)}")
    try:
        return evaluate.load(str(GLUE_METRIC_DIR), config, **kwargs)
    except Exception as exc:  # pragma: no cover - only on a broken install
        raise LmcourseError(f"could not load the GLUE metric from {GLUE_METRIC_DIR}: {exc}") from exc


def compute_glue_metric(task: str, predictions, references) -> dict[str, float]:
    """One-shot computation (checks lengths first, with a clear message)."""
    n_pred, n_ref = len(predictions), len(references)
    if n_pred != n_ref:
        raise LmcourseError(f"GLUE {task}: {n_pred} predictions but {n_ref} references; they must match")
    return load_glue_metric(task).compute(predictions=predictions, references=references)


def task_score(task: str, result: Mapping[str, float]) -> float:
    """The single number GLUE reports for a task: two-metric tasks (F1/accuracy, Pearson/Spearman) averaged."""
    if "combined_score" in result:
        return float(result["combined_score"])
    for pair in (("pearson", "spearmanr"), ("accuracy", "f1")):
        if all(k in result for k in pair):
            return float(np.mean([result[k] for k in pair]))
    for key in ("matthews_correlation", "accuracy"):
        if key in result:
            return float(result[key])
    raise LmcourseError(f"GLUE {task}: no score in result keys {sorted(result)}")


MNLI_PARTS = ("mnli_matched", "mnli_mismatched")


def mnli_average(matched: float | None, mismatched: float | None) -> float:
    """GLUE's one MNLI score: the mean of the matched and mismatched accuracies (Wang et al., 2019).

    When only one of the two was measured (the other is ``None``), that one is the score.
    """
    parts = [float(x) for x in (matched, mismatched) if x is not None]
    if not parts:
        raise LmcourseError("mnli_average: neither a matched nor a mismatched MNLI score given")
    return float(np.mean(parts))


def glue_score(per_task: Mapping[str, Mapping[str, float]]) -> float:
    """GLUE's overall score: the unweighted mean of per-task scores (Wang et al., 2019, section 4).

    Two-metric tasks are averaged first (:func:`task_score`); MNLI counts once, as the mean of its
    matched and mismatched accuracies (give them as ``mnli_matched``/``mnli_mismatched`` or as one
    ``mnli`` entry). The diagnostic set ``ax`` is not part of the score.
    """
    if not per_task:
        raise LmcourseError("glue_score: no task results given")
    scores = {t: task_score(t, r) for t, r in per_task.items() if t != "ax"}
    parts = {p: scores.pop(p) for p in MNLI_PARTS if p in scores}
    if parts:
        if "mnli" in scores:
            raise LmcourseError("glue_score: give MNLI either as 'mnli' or as 'mnli_matched'/'mnli_mismatched'")
        scores["mnli"] = mnli_average(parts.get("mnli_matched"), parts.get("mnli_mismatched"))
    if not scores:
        raise LmcourseError("glue_score: no task results besides the diagnostic set 'ax'")
    return float(np.mean(list(scores.values())))
