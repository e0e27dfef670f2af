"""Where the checkout's folders are: the one definition every module uses."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SHIPPED_DATA_DIR = REPO_ROOT / "data"  # benchmark specs, references, floors (committed)
