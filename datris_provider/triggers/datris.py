"""Triggers that wait on Datris in Airflow's triggerer, so no worker slot is held while Datris works.

``DatrisTapRunTrigger`` makes the blocking run call (which can last an hour), after waiting for a busy
tap when the task says so, and yields the script outcome; ``DatrisPipelineTrigger`` follows a
publisher token to a terminal state.

Both run the same run-tracking steps as the synchronous operator, with the ``httpx`` client. Their
kwargs are plain JSON, and each yields exactly one event of the contract in
:mod:`datris_provider.lifecycle.events`. Neither writes Datris lines to the log: Airflow rewrites a
trigger's log at the task's next deferral, so what a trigger learns travels in its event and the task
prints it once when it resumes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from datris_provider.client.errors import DatrisError, DatrisWaitTimeoutError
from datris_provider.core.listeners import LogListener
from datris_provider.lifecycle.events import DONE, ERROR, SCRIPT_DONE, TIMEOUT, error_payload, event_payload
from datris_provider.triggers.task_state import TaskStateReader

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.core.pipeline import PipelineFollower

EVENT_STATUSES = frozenset({SCRIPT_DONE, DONE, TIMEOUT, ERROR})

# How long killing the unfinished jobs may take; with the task-state read before it, inside Airflow's
# default [triggerer] on_kill_timeout of 30 s.
KILL_BUDGET_SECONDS = 20.0


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


async def _client(datris_conn_id: str) -> AsyncDatrisClient:
    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.hooks.datris import DatrisHook

    return AsyncDatrisClient(await DatrisHook.aget_settings(datris_conn_id))


class _WarningsOnly(LogListener):
    """The pipeline trigger's listener: poll failures are logged; event lines are the task's to print."""

    def info(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        pass


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
        from datris_provider.core.notes import NoteCollector
        from datris_provider.core.steps import drive_async
        from datris_provider.core.tap_run import RunPlan, TapRunSpec, start_run

        collector = NoteCollector()
        spec = TapRunSpec.from_json(self.spec)
        self.log.info("Starting or finding the run of Datris tap '%s'; the task log shows its messages.", spec.tap_name)
        try:
            client = await _client(self.datris_conn_id)
        except DatrisError as err:
            yield _event(error_payload(err, self.resume, notes=collector.notes))
            return
        try:
            plan = RunPlan.from_json(self.plan)
            outcome = await drive_async(start_run(spec, plan, collector, recheck=True), client)
        except DatrisError as err:
            yield _event(error_payload(err, self.resume, notes=collector.notes))
        else:
            yield _event(event_payload(SCRIPT_DONE, self.resume, outcome=outcome.to_json(), notes=collector.notes))
        finally:
            await client.aclose()

    async def on_kill(self) -> None:
        """Airflow >= 3.3: the task was stopped while the tap script ran, which Datris cannot cancel."""
        self.log.warning(
            "The task was stopped during the script phase of tap '%s'. Datris cannot stop a tap script: it runs "
            "to its end, and the pipeline load it submits then runs unwatched. Check the tap's Run History in "
            "Datris.",
            self.spec.get("tap_name"),
        )


class DatrisPipelineTrigger(BaseTrigger):
    """Follows a publisher (or pipeline) token until every job is terminal, streaming its events.

    :param datris_conn_id: the Airflow connection of type ``datris``.
    :param publisher_token: the token to follow.
    :param expected_tokens: pipeline tokens that must all be present before the wait can end.
    :param poll_interval: seconds between polls.
    :param no_job_timeout: seconds the token may show no job.
    :param max_poll_failures: failed polls in a row tolerated.
    :param deadline_at: wall-clock time (epoch seconds) after which the trigger reports ``timeout``.
    :param cursor: ignored: the task prints the events. Kept so triggers serialized by earlier
        provider versions still load.
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
        self._task_state = TaskStateReader(self)

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
        from datris_provider.core.pipeline import PipelineFollower
        from datris_provider.core.steps import drive_async

        follower = PipelineFollower(
            _WarningsOnly(self.log),
            poll_interval=self.poll_interval,
            no_job_timeout=self.no_job_timeout,
            max_poll_failures=self.max_poll_failures,
            clock=time.time,  # wall clock: the deadline was set in another process
        )
        self._follower = follower
        self.log.info("Waiting for %s; the task log shows its events when the wait ends.", self.what)
        try:
            self._client = await _client(self.datris_conn_id)
        except DatrisError as err:
            yield _event(error_payload(err, self.resume, unfinished=self.expected_tokens))
            return
        if self.cancel_on_kill:
            self._task_state.warm_up()
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
            yield _event(event_payload(TIMEOUT, self.resume, message=str(err), killed=killed, **self._unfinished()))
        except DatrisError as err:
            yield _event(error_payload(err, self.resume, **self._unfinished()))
        else:
            self.log.info("%s ended: %s.", self.what, follower.describe_last_rollup())
            yield _event(event_payload(DONE, self.resume, rollup=rollup.to_json(), **self._unfinished()))
        finally:
            self._task_state.close()
            await self._client.aclose()
            self._client = None

    def _unfinished(self) -> dict[str, Any]:
        assert self._follower is not None
        return {"unfinished": self._follower.unfinished_tokens(self.expected_tokens)}

    async def on_kill(self) -> None:
        """Airflow >= 3.3: the deferred task was marked failed or cleared; kill the unfinished jobs.

        Never while the task is still deferred (a trigger moved between triggerers on Airflow 3.3.0) or a
        newer try of it runs (it may follow the same run).
        """
        if not self.cancel_on_kill:
            return
        # The connection first: its lookup counts against Airflow's on_kill_timeout as much as the kill.
        client = await _client(self.datris_conn_id)
        try:
            if await self._task_state.task_lives_on():
                self.log.warning(
                    "on_kill was called while the task is still deferred or a newer try runs; leaving the Datris "
                    "jobs running."
                )
                return
            await self._kill_unfinished(client)
        finally:
            await client.aclose()

    async def _kill_unfinished(self, client: AsyncDatrisClient | None = None) -> None:
        from datris_provider.core.pipeline import kill_jobs
        from datris_provider.core.steps import drive_async

        tokens = self._follower.unfinished_tokens(self.expected_tokens) if self._follower else self.expected_tokens
        own_client = client is None
        client = client or await _client(self.datris_conn_id)
        try:
            steps = kill_jobs(tokens, LogListener(self.log), clock=time.monotonic, budget=KILL_BUDGET_SECONDS)
            await drive_async(steps, client)
        finally:
            if own_client:
                await client.aclose()
