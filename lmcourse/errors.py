"""Errors the course raises on bad input: one clear message saying what was wrong and what to do."""

from __future__ import annotations


class LmcourseError(Exception):
    """Base class of every user-facing lmcourse error."""


class UnknownNameError(LmcourseError, KeyError):
    """An unknown task, model, profile, metric config or corpus name."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class DataUnavailableError(LmcourseError, FileNotFoundError):
    """A dataset or split that none of the configured sources can provide."""


class SpecError(LmcourseError, ValueError):
    """A malformed benchmark spec or parameter."""
