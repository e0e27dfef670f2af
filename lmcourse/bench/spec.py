"""Benchmark specs: parse a ``data/bench/*.yaml`` file, validate it and expand its matrix into planned runs."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmcourse.errors import ArgumentError, LmcourseError, SpecError, UnknownNameError
from lmcourse.paths import SHIPPED_DATA_DIR

SPECS_DIR = SHIPPED_DATA_DIR / "bench"
SPEC_KEYS = ("name", "description", "notebook", "matrix", "parameters", "include", "exclude", "tolerance",
             "resources")
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


@dataclass
class BenchSpec:
    """A validated spec: its name (``runs/<name>/``), file, description, planned runs and regression tolerance."""

    name: str
    path: Path
    description: str
    runs: list[PlannedRun]
    tolerance: float


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

    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    for key, items in (("include", raw.get("include") or []), ("exclude", raw.get("exclude") or [])):
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise fail(f"'{key}' must be a list of mappings", raw, key)
    for extra in raw.get("include") or []:
        combos.append({"notebook": axes["notebook"][0], **extra})
    for drop in raw.get("exclude") or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in drop.items())]
    if not combos:
        raise fail("the matrix (after include/exclude) has no runs", raw, "matrix")

    notebooks: dict[str, tuple[Path, dict]] = {}
    runs: list[PlannedRun] = []
    for combo in combos:
        nb_name = str(combo["notebook"])
        if nb_name not in notebooks:
            try:
                beside = path.parent / nb_name
                nb_path = beside.resolve() if beside.is_file() else find_notebook(nb_name)
            except LmcourseError as exc:
                raise fail(str(exc), matrix if "notebook" in matrix else raw, "notebook") from None
            notebooks[nb_name] = (nb_path, notebook_parameters(nb_path))
        nb_path, declared = notebooks[nb_name]
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
        if "seed" in params and not isinstance(params["seed"], int):
            raise fail(f"seed must be an integer, got {params['seed']!r}", matrix, "seed")
        run_id = make_run_id(nb_path, params)
        runs.append(PlannedRun(name, run_id, str(nb_path), params, dict(resources)))
    ids = [r.run_id for r in runs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise fail(f"the matrix produces the same run twice: {', '.join(dupes)}", raw, "matrix")
    return BenchSpec(name, path, str(raw.get("description", "")), runs, float(tolerance))


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
