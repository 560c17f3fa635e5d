"""The triggers on their own: JSON kwargs that survive Airflow's serialisation, restart safety, events."""

from __future__ import annotations

import asyncio

import pytest

from datris_provider.core.tap_run import RunPlan, TapRunSpec
from datris_provider.testing import StandInTap
from datris_provider.triggers.datris import DatrisPipelineTrigger, DatrisTapRunTrigger


def _first_event(trigger):
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def _round_trip(trigger):
    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serde import deserialize, serialize

    classpath, kwargs = trigger.serialize()
    restored_kwargs = deserialize(serialize(kwargs))
    assert restored_kwargs == kwargs
    module, _, name = classpath.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)(**restored_kwargs)


def _plan(datris, tap_name: str) -> dict:
    return RunPlan(3600.0, tuple(row["runTime"] for row in datris.run_logs(tap_name)), "orders").to_json()


@pytest.fixture
def tap_trigger(datris):
    spec = TapRunSpec(tap_name="orders_api_to_postgres", poll_interval=0.02).to_json()
    return DatrisTapRunTrigger(
        datris_conn_id="datris_default", spec=spec, plan=_plan(datris, "orders_api_to_postgres"), resume={"k": 1}
    )


def test_tap_run_trigger_survives_serialisation_and_runs(datris, tap_trigger):
    payload = _first_event(_round_trip(tap_trigger))

    assert payload["status"] == "script_done"
    assert payload["resume"] == {"k": 1}
    assert payload["provider_version"]
    assert payload["outcome"]["publisher_token"]
    assert len(datris.calls("POST /tap/run")) == 1


def test_restarted_tap_run_trigger_finds_its_run_instead_of_posting_again(datris, tap_trigger):
    first = _first_event(tap_trigger)
    # The triggerer restarts the same trigger (same kwargs) after its run call went through.
    second = _first_event(_round_trip(tap_trigger))

    assert len(datris.calls("POST /tap/run")) == 1
    assert second["outcome"]["publisher_token"] == first["outcome"]["publisher_token"]


def test_pipeline_trigger_ends_with_the_rollup_and_logs_no_datris_line(datris, tap_trigger, caplog):
    token = _first_event(tap_trigger)["outcome"]["publisher_token"]
    trigger = DatrisPipelineTrigger(datris_conn_id="datris_default", publisher_token=token, poll_interval=0.02)

    with caplog.at_level("INFO"):
        payload = _first_event(_round_trip(trigger))

    assert payload["status"] == "done"
    assert payload["rollup"]["allDone"] is True
    assert payload["unfinished"] == []
    # The task prints the events when it resumes; the trigger's log is rewritten by the next deferral.
    descriptions = [event["description"] for event in datris.events(token)]
    assert not [record for record in caplog.records if any(d in record.getMessage() for d in descriptions)]


def test_tap_run_trigger_hands_its_messages_to_the_task(datris, tap_trigger, caplog):
    with caplog.at_level("INFO"):
        payload = _first_event(tap_trigger)

    texts = [text for _level, text in payload["notes"]]
    assert any(text.startswith("Running Datris tap 'orders_api_to_postgres'") for text in texts)
    assert not [record for record in caplog.records if record.getMessage().startswith("Running Datris tap")]


def test_pipeline_trigger_reports_timeout_with_the_unfinished_jobs(datris):
    datris.add_tap(StandInTap(name="forever", job_seconds=None))
    spec = TapRunSpec(tap_name="forever").to_json()
    outcome = _first_event(
        DatrisTapRunTrigger(datris_conn_id="datris_default", spec=spec, plan=_plan(datris, "forever"))
    )
    token = outcome["outcome"]["publisher_token"]
    trigger = DatrisPipelineTrigger(
        datris_conn_id="datris_default", publisher_token=token, poll_interval=0.02, deadline_at=0.0
    )

    payload = _first_event(trigger)

    assert payload["status"] == "timeout"
    assert payload["unfinished"] == outcome["outcome"]["pipeline_tokens"]


def test_errors_become_events_with_a_retry_verdict(datris, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATRIS_DEFAULT", f'{{"conn_type": "datris", "host": "{datris.url}", "extra": {{"retries": 0}}}}'
    )
    spec = TapRunSpec(tap_name="orders_api_to_postgres").to_json()
    datris.fail("GET /tap", 503, times=1)
    transient = _first_event(DatrisTapRunTrigger(datris_conn_id="datris_default", spec=spec, plan=_plan(datris, "x")))
    datris.require_api_keys()
    refused = _first_event(DatrisTapRunTrigger(datris_conn_id="datris_default", spec=spec, plan=_plan(datris, "x")))

    assert transient["status"] == refused["status"] == "error"
    assert (transient["error_class"], transient["retryable"]) == ("DatrisTransientError", True)
    assert refused["retryable"] is False
    assert datris.calls("POST /tap/run") == []


def test_unknown_or_missing_events_fail_closed():
    from datris_provider._compat import AirflowFailException
    from datris_provider.lifecycle.events import read_event

    for event in (None, {}, {"status": "cancelled", "resume": {}}, {"status": "done"}):
        with pytest.raises(AirflowFailException, match="cannot act on"):
            read_event(event, {"done", "timeout", "error"})


def test_a_tap_run_trigger_stopped_in_the_script_phase_says_the_load_runs_unwatched():
    trigger = DatrisTapRunTrigger(
        datris_conn_id="datris_default", spec=TapRunSpec(tap_name="orders").to_json(), plan={}, resume={}
    )
    said: list[str] = []
    trigger.log.warning = lambda message, *args: said.append(message % args)  # type: ignore[method-assign]

    asyncio.run(trigger.on_kill())

    (line,) = said
    assert "script phase of tap 'orders'" in line
    assert "Datris cannot stop a tap script" in line
    assert "runs unwatched" in line


def test_on_kill_of_a_trigger_whose_task_lives_on_kills_nothing(monkeypatch):
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    from datris_provider.triggers import datris as triggers

    trigger = DatrisPipelineTrigger(datris_conn_id="datris_default", publisher_token="t", expected_tokens=["job-1"])
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="run_tap", run_id="r", map_index=-1)
    killed: list[str] = []

    class Supervisor:
        """The triggerer's channel to its supervisor, answering this task instance's state."""

        def __init__(self, state: str) -> None:
            self.state = state

        async def asend(self, request):
            assert (request.dag_id, request.task_ids, request.run_ids) == ("d", ["run_tap"], ["r"])
            return SimpleNamespace(task_states={"r": {"run_tap": self.state}})

    class Client:
        async def aclose(self) -> None:
            pass

    async def client(conn_id: str) -> Client:
        return Client()

    async def kill(client) -> None:
        killed.append("job-1")

    monkeypatch.setattr(triggers, "_client", client)
    monkeypatch.setattr(trigger, "_kill_unfinished", kill)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor("deferred"), raising=False)
    asyncio.run(trigger.on_kill())
    assert killed == []

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor("running"), raising=False)  # a newer try took over
    asyncio.run(trigger.on_kill())
    assert killed == []

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor("failed"), raising=False)
    asyncio.run(trigger.on_kill())
    assert killed == ["job-1"]
    assert {"script_done", "done", "timeout", "error"} == triggers.EVENT_STATUSES


@pytest.mark.parametrize(("cancel_on_kill", "reads"), [(True, 1), (False, 0)])
def test_a_pipeline_wait_that_may_kill_reads_the_task_state_once_as_it_starts(
    datris, tap_trigger, monkeypatch, cancel_on_kill, reads
):
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    from datris_provider.triggers import task_state

    asked: list[object] = []

    class Supervisor:
        async def asend(self, request):
            asked.append(request)
            return SimpleNamespace(task_states={"r": {"run_tap": "deferred"}})

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor(), raising=False)
    monkeypatch.setattr(task_state, "AIRFLOW_CALLS_ON_KILL", True)
    token = _first_event(tap_trigger)["outcome"]["publisher_token"]
    trigger = DatrisPipelineTrigger(
        datris_conn_id="datris_default", publisher_token=token, poll_interval=0.02, cancel_on_kill=cancel_on_kill
    )
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="run_tap", run_id="r", map_index=-1)

    assert _first_event(trigger)["status"] == "done"
    assert len(asked) == reads
