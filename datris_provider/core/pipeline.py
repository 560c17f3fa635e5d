"""Following a run's pipeline jobs to their end, and killing them: the same steps for every task.

:class:`PipelineFollower` polls one publisher (or pipeline) token until every job is terminal,
streaming each new event exactly once; :func:`kill_jobs` asks Datris, briefly, to kill jobs. Both are
generators of commands (:mod:`datris_provider.core.steps`), driven in the worker or the triggerer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from datris_provider.client.errors import DatrisAuthError, DatrisTransientError, DatrisWaitTimeoutError
from datris_provider.core.log_stream import EventCursor, describe_event
from datris_provider.core.outcome import rollup_is_done
from datris_provider.core.steps import Call, Sleep, Steps

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from datris_provider.client.models import KillAnswer, PipelineEvent, PipelineStatus, Rollup
    from datris_provider.core.tap_run import RunListener, TapRunSpec


class PipelineFollower:
    """Polls one publisher token to a terminal state, streaming each new event exactly once.

    :param listener: receives the event lines.
    :param poll_interval: seconds between polls.
    :param no_job_timeout: seconds the token may show no job before the wait fails.
    :param max_poll_failures: failed polls in a row tolerated.
    :param clock: returns seconds; deadlines are in the same clock.
    :param cursor: events already streamed (restored after a deferral).
    """

    def __init__(
        self,
        listener: RunListener,
        *,
        poll_interval: float,
        no_job_timeout: float,
        max_poll_failures: int,
        clock: Callable[[], float] = time.monotonic,
        cursor: EventCursor | None = None,
    ) -> None:
        self.listener = listener
        self.poll_interval = poll_interval
        self.no_job_timeout = no_job_timeout
        self.max_poll_failures = max_poll_failures
        self.clock = clock
        self.cursor = cursor or EventCursor()
        self.last_rollup: Rollup | None = None

    @classmethod
    def for_spec(
        cls, spec: TapRunSpec, listener: RunListener, *, clock: Callable[[], float] = time.monotonic
    ) -> PipelineFollower:
        """A follower with the spec's poll interval and bounds."""
        return cls(
            listener,
            poll_interval=spec.poll_interval,
            no_job_timeout=spec.no_job_timeout,
            max_poll_failures=spec.max_poll_failures,
            clock=clock,
        )

    def follow(
        self,
        token: str,
        expected_tokens: Sequence[str],
        *,
        deadline_at: float | None,
        what: str,
        by_pipeline_token: bool = False,
    ) -> Steps[Rollup]:
        """Poll until every job is terminal; fail on too many failed polls, no jobs, or the deadline."""
        started = self.clock()
        failures = 0
        while True:
            try:
                status: PipelineStatus = yield Call(
                    "get_pipeline_status", (token,), {"by_pipeline_token": by_pipeline_token}
                )
            except DatrisTransientError as err:
                failures += 1
                if failures > self.max_poll_failures:
                    raise DatrisTransientError(
                        f"Gave up polling Datris after {failures} failed polls in a row; last: {err}",
                        status_code=err.status_code,
                        route=err.route,
                    ) from None
                self.listener.warning(f"Polling Datris failed ({failures}/{self.max_poll_failures}): {err}")
            else:
                failures = 0
                self.stream(status.events)
                self.last_rollup = status.rollup
                if rollup_is_done(status.rollup, tuple(expected_tokens)):
                    return status.rollup
                waited = self.clock() - started
                if not status.rollup.jobs and waited > self.no_job_timeout:
                    raise DatrisWaitTimeoutError(
                        f"Token {token} showed no pipeline job for {waited:.0f} s "
                        f"(no_job_timeout={self.no_job_timeout:g} s). Datris does not know this token, or its "
                        "status rows were never written; check the Run History in Datris."
                    )
            if deadline_at is not None and self.clock() >= deadline_at:
                raise DatrisWaitTimeoutError(
                    f"{what} did not finish in time; last state: {self.describe_last_rollup()}."
                )
            yield Sleep(self.poll_interval)

    def stream(self, events: Sequence[PipelineEvent]) -> None:
        for event in self.cursor.new_events(events):
            line = describe_event(event)
            if event.code == "error":
                self.listener.error(line)
            elif event.code == "warning":
                self.listener.warning(line)
            else:
                self.listener.info(line)

    def unfinished_tokens(self, fallback: Sequence[str]) -> list[str]:
        if self.last_rollup is None:
            return list(fallback)
        return [job.pipeline_token for job in self.last_rollup.jobs if not job.finished]

    def describe_last_rollup(self) -> str:
        if self.last_rollup is None:
            return "no status read yet"
        jobs = ", ".join(f"{job.pipeline} {job.status}" for job in self.last_rollup.jobs) or "no jobs"
        return f"{self.last_rollup.status} ({jobs})"


def kill_jobs(
    tokens: Sequence[str],
    listener: RunListener,
    *,
    clock: Callable[[], float],
    per_call_timeout: float = 1.5,
    budget: float = 4.0,
) -> Steps[list[KillAnswer]]:
    """Ask Datris, once per job and briefly, to kill each job; "not running" answers are normal.

    Airflow leaves a killed task about five seconds, so the calls share ``budget`` seconds and nothing
    waits for the jobs to stop.
    """
    if not tokens:
        listener.info("No Datris pipeline job to kill (the tap script phase cannot be cancelled on Datris).")
        return []
    answers: list[KillAnswer] = []
    ends_at = clock() + budget
    for token in tokens:
        left = ends_at - clock()
        if left <= 0:
            listener.warning(f"No time left to kill Datris job {token}.")
            continue
        try:
            answer = yield Call("kill_job", (token,), {"timeout": min(per_call_timeout, left)})
        except DatrisAuthError as err:
            listener.warning(f"Could not kill Datris job {token}: {err}")
            continue
        answers.append(answer)
        if answer.killed:
            listener.info(f"Asked Datris to kill pipeline job {token}: cancelled.")
        elif answer.answered:
            listener.info(f"Datris did not kill pipeline job {token}: {answer.detail} (normal if it ended).")
        else:
            listener.warning(
                f"Could not reach Datris to kill pipeline job {token} ({answer.detail}); it may still be running: "
                "kill it in the Datris UI."
            )
    return answers
