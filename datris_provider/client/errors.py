"""Errors raised by the Datris client and the run-tracking core.

Each error says whether an Airflow retry can help (``retryable``); the Airflow-facing classes turn
the ones that cannot into ``AirflowFailException`` so no retry is wasted on them.
"""

from __future__ import annotations


class DatrisError(Exception):
    """Base class of every error this provider raises about Datris."""

    retryable: bool = True


class DatrisConfigError(DatrisError):
    """Something the user configured is wrong: the connection, an argument, the tap's set-up."""

    retryable = False


class DatrisScheduledTapError(DatrisConfigError):
    """The tap has a cron schedule, so Datris's own scheduler owns it (the one-scheduler rule)."""


class DatrisAuthError(DatrisError):
    """Datris refused the API key (401), or the key lacks a capability (403)."""

    retryable = False


class DatrisApiError(DatrisError):
    """Datris answered a call with an error.

    :param message: what went wrong, with the server's own first line.
    :param status_code: the HTTP status, when there was an answer.
    :param route: the call, e.g. ``GET /api/v1/tap``.
    """

    def __init__(self, message: str, *, status_code: int | None = None, route: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.route = route


class DatrisTransientError(DatrisApiError):
    """A failure that may go away by itself: connection error, timeout, 429, 502/503/504."""


class DatrisRunCallInterrupted(DatrisTransientError):
    """The blocking ``POST /tap/run`` call was cut before its answer arrived; the run may go on."""


class DatrisProtocolError(DatrisError):
    """An answer this provider does not understand. It fails closed: nothing is reported as success."""

    retryable = False


class DatrisRunFailedError(DatrisError):
    """The tap script failed, or a pipeline job ended in error."""


class DatrisRunNotFoundError(DatrisError):
    """A cut run call left no trace on Datris: the run never started, so a retry may start it."""


class DatrisWaitTimeoutError(DatrisError):
    """The wait for the pipeline exceeded its bound (``timeout`` or the no-job grace period)."""

    retryable = False


class DatrisRunStoppedError(DatrisError):
    """The wait was stopped because Airflow is killing the task."""

    retryable = False


class DatrisTapBusyError(DatrisError):
    """The tap is busy with a run this task did not start, and the task may not adopt it."""


class DatrisRunAmbiguousError(DatrisError):
    """A cut run call left more than one candidate run: the provider will not guess which is this task's.

    A retry would post the run again, possibly loading it twice, so it is left to the user.
    """

    retryable = False
