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
    """A malformed benchmark spec (unknown key, axis, value or an empty matrix)."""


class ArgumentError(LmcourseError, ValueError):
    """Impossible arguments to a function or command (a size that does not fit, a value out of range)."""
