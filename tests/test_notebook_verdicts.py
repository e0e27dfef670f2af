"""Every comparison a chapter prints goes through the protocol of lmcourse.spread.

Statically: no notebook builds verdict text in its own cells, and the chapters that compare arms report through
``report`` or a ``Family``. At run time (the repository's root conftest.py, on every nbval run): a printed line
that reads as a verdict but did not come from ``report`` fails its cell. The last test runs that check on a
small notebook to show it can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO_ROOT, write_fake_notebook
from lmcourse.spread import stray_verdict_lines

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the chapters that compare arms (09 reports the benchmark's own comparison through lmcourse.bench)
COMPARING = ("06", "07", "08", "10", "11", "12", "13", "14")
HAND_BUILT = [
    (re.compile(r"\.verdict\b"), "prints Comparison.verdict itself"),
    (re.compile(r"NO_DIFFERENCE|no measurable difference|not measured:", re.I), "types verdict words"),
    (re.compile(r"print\(\s*f?[\"']?.*\bcompare\("), "prints a comparison without report()"),
    (re.compile(r"\.margin\b|\.measurable\b"), "uses the old std + std rule"),
]


def _code(path: Path) -> list[tuple[str, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(c.get("id", "?"), c.source) for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_builds_verdict_text(path):
    found = [f"{path.name} cell {cid}: {why}: {line.strip()}"
             for cid, src in _code(path) for line in src.splitlines()
             for pattern, why in HAND_BUILT if pattern.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("number", COMPARING)
def test_comparing_chapters_report_through_the_protocol(number):
    (path,) = [p for p in NOTEBOOKS if p.name.startswith(number)]
    source = "\n".join(src for _, src in _code(path))
    assert re.search(r"\breport\(|\bFamily\(", source), f"{path.name} prints no verdict through lmcourse.spread"


def test_stray_verdict_lines_are_found():
    reported = {"[a] x vs y: +0.010, 95 % CI [-0.020, +0.040], paired t, 3 pairs: no measurable difference at "
                "this budget"}
    text = "\n".join([*reported, "loss 3.2", "x vs y: +0.010, inside the spread ±0.030: no measurable difference",
                      "the arm stayed put: not measured"])
    assert stray_verdict_lines(text, reported) == [
        "x vs y: +0.010, inside the spread ±0.030: no measurable difference", "the arm stayed put: not measured"]
    assert stray_verdict_lines("\n".join(reported), reported) == []


def test_a_hand_built_verdict_fails_its_notebook_cell(tmp_path):
    """The root conftest's check on a real nbval run: the reported verdict passes, the hand-built one fails."""
    shutil.copy(REPO_ROOT / "conftest.py", tmp_path / "conftest.py")
    write_fake_notebook(tmp_path / "nb.ipynb", "profile = None", "\n".join([
        "from lmcourse.spread import compare, report",
        "c = report('ok', compare([0.8, 0.82, 0.81], [0.7, 0.72, 0.71], paired=True))",
        "print(f'x vs y: {c.difference:+.3f}: no measurable difference at this budget')"]))
    nb = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print(c.verdict_text())"))  # printed, but not by report()
    nb.cells.append(nbformat.v4.new_code_cell("report('again', c)"))
    nbformat.write(nb, tmp_path / "nb.ipynb")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "nb.ipynb"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert "2 failed, 2 passed" in out.stdout, out.stdout[-3000:]
    assert "did not record" in out.stdout and "no measurable difference at this budget" in out.stdout
