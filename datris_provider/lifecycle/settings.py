"""The wait arguments every Datris task takes, checked once when the DAG is defined.

Imported at DAG-parse time by the operators and the sensor, so it imports nothing heavy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from datris_provider.core.pipeline import PipelineFollower
    from datris_provider.core.tap_run import RunListener

DEFAULT_TIMEOUT = timedelta(hours=12)
DEFAULT_POLL_INTERVAL = 15.0
DEFAULT_NO_JOB_TIMEOUT = 300.0
DEFAULT_MAX_POLL_FAILURES = 5


def to_seconds(value: float | timedelta | None, *, name: str, allow_zero: bool) -> float | None:
    """A number of seconds or a timedelta as seconds, or a clear error naming the argument."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}.")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"{name} must be {bound} seconds, not {value!r}.")
    return float(seconds)


@dataclass(frozen=True)
class WaitSettings:
    """The wait arguments every Datris task takes, checked once when the DAG is defined.

    :param poll_interval: seconds between status polls.
    :param timeout: seconds the wait may take (``None``: no bound beyond Datris's own).
    :param no_job_timeout: seconds a token may show no job before the wait fails.
    :param max_poll_failures: failed polls in a row tolerated.
    """

    poll_interval: float = DEFAULT_POLL_INTERVAL
    timeout: float | None = DEFAULT_TIMEOUT.total_seconds()
    no_job_timeout: float = DEFAULT_NO_JOB_TIMEOUT
    max_poll_failures: int = DEFAULT_MAX_POLL_FAILURES

    @classmethod
    def checked(
        cls,
        *,
        poll_interval: float | timedelta = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        no_job_timeout: float | timedelta = DEFAULT_NO_JOB_TIMEOUT,
        max_poll_failures: int = DEFAULT_MAX_POLL_FAILURES,
    ) -> WaitSettings:
        if isinstance(max_poll_failures, bool) or not isinstance(max_poll_failures, int) or max_poll_failures < 0:
            raise ValueError(f"max_poll_failures must be a whole number, zero or more, not {max_poll_failures!r}.")
        return cls(
            poll_interval=to_seconds(poll_interval, name="poll_interval", allow_zero=False) or DEFAULT_POLL_INTERVAL,
            timeout=to_seconds(timeout, name="timeout", allow_zero=True),
            no_job_timeout=to_seconds(no_job_timeout, name="no_job_timeout", allow_zero=False)
            or DEFAULT_NO_JOB_TIMEOUT,
            max_poll_failures=max_poll_failures,
        )

    def follower(self, listener: RunListener, *, cursor: list[list[Any]] | None = None) -> PipelineFollower:
        from datris_provider.core.log_stream import EventCursor
        from datris_provider.core.pipeline import PipelineFollower

        return PipelineFollower(
            listener,
            poll_interval=self.poll_interval,
            no_job_timeout=self.no_job_timeout,
            max_poll_failures=self.max_poll_failures,
            cursor=EventCursor(cursor),
        )

    def deadline_at(self, context: Context, execution_timeout: timedelta | None) -> float | None:
        """Wall-clock end of a deferred wait: ``timeout`` from now, or ``execution_timeout`` from the
        task's start, whichever comes first."""
        candidates = []
        if self.timeout is not None:
            candidates.append(time.time() + self.timeout)
        start = getattr(context["ti"], "start_date", None)
        if execution_timeout is not None and start is not None:
            candidates.append((start + execution_timeout).timestamp())
        return min(candidates) if candidates else None


class WaitArguments:
    """The wait arguments as operator attributes (a DAG may change them), and as one checked object."""

    poll_interval: float
    timeout: float | None
    no_job_timeout: float
    max_poll_failures: int

    def take_wait_arguments(
        self,
        *,
        poll_interval: float | timedelta,
        timeout: float | timedelta | None,
        no_job_timeout: float | timedelta,
        max_poll_failures: int,
    ) -> None:
        settings = WaitSettings.checked(
            poll_interval=poll_interval,
            timeout=timeout,
            no_job_timeout=no_job_timeout,
            max_poll_failures=max_poll_failures,
        )
        self.poll_interval = settings.poll_interval
        self.timeout = settings.timeout
        self.no_job_timeout = settings.no_job_timeout
        self.max_poll_failures = settings.max_poll_failures

    @property
    def wait_settings(self) -> WaitSettings:
        return WaitSettings.checked(
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            no_job_timeout=self.no_job_timeout,
            max_poll_failures=self.max_poll_failures,
        )
