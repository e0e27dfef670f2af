"""lmcourse: large language models from theory to practice — the reusable code of the course."""

from __future__ import annotations

from lmcourse.errors import ArgumentError, DataUnavailableError, LmcourseError, SpecError, UnknownNameError

__version__ = "0.1.0"

__all__ = ["ArgumentError", "DataUnavailableError", "LmcourseError", "SpecError", "UnknownNameError", "__version__"]
