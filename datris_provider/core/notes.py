"""A run listener that keeps what it is told, for a trigger to hand to the task that resumes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


class NoteCollector:
    """Collects the core's messages as ``(level, text)`` pairs instead of logging them.

    A trigger's log is rewritten by the next deferral of the same try, so what a trigger has to say
    travels in its event and the task writes it to the task log, once.
    """

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.notes.append(("info", message))

    def warning(self, message: str) -> None:
        self.notes.append(("warning", message))

    def error(self, message: str) -> None:
        self.notes.append(("error", message))

    def tokens_known(self, publisher_token: str | None, pipeline_tokens: Sequence[str], pipeline: str | None) -> None:
        """The task pushes the tokens when it resumes."""

    def pipeline_ended(self, publisher_token: str) -> None:
        """The task records the end when it resumes."""

    def posting(self, known_run_times: Sequence[str]) -> None:
        """A trigger cannot write task state; the task recorded the post before it deferred."""
