"""What a trigger's task is doing now, read through the triggerer, so ``on_kill`` can tell a user's stop
from a trigger that merely moved.

Airflow 3.3's triggerer calls ``on_kill`` when a trigger moves to another triggerer
(apache/airflow#73454), and after a scheduler reset a newer try may already follow the same run. Only
the task's state tells these apart from a user's mark-failed or clear. The triggerer answers that
read through an execution API it builds on its first request from any trigger (a connection, a
variable, a task state): measured under load, that first answer took 16 s, longer than an ``on_kill``
may wait, while later ones take milliseconds. A trigger whose connection comes from the environment or
a secrets backend may never have asked anything, so a trigger that may be killed asks once as it
starts, and the channel is warm when the answer matters. An ``on_kill`` within the first seconds of a
triggerer's life still waits behind that build; when its read times out, the jobs are killed, as for a
user's stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

# Task states in which a try of the task is still, or again, at work: its run is not for the trigger to kill.
TASK_LIVES_ON = frozenset({"deferred", "running", "queued", "scheduled", "up_for_retry", "up_for_reschedule"})

# The read in on_kill, on a warm channel. With the kill's own budget (KILL_BUDGET_SECONDS in the
# triggers) it stays inside Airflow's default [triggerer] on_kill_timeout of 30 s.
STATE_READ_SECONDS = 8.0

# The warm-up read may take as long as the triggerer needs; nothing waits on it.
WARM_UP_SECONDS = 300.0

# Airflow calls a trigger's on_kill from 3.3 on, where BaseTrigger first defines it.
AIRFLOW_CALLS_ON_KILL = hasattr(BaseTrigger, "on_kill")


def _supervisor_send() -> Callable[[Any], Awaitable[Any]]:
    from airflow.sdk.execution_time import task_runner

    send: Callable[[Any], Awaitable[Any]] = task_runner.SUPERVISOR_COMMS.asend
    return send


class TaskStateReader:
    """Reads the state of the task instance a trigger serves.

    :param trigger: the trigger; the triggerer sets its ``task_instance`` before running it.
    """

    def __init__(self, trigger: BaseTrigger) -> None:
        self._trigger = trigger
        self._warm_up: asyncio.Task[str | None] | None = None

    def warm_up(self) -> None:
        """Ask once in the background (the answer is not used) so that :meth:`task_lives_on` is quick.
        Does nothing where Airflow never calls ``on_kill``."""
        if AIRFLOW_CALLS_ON_KILL and self._warm_up is None and self._request() is not None:
            self._warm_up = asyncio.get_running_loop().create_task(self._read_quietly(WARM_UP_SECONDS))

    def close(self) -> None:
        """Drop a warm-up still waiting for its answer (the trigger has ended)."""
        if self._warm_up is not None and not self._warm_up.done():
            self._warm_up.cancel()
        self._warm_up = None

    async def task_lives_on(self) -> bool:
        """True when the task is still deferred, or a newer try of it is at work. Any doubt answers
        False, with a warning: the jobs are then killed, as for a user's stop."""
        try:
            state = await self._read(STATE_READ_SECONDS)
        except Exception as err:
            self._trigger.log.warning("Could not read the task's state before killing its Datris jobs: %r", err)
            return False
        return state in TASK_LIVES_ON

    def _request(self) -> Any:
        ti = getattr(self._trigger, "task_instance", None)
        if ti is None:
            return None
        from airflow.sdk.execution_time.comms import GetTaskStates

        return GetTaskStates(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index)

    async def _read(self, timeout: float) -> str | None:
        request = self._request()
        if request is None:
            return None
        # Straight to the triggerer's own channel, on this event loop: no thread hop to wait on.
        answer = await asyncio.wait_for(_supervisor_send()(request), timeout=timeout)
        states = getattr(answer, "task_states", None)
        by_task = states.get(request.run_ids[0], {}) if isinstance(states, dict) else {}
        state = by_task.get(request.task_ids[0]) if isinstance(by_task, dict) else None
        return state if isinstance(state, str) else None

    async def _read_quietly(self, timeout: float) -> str | None:
        with contextlib.suppress(Exception):
            return await self._read(timeout)
        return None
