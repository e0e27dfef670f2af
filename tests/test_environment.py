"""pip (pyproject + requirements.txt) and conda (environment.yml) list the same packages and versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        [spec] = list(req.specifier)
        assert spec.operator == "==", f"requirements.txt must pin exactly: {line}"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _pyproject() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["cluster"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _conda() -> dict[str, Version]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                req = Requirement(line.split("#", 1)[0].strip())
                out[canonicalize_name(req.name)] = Version(next(iter(req.specifier)).version)
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*=+\s*([0-9][^\s=]*)?", dep) or re.fullmatch(r"([A-Za-z0-9_.\-]+)", dep)
        name = CONDA_TO_PYPI.get(m.group(1), m.group(1))
        if name in NOT_PACKAGES:
            continue
        assert m.lastindex == 2, f"environment.yml: pin {dep!r} to the version in requirements.txt"
        out[canonicalize_name(name)] = Version(m.group(2))
    return out


def test_same_packages_everywhere():
    pins, pyproject, conda = _pins(), _pyproject(), _conda()
    assert set(pins) == set(pyproject), (
        f"only in requirements.txt: {sorted(set(pins) - set(pyproject))}; "
        f"only in pyproject.toml: {sorted(set(pyproject) - set(pins))}")
    assert set(pins) == set(conda), (
        f"only in requirements.txt: {sorted(set(pins) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pins))}")


def test_pins_satisfy_ranges_and_agree():
    pins, pyproject, conda = _pins(), _pyproject(), _conda()
    for name, version in pins.items():
        assert pyproject[name].specifier.contains(version, prereleases=True), (
            f"{name}=={version} (requirements.txt) is outside pyproject's {pyproject[name].specifier}")
        assert conda[name] == version, f"{name}: environment.yml has {conda[name]}, requirements.txt {version}"
    # the local CPU wheel: an unpinned torch would pull GBs of CUDA packages
    assert pins["torch"] == Version("2.13.0")


def test_installed_versions_are_the_pins():
    from importlib.metadata import version

    for name, pinned in _pins().items():
        installed = Version(version(name))
        assert installed.release == pinned.release, f"{name}: installed {installed}, pinned {pinned}"
