"""Benchmark specs: parse a ``data/bench/*.yaml`` file, validate it and expand its matrix into planned runs.

Validation happens before anything runs: besides keys, notebooks, parameters, tasks and profiles, every
model a run names must be there (a known short name whose weights can be located now) or be produced by one
of the spec's ``prepare:`` steps.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmcourse.errors import ArgumentError, LmcourseError, SpecError, UnknownNameError
from lmcourse.paths import SHIPPED_DATA_DIR

SPECS_DIR = SHIPPED_DATA_DIR / "bench"
SPEC_KEYS = ("name", "description", "notebook", "matrix", "parameters", "include", "exclude", "tolerance",
             "resources", "prepare")
PREPARE_KEYS = ("notebook", "profile", "parameters", "produces")
AXES = ("notebook", "model", "task", "seed", "profile")
RESOURCE_KEYS = ("cpus", "gpus")


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping key (for error messages)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {loader.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
    return _LinedDict(mapping, lines, node.start_mark.line + 1)


class _LinedDict(dict):
    def __init__(self, data: dict, lines: dict, line: int):
        super().__init__(data)
        self.lines, self.line = lines, line

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list:
    seq = _LinedList(loader.construct_sequence(node, deep=True))
    seq.line = node.start_mark.line + 1
    return seq


class _LinedList(list):
    line: int


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: which notebook, with which parameters, into which folder."""

    bench: str
    run_id: str
    notebook: str  # path of the notebook
    parameters: dict[str, Any]
    resources: dict[str, float] = field(default_factory=dict)

    def folder(self, runs_dir: str | os.PathLike) -> Path:
        return Path(runs_dir) / self.bench / self.run_id


@dataclass(frozen=True)
class PrepareStep:
    """A notebook run once before the matrix to create a model its runs use (``prepare:`` in a spec)."""

    bench: str
    index: int  # 1-based position in ``prepare:``
    notebook: str  # path of the notebook
    parameters: dict[str, Any]  # papermill parameters, ``profile`` included
    produces: str  # a short name of lmcourse.models.KNOWN_MODELS

    @property
    def run_id(self) -> str:
        return f"prepare-{self.index}"

    def folder(self, runs_dir: str | os.PathLike) -> Path:
        return Path(runs_dir) / self.bench / self.run_id

    def ready(self) -> bool:
        """Whether the product is there already (the step can be skipped)."""
        return model_available(self.produces) is None


@dataclass
class BenchSpec:
    """A validated spec: its name (``runs/<name>/``), file, description, planned runs, regression tolerance and
    the prepare steps that make models the runs need."""

    name: str
    path: Path
    description: str
    runs: list[PlannedRun]
    tolerance: float
    prepare: list[PrepareStep] = field(default_factory=list)


def model_available(name: str) -> str | None:
    """``None`` when the short model name's weights can be located now, else the reason they cannot."""
    from lmcourse.models import KNOWN_MODELS

    try:
        KNOWN_MODELS[str(name).lower()].locate()
    except LmcourseError as exc:
        return str(exc)
    return None


def find_spec(spec: str | os.PathLike) -> Path:
    """A spec file from a path or a name shipped in ``data/bench`` (``smoke``, ``cpu``, ``gpu``)."""
    path = Path(spec)
    if path.is_file():
        return path
    for candidate in (SPECS_DIR / f"{spec}.yaml", SPECS_DIR / str(spec)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))) or "none"
    raise SpecError(f"benchmark spec {str(spec)!r} not found: give a YAML file or one of the shipped specs: {shipped}")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value).replace("/", "--")).strip("-") or "x"


def make_run_id(notebook: Path, parameters: Mapping[str, Any]) -> str:
    """Readable and stable: ``07-minilm-l6-sst2-smoke-s0`` plus a hash when other parameters are set."""
    main = [notebook.name[:2]]
    main += [_slug(parameters[k]) for k in ("model", "task", "profile") if parameters.get(k) is not None]
    if parameters.get("seed") is not None:
        main.append(f"s{parameters['seed']}")
    rest = {k: v for k, v in parameters.items() if k not in AXES}
    if rest:
        main.append(hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8])
    return "-".join(main)


def load_spec(spec: str | os.PathLike) -> BenchSpec:
    """Parse and validate a spec; every problem raises :class:`SpecError` naming the file and line."""
    from lmcourse.data import get_task
    from lmcourse.models import KNOWN_MODELS, resolve
    from lmcourse.profiles import resolve_profile_name
    from lmcourse.runner import find_notebook, notebook_parameters

    path = find_spec(spec)
    where = str(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec is a mapping with keys {', '.join(SPEC_KEYS)}")

    def fail(message: str, mapping: Any = raw, key: Any = None) -> SpecError:
        line = mapping.line_of(key) if isinstance(mapping, _LinedDict) else getattr(mapping, "line", 1)
        return SpecError(f"{where}:{line}: {message}")

    for key in raw:
        if key not in SPEC_KEYS:
            raise fail(f"unknown key {key!r}; a spec has {', '.join(SPEC_KEYS)}", raw, key)
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise fail(f"name {name!r} must be letters, digits, '.', '_' or '-' (it names runs/<name>/)", raw, "name")
    matrix = raw.get("matrix")
    if not isinstance(matrix, dict) or not matrix:
        raise fail("'matrix' must be a non-empty mapping of axis -> list of values", raw, "matrix")
    fixed = raw.get("parameters") or {}
    if not isinstance(fixed, dict):
        raise fail("'parameters' must be a mapping of papermill parameter -> value", raw, "parameters")
    tolerance = raw.get("tolerance", 0.02)
    if not isinstance(tolerance, int | float) or tolerance < 0:
        raise fail(f"'tolerance' must be a non-negative number, got {tolerance!r}", raw, "tolerance")
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or any(k not in RESOURCE_KEYS for k in resources):
        raise fail(f"'resources' must be a mapping with keys {', '.join(RESOURCE_KEYS)}", raw, "resources")

    axes: dict[str, list] = {}
    for axis, values in matrix.items():
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise fail(f"matrix axis {axis!r} is empty: the matrix would have no runs", matrix, axis)
        axes[axis] = list(values)
    if "notebook" not in axes:
        if not raw.get("notebook"):
            raise fail("no notebook: set 'notebook:' or a 'notebook' axis in the matrix", raw)
        axes = {"notebook": [raw["notebook"]], **axes}

    notebooks: dict[str, tuple[Path, dict]] = {}

    def notebook(nb_name: str, mapping: Any, key: str) -> tuple[Path, dict]:
        if nb_name not in notebooks:
            try:
                beside = path.parent / nb_name
                nb_path = beside.resolve() if beside.is_file() else find_notebook(nb_name)
            except LmcourseError as exc:
                raise fail(str(exc), mapping, key) from None
            notebooks[nb_name] = (nb_path, notebook_parameters(nb_path))
        return notebooks[nb_name]

    prepare = _prepare_steps(raw, name, fail, notebook)
    products = {step.produces: step for step in prepare}

    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    for key, items in (("include", raw.get("include") or []), ("exclude", raw.get("exclude") or [])):
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise fail(f"'{key}' must be a list of mappings", raw, key)
    included: dict[int, _LinedDict] = {}  # id of a combo -> the include mapping it came from (for its line)
    for extra in raw.get("include") or []:
        combos.append({"notebook": axes["notebook"][0], **extra})
        included[id(combos[-1])] = extra
    for drop in raw.get("exclude") or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in drop.items())]
    if not combos:
        raise fail("the matrix (after include/exclude) has no runs", raw, "matrix")

    runs: list[PlannedRun] = []
    missing: dict[str, str | None] = {}  # known model name -> why it cannot be located (None: it can)
    for combo in combos:
        nb_path, declared = notebook(str(combo["notebook"]), matrix if "notebook" in matrix else raw, "notebook")
        params = {**fixed, **{k: v for k, v in combo.items() if k != "notebook"}}
        for pname in params:
            if pname not in declared:
                src = matrix if pname in matrix else fixed if pname in fixed else raw
                raise fail(f"{nb_path.name} has no parameter {pname!r}; its parameters are {sorted(declared)}",
                           src, pname)
        try:
            if "task" in params:
                params["task"] = get_task(params["task"]).name
            if "model" in params and str(params["model"]).lower() not in KNOWN_MODELS:
                resolve(str(params["model"]))  # known names are checked when the run loads the weights
            params["profile"] = resolve_profile_name(params.get("profile"))
        except UnknownNameError as exc:
            bad = next((k for k in ("task", "model", "profile") if k in str(exc)), None)
            src = matrix if bad in matrix else fixed if bad in fixed else raw
            raise fail(exc.args[0] if exc.args else str(exc), src, bad) from None
        model_key = str(params.get("model", "")).lower()
        if model_key in KNOWN_MODELS and model_key not in products:
            if model_key not in missing:
                missing[model_key] = model_available(model_key)
            if missing[model_key] is not None:
                extra = included.get(id(combo))
                src = extra if extra is not None and "model" in extra else matrix if "model" in matrix else fixed
                raise fail(_unavailable_message(params["model"], missing[model_key]), src, "model")
        if "seed" in params and not isinstance(params["seed"], int):
            raise fail(f"seed must be an integer, got {params['seed']!r}", matrix, "seed")
        run_id = make_run_id(nb_path, params)
        runs.append(PlannedRun(name, run_id, str(nb_path), params, dict(resources)))
    ids = [r.run_id for r in runs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise fail(f"the matrix produces the same run twice: {', '.join(dupes)}", raw, "matrix")
    return BenchSpec(name, path, str(raw.get("description", "")), runs, float(tolerance), prepare)


def _unavailable_message(model: str, reason: str) -> str:
    from lmcourse.models import KNOWN_MODELS

    known = KNOWN_MODELS[str(model).lower()]
    if known.producer is None:
        return f"model {model!r} is not available: {reason}"
    nb, profile = known.producer
    return (f"{reason}; or let the sweep make it first: add the step `prepare: [{{notebook: {nb}, profile: {profile}, "
            f"produces: {known.name}}}]` to this spec")


def _prepare_steps(raw: _LinedDict, bench: str, fail: Callable[..., SpecError],
                   notebook: Callable[[str, Any, str], tuple[Path, dict]]) -> list[PrepareStep]:
    """Validate ``prepare:`` like runs: notebook, declared parameters, profile, and a product the step makes."""
    from lmcourse.models import KNOWN_MODELS
    from lmcourse.profiles import resolve_profile_name

    items = raw.get("prepare") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise fail("'prepare' must be a list of mappings {notebook, profile, parameters, produces}", raw, "prepare")
    steps: list[PrepareStep] = []
    for index, item in enumerate(items, start=1):
        label = f"prepare step {index}"
        for key in item:
            if key not in PREPARE_KEYS:
                raise fail(f"{label}: unknown key {key!r}; a step has {', '.join(PREPARE_KEYS)}", item, key)
        for key in ("notebook", "produces"):
            if not item.get(key):
                raise fail(f"{label}: {key!r} is required", item)
        nb_path, declared = notebook(str(item["notebook"]), item, "notebook")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise fail(f"{label}: 'parameters' must be a mapping of papermill parameter -> value", item, "parameters")
        if "profile" in params:
            raise fail(f"{label}: give the profile as the step's 'profile:' key, not as a parameter", params, "profile")
        for pname in params:
            if pname not in declared:
                raise fail(f"{label}: {nb_path.name} has no parameter {pname!r}; its parameters are "
                           f"{sorted(declared)}", params, pname)
        if "profile" not in declared:
            raise fail(f"{label}: {nb_path.name} has no 'profile' parameter", item, "notebook")
        try:
            profile = resolve_profile_name(item.get("profile"))
        except UnknownNameError as exc:
            raise fail(f"{label}: {exc}", item, "profile") from None
        product = str(item["produces"]).lower()
        known = KNOWN_MODELS.get(product)
        if known is None or known.producer is None:
            made = sorted(n for n, m in KNOWN_MODELS.items() if m.producer)
            raise fail(f"{label}: 'produces' must name a model a notebook makes, one of {', '.join(made)}; "
                       f"got {item['produces']!r}", item, "produces")
        want_nb, want_profile = known.producer
        if nb_path.stem != want_nb or profile != want_profile:
            raise fail(f"{label}: {known.name!r} is made by notebook {want_nb} in the {want_profile} profile, "
                       f"not by {nb_path.stem} in the {profile} profile", item, "produces")
        if any(s.produces == known.name for s in steps):
            raise fail(f"{label}: another prepare step already produces {known.name!r}", item, "produces")
        steps.append(PrepareStep(bench, index, str(nb_path), {**params, "profile": profile}, known.name))
    return steps


def select_runs(spec: BenchSpec, only: str | None = None) -> list[PlannedRun]:
    """Runs whose id matches ``only`` (a glob such as ``*sst2*``, or a plain substring).

    ``only`` is an argument of the sweep, not part of the spec: matching nothing raises
    :class:`~lmcourse.errors.ArgumentError`.
    """
    if not only:
        return list(spec.runs)
    pattern = only if any(ch in only for ch in "*?[") else f"*{only}*"
    chosen = [r for r in spec.runs if fnmatch.fnmatch(r.run_id, pattern)]
    if not chosen:
        raise ArgumentError(f"--only {only!r} matches none of the {len(spec.runs)} runs of {spec.name!r} "
                            f"(ids look like {spec.runs[0].run_id})")
    return chosen
