"""Reading the deferred task's state through the triggerer before on_kill kills anything."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from datris_provider.triggers import task_state
from datris_provider.triggers.datris import DatrisPipelineTrigger
from datris_provider.triggers.task_state import TaskStateReader

TI = SimpleNamespace(dag_id="d", task_id="run_tap", run_id="r", map_index=-1)


class Supervisor:
    """The triggerer's channel to its supervisor. Its first answer can be slow, as the real one's is
    while it builds its execution API, or never come."""

    def __init__(self, state: str = "deferred", *, first_answer_after: float = 0.0, answers: bool = True) -> None:
        self.state = state
        self.first_answer_after = first_answer_after
        self.answers = answers
        self.requests: list[object] = []

    async def asend(self, request):
        self.requests.append(request)
        if not self.answers:
            await asyncio.Event().wait()
        if len(self.requests) == 1:
            await asyncio.sleep(self.first_answer_after)
        return SimpleNamespace(task_states={"r": {"run_tap": self.state}})


@pytest.fixture
def supervisor(monkeypatch):
    from airflow.sdk.execution_time import task_runner

    channel = Supervisor()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)
    monkeypatch.setattr(task_state, "AIRFLOW_CALLS_ON_KILL", True)
    return channel


def _trigger(**kwargs):
    trigger = DatrisPipelineTrigger(
        datris_conn_id="datris_default", publisher_token="t", expected_tokens=["job-1"], **kwargs
    )
    trigger.task_instance = TI
    return trigger


def test_the_warm_up_asks_once_however_often_it_is_started(supervisor):
    supervisor.first_answer_after = 60.0
    reader = TaskStateReader(_trigger())

    async def scenario() -> None:
        reader.warm_up()
        reader.warm_up()
        while not supervisor.requests:
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(supervisor.requests) == 1

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))


def test_the_state_names_whether_the_task_lives_on(supervisor):
    reader = TaskStateReader(_trigger())
    for state, lives_on in (("deferred", True), ("running", True), ("up_for_retry", True), ("failed", False)):
        supervisor.state = state
        assert asyncio.run(reader.task_lives_on()) is lives_on, state


def test_a_read_that_does_not_answer_in_time_leaves_the_kill_to_go_ahead(supervisor, monkeypatch):
    supervisor.answers = False
    monkeypatch.setattr(task_state, "STATE_READ_SECONDS", 0.05)
    trigger = _trigger()
    said: list[str] = []
    trigger.log.warning = lambda message, *args: said.append(message % args)  # type: ignore[method-assign]

    assert asyncio.run(TaskStateReader(trigger).task_lives_on()) is False
    assert "Could not read the task's state before killing its Datris jobs" in said[0]


def test_without_a_task_instance_nothing_is_asked(supervisor):
    trigger = DatrisPipelineTrigger(datris_conn_id="datris_default", publisher_token="t", expected_tokens=["job-1"])
    reader = TaskStateReader(trigger)

    async def scenario() -> bool:
        reader.warm_up()
        return await reader.task_lives_on()

    assert asyncio.run(scenario()) is False
    assert supervisor.requests == []


def test_closing_drops_a_warm_up_still_waiting_for_its_answer(supervisor):
    supervisor.first_answer_after = 60.0
    reader = TaskStateReader(_trigger())

    async def scenario() -> None:
        reader.warm_up()
        warm_up = reader._warm_up
        while not supervisor.requests:
            await asyncio.sleep(0)
        reader.close()
        with pytest.raises(asyncio.CancelledError):
            await warm_up

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))
