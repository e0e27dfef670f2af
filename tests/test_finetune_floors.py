"""The cpu floors of notebook 07 (data/finetune_floors.yaml) against the project's shipped cpu benchmark.

A floor must mean something and must be passable: it sits above the majority-class baseline of the dev set by
more than the seed spread, and at least one standard deviation under the mean of the shipped three-seed runs.
(Notebook 07 also checks each floor against the TF-IDF baseline of the run at hand.)"""

from __future__ import annotations

import csv

import pytest

from lmcourse import finetuning as ft
from lmcourse.data import load_glue
from lmcourse.paths import SHIPPED_DATA_DIR
from lmcourse.profiles import get_profile
from lmcourse.spread import spread

SHIPPED_CPU = SHIPPED_DATA_DIR / "results" / "cpu" / "results.csv"
FLOORS = ft.load_floors().get("cpu", {})


def _shipped_runs(task: str) -> list[dict[str, str]]:
    model = get_profile("cpu").finetune_model
    with SHIPPED_CPU.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["task"] == task and r["model"] == model
                and r["status"] == "completed" and r["profile"] == "cpu"]


def test_every_floor_has_shipped_runs_behind_it():
    assert FLOORS, "data/finetune_floors.yaml has no cpu floors"
    assert SHIPPED_CPU.is_file(), f"{SHIPPED_CPU} is missing: ship the cpu benchmark results"
    for task in FLOORS:
        assert len(_shipped_runs(task)) >= 3, f"{task}: fewer than three shipped seeds"


@pytest.mark.parametrize(("task", "metric"), [(t, m) for t, ms in FLOORS.items() for m in ms])
def test_floor_is_above_the_majority_class_by_more_than_the_spread_and_below_the_mean(task, metric):
    floor = FLOORS[task][metric]
    measured = spread(float(r[metric]) for r in _shipped_runs(task))
    labels = load_glue(task, "validation")["label"]
    majority = ft.majority_baseline(task, labels)[metric]
    assert floor > majority + measured.std, (f"{task} {metric}: floor {floor} is not above the majority class "
                                             f"{majority:.4f} by more than the seed spread {measured.std:.4f}")
    assert floor <= measured.mean - measured.std, (f"{task} {metric}: floor {floor} is within one std of the "
                                                   f"measured {measured}: an ordinary seed would fail it")
