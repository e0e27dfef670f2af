"""After training: error analysis, the majority baseline, the regularisation and speed ablations.

The ablation tables name ``finetune()`` overrides; the notebooks run each row with several seeds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcourse.data import get_task
from lmcourse.paths import SHIPPED_DATA_DIR

if TYPE_CHECKING:
    from lmcourse.finetuning.run import EvalPredictions

#: The regularisation ablation: name -> finetune() overrides.
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no weight decay": {"weight_decay": 0.0},
    "weight decay 0.1": {"weight_decay": 0.1},
    "no dropout": {"dropout": 0.0},
    "dropout 0.3": {"dropout": 0.3},
    "early stopping (patience 1)": {"early_stopping_patience": 1},
    "FGM ε=1": {"fgm_epsilon": 1.0},
}

#: The speed comparison: run_glue.py's plain recipe, then one optimisation added at a time.
SPEED_CONFIGS: dict[str, dict[str, Any]] = {
    "plain (pad to 128, fp32, random order)": {"pad_to_max_length": True, "group_by_length": False, "bf16": False},
    "+ dynamic padding": {"pad_to_max_length": False, "group_by_length": False, "bf16": False},
    "+ group_by_length": {"pad_to_max_length": False, "group_by_length": True, "bf16": False},
    "+ bf16 autocast": {"pad_to_max_length": False, "group_by_length": True, "bf16": True},
}


def load_floors(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``data/finetune_floors.yaml``: per-profile, per-task metric floors asserted by notebook 07."""
    import yaml

    path = Path(path) if path is not None else SHIPPED_DATA_DIR / "finetune_floors.yaml"
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def most_confident_mistakes(pred: EvalPredictions, task: str, n: int = 10):
    """The ``n`` wrong predictions the model was surest of (classification), or the largest errors
    (regression), with their texts: where to look first in error analysis."""
    import pandas as pd

    spec = get_task(task)
    ex = pred.examples
    if spec.is_regression:
        err = np.abs(pred.predictions - pred.labels)
        order = np.argsort(-err)[:n]
        rows = [{**{c: ex[int(i)][c] for c in spec.input_columns}, "label": float(pred.labels[i]),
                 "predicted": float(pred.predictions[i]), "abs error": float(err[i])} for i in order]
        return pd.DataFrame(rows)
    probs = pred.probabilities
    wrong = np.flatnonzero(pred.predictions != pred.labels)
    conf = probs[wrong, pred.predictions[wrong]]
    order = wrong[np.argsort(-conf)][:n]
    names = spec.label_names
    rows = [{**{c: ex[int(i)][c] for c in spec.input_columns}, "label": names[int(pred.labels[i])],
             "predicted": names[int(pred.predictions[i])], "confidence": float(probs[i, pred.predictions[i]])}
            for i in order]
    return pd.DataFrame(rows)


def tfidf_baseline(task: str, train, evaluation, seed: int = 0) -> dict[str, float]:
    """The GLUE metric of a TF-IDF + logistic-regression model (ridge regression for STS-B) trained on ``train``
    and scored on ``evaluation`` (``datasets.Dataset`` of the task): the bag-of-words baseline a fine-tuned
    encoder must beat. Sentence pairs get the TF-IDF vectors of both sentences and their element-wise product
    (the words they share), one vectoriser fitted on all training sentences
    (:func:`lmcourse.readout.tfidf_features`). C is fixed at 1 here; :func:`lmcourse.readout.tfidf_probe`
    chooses it by the probes' cross-validation inside ``train``."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from lmcourse.finetuning.trainer import task_metrics
    from lmcourse.readout import tfidf_features

    spec = get_task(task)
    x_train, x_eval = tfidf_features(task, train, evaluation)
    y_train = np.asarray(train["label"])
    if spec.is_regression:
        model = Ridge(alpha=1.0).fit(x_train, y_train)
    else:
        model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x_train, y_train)
    return task_metrics(spec.name, model.predict(x_eval), np.asarray(evaluation["label"]))


def majority_baseline(task: str, labels) -> dict[str, float]:
    """The GLUE metric of always predicting the most frequent label of ``labels`` (regression: the mean)."""
    from lmcourse.finetuning.trainer import task_metrics

    spec = get_task(task)
    labels = np.asarray(labels)
    if spec.is_regression:  # a constant prediction has no correlation with anything: score 0 by definition
        return {"pearson": 0.0, "spearmanr": 0.0, "combined_score": 0.0}
    preds = np.full(len(labels), int(np.bincount(labels.astype(int)).argmax()))
    return task_metrics(spec.name, preds, labels)
