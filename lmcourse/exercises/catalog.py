"""Every exercise of chapters 01–14: statement, the course's reference, the checker's cases and the mistakes it
recognises (each a wrong implementation written the way learners get it wrong, with the hint meant for it).

The chapter modules add their exercises to :data:`EXERCISES` in chapter order when imported."""

from __future__ import annotations

from lmcourse.exercises import chapters_01_04, chapters_05_07, chapters_08_10, chapters_11_14  # noqa: F401
from lmcourse.exercises.registry import EXERCISES

__all__ = ["EXERCISES"]
