"""A run listener that writes the core's progress to any logger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence


class LogListener:
    """Sends the core's progress to a logger (a task's, a trigger's, or a plain ``logging`` one)."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def info(self, message: str) -> None:
        self._log.info("%s", message)

    def warning(self, message: str) -> None:
        self._log.warning("%s", message)

    def error(self, message: str) -> None:
        self._log.error("%s", message)

    def tokens_known(self, publisher_token: str | None, pipeline_tokens: Sequence[str], pipeline: str | None) -> None:
        self._log.info("Datris publisher token %s, pipeline jobs %s.", publisher_token, ", ".join(pipeline_tokens))

    def pipeline_ended(self, publisher_token: str) -> None:
        """The run's pipeline reached a terminal state (nothing to log: the events said it)."""

    def posting(self, known_run_times: Sequence[str]) -> None:
        """This task is about to post its own run (nothing to log: the core says it)."""
