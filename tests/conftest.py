"""Test defaults: offline Hugging Face, the offline data mirror, the smoke profile, headless plots.

Set before lmcourse or datasets are imported so every test (and every notebook kernel nbval starts,
which inherits the environment) sees the same configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_MIRROR = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LMCOURSE_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
if "LMCOURSE_DATA_DIR" not in os.environ and _MIRROR.is_dir():
    os.environ["LMCOURSE_DATA_DIR"] = str(_MIRROR)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline mirror the tests read (CI: ../shared/data)."""
    value = os.environ.get("LMCOURSE_DATA_DIR")
    if not value or not (Path(value) / "glue").is_dir():
        pytest.fail("LMCOURSE_DATA_DIR must point at the offline data mirror (glue/, corpora/); "
                    "CI sets it to ../shared/data")
    return Path(value)
