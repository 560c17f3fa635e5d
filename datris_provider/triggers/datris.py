"""Triggers that wait on Datris in Airflow's triggerer, so no worker slot is held while Datris works.

``DatrisTapRunTrigger`` makes the blocking run call (which can last an hour) and yields the script
outcome; ``DatrisPipelineTrigger`` follows a publisher token to a terminal state, streaming each new
event into the trigger log, and hands its cursor back so the task prints the rest with no line twice.

Both run the same run-tracking steps as the synchronous operator, with the ``httpx`` client. Their
kwargs are plain JSON, and each yields exactly one event whose ``status`` is one of
:data:`EVENT_STATUSES`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from datris_provider.client.errors import DatrisError, DatrisWaitTimeoutError
from datris_provider.core.listeners import LogListener

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.core.tap_run import PipelineFollower

SCRIPT_DONE = "script_done"
DONE = "done"
TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES = frozenset({SCRIPT_DONE, DONE, TIMEOUT, ERROR})


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


def error_event(err: DatrisError, **extra: Any) -> dict[str, Any]:
    """An event describing a failure in words the task can act on (never the API key)."""
    return {
        "status": ERROR,
        "message": str(err),
        "error_class": type(err).__name__,
        "retryable": err.retryable,
        **extra,
    }


async def _client(datris_conn_id: str) -> AsyncDatrisClient:
    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.hooks.datris import DatrisHook

    return AsyncDatrisClient(await DatrisHook.aget_settings(datris_conn_id))


class DatrisTapRunTrigger(BaseTrigger):
    """Starts a tap run (or finds the one already started) and yields the end of its script phase.

    Before posting, it looks for a run started since the task's checks: if the triggerer restarts
    this trigger after it posted, the run it started is found instead of a second one posted.

    :param datris_conn_id: the Airflow connection of type ``datris``.
    :param spec: the run spec (``TapRunSpec.to_json()``).
    :param plan: the checks the task made (``RunPlan.to_json()``).
    :param resume: state the task needs when it resumes, handed back in the event.
    """

    def __init__(
        self, *, datris_conn_id: str, spec: dict[str, Any], plan: dict[str, Any], resume: dict[str, Any] | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.datris_conn_id = datris_conn_id
        self.spec = spec
        self.plan = plan
        self.resume = resume or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"datris_conn_id": self.datris_conn_id, "spec": self.spec, "plan": self.plan, "resume": self.resume},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from datris_provider.core.steps import drive_async
        from datris_provider.core.tap_run import RunPlan, TapRunSpec, start_run

        listener = LogListener(self.log)
        spec = TapRunSpec.from_json(self.spec)
        try:
            client = await _client(self.datris_conn_id)
        except DatrisError as err:
            yield _event(error_event(err, resume=self.resume))
            return
        try:
            outcome = await drive_async(start_run(spec, RunPlan.from_json(self.plan), listener, recheck=True), client)
        except DatrisError as err:
            yield _event(error_event(err, resume=self.resume))
        else:
            yield _event({"status": SCRIPT_DONE, "outcome": outcome.to_json(), "resume": self.resume})
        finally:
            await client.aclose()


class DatrisPipelineTrigger(BaseTrigger):
    """Follows a publisher (or pipeline) token until every job is terminal, streaming its events.

    :param datris_conn_id: the Airflow connection of type ``datris``.
    :param publisher_token: the token to follow.
    :param expected_tokens: pipeline tokens that must all be present before the wait can end.
    :param poll_interval: seconds between polls.
    :param no_job_timeout: seconds the token may show no job.
    :param max_poll_failures: failed polls in a row tolerated.
    :param deadline_at: wall-clock time (epoch seconds) after which the trigger reports ``timeout``.
    :param cursor: events already streamed.
    :param what: how messages name what is awaited.
    :param cancel_on_kill: on Airflow >= 3.3, kill unfinished jobs when the deferred task is marked
        failed or cleared.
    :param resume: state the task needs when it resumes, handed back in the event.
    :param by_pipeline_token: ``publisher_token`` is one job's pipeline token.
    :param kill_on_timeout: kill the unfinished jobs when the deadline passes, here in the triggerer,
        before the task resumes (a run the task started; never for a sensor watching others' jobs).
    """

    def __init__(
        self,
        *,
        datris_conn_id: str,
        publisher_token: str,
        expected_tokens: Sequence[str] = (),
        poll_interval: float = 15.0,
        no_job_timeout: float = 300.0,
        max_poll_failures: int = 5,
        deadline_at: float | None = None,
        cursor: list[list[Any]] | None = None,
        what: str = "The Datris pipeline",
        cancel_on_kill: bool = True,
        resume: dict[str, Any] | None = None,
        by_pipeline_token: bool = False,
        kill_on_timeout: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.datris_conn_id = datris_conn_id
        self.publisher_token = publisher_token
        self.by_pipeline_token = by_pipeline_token
        self.kill_on_timeout = kill_on_timeout
        self.expected_tokens = list(expected_tokens)
        self.poll_interval = poll_interval
        self.no_job_timeout = no_job_timeout
        self.max_poll_failures = max_poll_failures
        self.deadline_at = deadline_at
        self.cursor = cursor or []
        self.what = what
        self.cancel_on_kill = cancel_on_kill
        self.resume = resume or {}
        self._follower: PipelineFollower | None = None
        self._client: AsyncDatrisClient | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "datris_conn_id": self.datris_conn_id,
                "publisher_token": self.publisher_token,
                "expected_tokens": self.expected_tokens,
                "poll_interval": self.poll_interval,
                "no_job_timeout": self.no_job_timeout,
                "max_poll_failures": self.max_poll_failures,
                "deadline_at": self.deadline_at,
                "cursor": self.cursor,
                "what": self.what,
                "cancel_on_kill": self.cancel_on_kill,
                "resume": self.resume,
                "by_pipeline_token": self.by_pipeline_token,
                "kill_on_timeout": self.kill_on_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from datris_provider.core.log_stream import EventCursor
        from datris_provider.core.steps import drive_async
        from datris_provider.core.tap_run import PipelineFollower

        follower = PipelineFollower(
            LogListener(self.log),
            poll_interval=self.poll_interval,
            no_job_timeout=self.no_job_timeout,
            max_poll_failures=self.max_poll_failures,
            clock=time.time,  # wall clock: the deadline was set in another process
            cursor=EventCursor(self.cursor),
        )
        self._follower = follower
        try:
            self._client = await _client(self.datris_conn_id)
        except DatrisError as err:
            yield _event(error_event(err, cursor=self.cursor, unfinished=self.expected_tokens, resume=self.resume))
            return
        try:
            steps = follower.follow(
                self.publisher_token,
                self.expected_tokens,
                deadline_at=self.deadline_at,
                what=self.what,
                by_pipeline_token=self.by_pipeline_token,
            )
            rollup = await drive_async(steps, self._client)
        except DatrisWaitTimeoutError as err:
            killed = False
            if self.kill_on_timeout:
                await self._kill_unfinished()
                killed = True
            yield _event(self._ending(TIMEOUT, message=str(err), killed=killed))
        except DatrisError as err:
            yield _event({**error_event(err), **self._ending(ERROR)})
        else:
            yield _event(self._ending(DONE, rollup=rollup.to_json()))
        finally:
            await self._client.aclose()
            self._client = None

    def _ending(self, status: str, **extra: Any) -> dict[str, Any]:
        assert self._follower is not None
        return {
            "status": status,
            "cursor": self._follower.cursor.to_json(),
            "unfinished": self._follower.unfinished_tokens(self.expected_tokens),
            "resume": self.resume,
            **extra,
        }

    async def on_kill(self) -> None:
        """Airflow >= 3.3: the deferred task was marked failed or cleared; kill the unfinished jobs."""
        if self.cancel_on_kill:
            await self._kill_unfinished()

    async def _kill_unfinished(self) -> None:
        from datris_provider.core.steps import drive_async
        from datris_provider.core.tap_run import kill_jobs

        tokens = self._follower.unfinished_tokens(self.expected_tokens) if self._follower else self.expected_tokens
        client = await _client(self.datris_conn_id)
        try:
            await drive_async(kill_jobs(tokens, LogListener(self.log), clock=time.monotonic, budget=20.0), client)
        finally:
            await client.aclose()
