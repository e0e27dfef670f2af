"""The benchmark suite: a YAML spec of runs, executed with papermill, results kept as data.

A spec is a matrix of notebook × model × task × seed × profile (plus any papermill parameter of the
notebook). Every combination is one run, executed into ``runs/<bench>/<run-id>/`` (the output notebook
and ``metrics.json``, see :mod:`lmcourse.runner`). Completed runs are skipped when the sweep is started
again, so a rerun resumes it; a failing run keeps its output notebook, is marked ``failed`` and the sweep
goes on. Afterwards the runs are aggregated into ``results.csv`` (one row a run) and ``leaderboard.md``
(mean ± std over seeds per model × task, the GLUE score as GLUE defines it, published references from
``data/references/glue_dev.yaml`` and the previous results of the same spec, with regressions flagged).

Spec format (``data/bench/*.yaml``)::

    name: smoke                      # runs go to runs/<name>/
    description: two tiny runs for CI
    notebook: 07_finetuning_glue     # default notebook of the matrix
    matrix:                          # every combination of these lists is a run
      model: [minilm-l6]
      task: [sst2, mrpc]
      seed: [0]
      profile: [smoke]
    parameters: {num_epochs: 1}      # the same papermill parameters for every run (optional)
    include: []                      # extra single runs, as mappings of the axes above (optional)
    exclude: []                      # partial mappings; a run matching one is dropped (optional)
    tolerance: 0.02                  # a task score this much below the previous results is a regression
    resources: {cpus: 2, gpus: 0}    # per run, for cluster backends (optional)
    prepare:                         # notebooks run once before the matrix, to make a model it uses (optional)
      - notebook: 05_pretraining_mlm # a notebook of notebooks/ or a path beside the spec
        profile: cpu
        parameters: {}                # papermill parameters of the step (optional)
        produces: scratch-bert       # a short name a notebook publishes (lmcourse.models.KNOWN_MODELS)

Validation happens before anything runs: every model a run names must be there now (a known short name
whose weights can be located) or be the product of a prepare step; a ``produces`` must be the model that
notebook makes in that profile (``scratch-bert`` is notebook 05 in the cpu profile, ``scratch-bert-smoke`` in
smoke, ``scratch-bert-gpu`` in gpu). The sweep runs the steps whose product a pending run needs, here, into
``runs/<bench>/prepare-<n>/``, skipping one whose product already exists (``force_prepare`` runs it again);
a failing step, or one that does not publish its product, stops the sweep before the matrix starts. The
products live in ``$LMCOURSE_CHECKPOINTS_DIR`` (default ``checkpoints/``), forwarded to Ray workers: on a
cluster without a shared filesystem point it at storage the workers share.

The project ships its own measured results in ``data/results/<bench>/`` (``lmcourse bench <spec> --ship``
copies a finished sweep there with a manifest of spec, date, hardware, versions and commit); a rerun's
leaderboard compares with them per model × task, mean ± std over seeds and the verdict of
:func:`lmcourse.spread.compare`.

The parts: :mod:`~lmcourse.bench.spec` (parse and validate a spec into planned runs),
:mod:`~lmcourse.bench.executors` (run a sweep here or on Ray), :mod:`~lmcourse.bench.results` (the results
table, the leaderboard and their files), :mod:`~lmcourse.bench.shipped` (shipping results, comparing with
them), :mod:`~lmcourse.bench.aggregation` (a sweep's results, leaderboard and comparison files) and
:mod:`~lmcourse.bench.report` (finding results to report on, published reference scores).
The command is ``lmcourse bench`` (:mod:`lmcourse.cli`). Import from
``lmcourse.bench``; the submodules are an implementation detail.
"""

from __future__ import annotations

from lmcourse.bench.aggregation import aggregate
from lmcourse.bench.executors import (
    FORWARDED_ENV,
    MAX_SHIPPED_BYTES,
    Executor,
    SweepResult,
    execute_prepare,
    execute_run,
    make_executor,
    run_spec,
    run_status,
)
from lmcourse.bench.report import (
    SHIPPED_RESULTS_DIR,
    find_results,
    is_shipped,
    load_reference_entries,
    load_references,
)
from lmcourse.bench.results import (
    METRIC_NAMES,
    PERF_NAMES,
    REQUIRED_RESULT_COLUMNS,
    RESULT_COLUMNS,
    collect_results,
    leaderboard,
    leaderboard_markdown,
    load_results,
    result_row,
    validate_results,
)
from lmcourse.bench.shipped import (
    MANIFEST_FILE,
    ShippedResults,
    compare_with_shipped,
    comparison_markdown,
    comparison_summary,
    load_shipped,
    ship_results,
    sweep_state,
)
from lmcourse.bench.spec import (
    AXES,
    PREPARE_KEYS,
    RESOURCE_KEYS,
    SPEC_KEYS,
    BenchSpec,
    PlannedRun,
    PrepareStep,
    find_spec,
    load_spec,
    make_run_id,
    model_available,
    select_runs,
)

__all__ = [
    "AXES",
    "FORWARDED_ENV",
    "MANIFEST_FILE",
    "MAX_SHIPPED_BYTES",
    "METRIC_NAMES",
    "PERF_NAMES",
    "PREPARE_KEYS",
    "REQUIRED_RESULT_COLUMNS",
    "RESOURCE_KEYS",
    "RESULT_COLUMNS",
    "SHIPPED_RESULTS_DIR",
    "SPEC_KEYS",
    "BenchSpec",
    "Executor",
    "PlannedRun",
    "PrepareStep",
    "ShippedResults",
    "SweepResult",
    "aggregate",
    "collect_results",
    "compare_with_shipped",
    "comparison_markdown",
    "comparison_summary",
    "execute_prepare",
    "execute_run",
    "find_results",
    "find_spec",
    "is_shipped",
    "leaderboard",
    "leaderboard_markdown",
    "load_reference_entries",
    "load_references",
    "load_results",
    "load_shipped",
    "load_spec",
    "make_executor",
    "make_run_id",
    "model_available",
    "result_row",
    "run_spec",
    "run_status",
    "select_runs",
    "ship_results",
    "sweep_state",
    "validate_results",
]
