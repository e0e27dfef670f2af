"""Where the checkout's folders are: the one definition every module uses."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SHIPPED_DATA_DIR = REPO_ROOT / "data"  # benchmark specs, references, floors (committed)

CHECKPOINTS_ENV = "LMCOURSE_CHECKPOINTS_DIR"
DEFAULT_CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"  # git-ignored: models the notebooks publish
RUNS_DIR_ENV = "LMCOURSE_RUNS_DIR"


def checkpoints_dir() -> Path:
    """Where notebooks publish models for later ones (and benchmarks) to load: ``$LMCOURSE_CHECKPOINTS_DIR``,
    else the checkout's ``checkpoints/``. Read at call time, so a kernel started with the variable sees it."""
    value = os.environ.get(CHECKPOINTS_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_CHECKPOINTS_DIR


def default_runs_dir() -> Path:
    """``$LMCOURSE_RUNS_DIR``, else the checkout's ``runs/`` when working inside it (a notebook's working
    directory is ``notebooks/``: its runs still land next to the others), else ``./runs``."""
    if os.environ.get(RUNS_DIR_ENV):
        return Path(os.environ[RUNS_DIR_ENV])
    cwd = Path.cwd().resolve()
    root = REPO_ROOT.resolve()
    if (root / "notebooks").is_dir() and (cwd == root or root in cwd.parents):
        return root / "runs"
    return cwd / "runs"
