"""Tests of the stand-in Datris server against the contract of the real Datris REST API.

Plain pytest + requests (no Airflow). Nothing here relies on timing luck: the shared server runs on a
manual clock (jobs move only when a test advances it, and polls only observe), runs that must be
observed "in progress" are held open with a gate event, and the debounce window is stepped with a
fake clock where that reads better.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from datris_provider.testing import DEFAULT_PIPELINE_ERROR, StandInDatris, StandInTap
from datris_provider.testing.__main__ import build_parser, connection_example, demo_taps
from datris_provider.testing.server import build_rollup, format_datris_time, format_elapsed

if TYPE_CHECKING:
    from collections.abc import Iterator

DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class FakeClock:
    """A monotonic clock the test moves by hand (for the debounce window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[StandInDatris]:
    with StandInDatris(clock="manual") as server:
        yield server


@pytest.fixture
def datris(shared_server: StandInDatris) -> Iterator[StandInDatris]:
    """One server for the module, wiped before each test (this also exercises reset_state)."""
    shared_server.reset_state()
    yield shared_server
    shared_server.wait_until_idle(timeout=10)


def call(datris: StandInDatris, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, datris.api_url + path, timeout=10, **kwargs)


def run_tap(
    datris: StandInDatris, name: str, *, headers: dict[str, str] | None = None, **body: Any
) -> requests.Response:
    return call(datris, "POST", "/tap/run", json={"name": name, **body}, headers=headers)


def poll(datris: StandInDatris, token: str, *, by: str = "publishertoken", withrollup: str | None = "true") -> Any:
    params = {by: token}
    if withrollup is not None:
        params["withrollup"] = withrollup
    response = call(datris, "GET", "/pipeline/status", params=params)
    assert response.status_code == 200
    return response.json()


def kill(datris: StandInDatris, pipeline_token: str) -> requests.Response:
    return call(datris, "POST", "/job/kill", json={"pipelineToken": pipeline_token})


def event_steps(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(e["processName"], e["state"], e["code"], e["description"]) for e in events]


def expected_job_rollup(events: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """The rollup job §4.2 prescribes for a terminal job, computed from its events."""
    job = {
        "pipelineToken": events[0]["pipelineToken"],
        "pipeline": events[0]["pipeline"],
        "filename": events[0]["filename"],
        "status": status,
        "startedAt": events[0]["dateTime"],
        "lastEventAt": events[-1]["dateTime"],
        "elapsed": format_elapsed(events[-1]["epoch"] - events[0]["epoch"]),
    }
    errors = [e for e in events if e["code"] == "error"]
    if status == "error":
        job["lastError"] = {"processName": errors[0]["processName"], "description": errors[0]["description"]}
    return job


# ------------------------------------------------------------------------------------------------
# POST /tap/run: blocking, debounce, modes, params, persistedReason
# ------------------------------------------------------------------------------------------------


def test_blocking_run_shows_running_status_until_the_script_finishes(datris: StandInDatris) -> None:
    gate = threading.Event()
    datris.add_tap(name="orders_api", records=1532, gate=gate)
    result: dict[str, requests.Response] = {}
    runner = threading.Thread(target=lambda: result.update(run=run_tap(datris, "orders_api", mode="run")))
    runner.start()
    datris.wait_until_running("orders_api")

    during = call(datris, "GET", "/tap", params={"name": "orders_api"}).json()
    assert during["lastRunStatus"] == "running"
    assert during["lastRunTrigger"] == "manual"
    # The run-log row is written only when the run finishes.
    assert call(datris, "GET", "/tap/logs", params={"name": "orders_api"}).json() == []

    gate.set()
    runner.join(timeout=10)
    body = result["run"].json()
    assert result["run"].status_code == 200
    assert body["status"] == "success"
    assert body["persisted"] is True
    after = call(datris, "GET", "/tap", params={"name": "orders_api"}).json()
    assert after["lastRunStatus"] == "success"
    assert after["lastRunRecordCount"] == 1532.0
    assert "1532.0" in call(datris, "GET", "/tap", params={"name": "orders_api"}).text


def test_run_blocks_for_script_seconds(datris: StandInDatris) -> None:
    datris.add_tap(name="slow", script_seconds=20)
    result: dict[str, requests.Response] = {}
    runner = threading.Thread(target=lambda: result.update(run=run_tap(datris, "slow", mode="run")))
    runner.start()
    datris.wait_until_running("slow")

    datris.clock.advance(19.9)
    with pytest.raises(TimeoutError):
        datris.wait_for(lambda: "run" in result, timeout=0.1)
    datris.clock.advance(0.1)
    runner.join(timeout=10)
    assert result["run"].json()["status"] == "success"
    assert datris.run_logs("slow")[0]["durationMs"] == 20_000
    assert "in 20.00s" in result["run"].json()["logs"]


def test_successful_run_response_shape(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", description="Daily orders", records=42)
    response = run_tap(datris, "orders_api", mode="RUN")
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["tap"] == "orders_api"
    assert body["description"] == "Daily orders"
    assert body["mode"] == "run"
    assert body["targetPipeline"] == "orders"
    assert body["recordCount"] == 42
    assert body["dataType"] == "json"
    assert UUID4.match(body["publisherToken"])
    assert len(body["pipelineTokens"]) == 1 and UUID4.match(body["pipelineTokens"][0])
    assert "persistedReason" not in body and "error" not in body and "records" not in body
    assert isinstance(body["logs"], str)
    assert body["logs"].splitlines()[0] == "[wrapper] loading tap script"
    assert "[wrapper] fetch() returned 42 json record(s)" in body["logs"]
    assert "null" not in response.text


def test_debounce_skips_a_second_run_within_the_window(datris: StandInDatris) -> None:
    clock = FakeClock()
    datris.debounce_clock = clock
    datris.add_tap(name="orders_api", description="Daily orders")

    first = run_tap(datris, "orders_api", mode="run").json()
    clock.now += 1.2
    second = run_tap(datris, "orders_api", mode="run")

    assert second.status_code == 200
    skipped = second.json()
    assert skipped["status"] == "skipped"
    assert skipped["persisted"] is False
    assert skipped["persistedReason"] == "debounced"
    assert skipped["recordCount"] == 0
    assert "publisherToken" not in skipped and "pipelineTokens" not in skipped
    assert skipped["error"].startswith("Tap 'orders_api' was triggered 1200 ms ago")
    assert skipped["description"] == "Daily orders" and skipped["targetPipeline"] == "orders"
    # Nothing ran and nothing was logged for the debounced call.
    assert [row["publisherToken"] for row in datris.run_logs("orders_api")] == [first["publisherToken"]]
    assert len(datris.script_runs("orders_api")) == 1

    # Test runs are never debounced.
    assert run_tap(datris, "orders_api").json()["status"] == "success"
    # The window counts from the start of the last accepted run: after 5 s a new run is accepted.
    clock.now += 3.8
    assert run_tap(datris, "orders_api", mode="run").json()["status"] == "success"


def test_debounce_is_not_an_already_running_guard(datris: StandInDatris) -> None:
    clock = FakeClock()
    datris.debounce_clock = clock
    gate = threading.Event()
    datris.add_tap(name="long_tap", gate=gate)
    results: list[requests.Response] = []
    first = threading.Thread(target=lambda: results.append(run_tap(datris, "long_tap", mode="run")))
    first.start()
    datris.wait_until_running("long_tap")

    clock.now += 5.0  # a retry 5 s after the first call starts a second run alongside the first
    second = threading.Thread(target=lambda: results.append(run_tap(datris, "long_tap", mode="run")))
    second.start()
    gate.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert [r.json()["status"] for r in results] == ["success", "success"]
    assert len({r.json()["publisherToken"] for r in results}) == 2
    assert len(datris.run_logs("long_tap")) == 2


def test_mode_defaults_to_test(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", records=25)
    body = run_tap(datris, "orders_api").json()
    assert body["mode"] == "test"
    assert body["status"] == "success"
    assert body["persisted"] is False
    assert body["persistedReason"] == "test_mode"
    assert "publisherToken" not in body
    assert body["recordCount"] == 20  # the default test limit
    assert len(body["records"]) == 20
    assert body["recordsTruncated"] is True

    config = call(datris, "GET", "/tap", params={"name": "orders_api"}).json()
    assert config["lastTestRunStatus"] == "success"
    assert config["lastTestRunRecordCount"] == 20.0
    assert "lastRunStatus" not in config
    (row,) = datris.run_logs("orders_api")
    assert row["mode"] == "test" and "publisherToken" not in row


def test_test_limit(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", records=30)
    assert run_tap(datris, "orders_api", mode="test", testLimit=0).json()["recordCount"] == 30
    assert run_tap(datris, "orders_api", mode="test", testLimit="5").json()["recordCount"] == 5
    invalid = run_tap(datris, "orders_api", mode="test", testLimit="lots")
    assert invalid.status_code == 400
    assert invalid.json() == {"error": "testLimit must be a number, got 'lots'"}
    # testLimit is ignored in run mode.
    assert run_tap(datris, "orders_api", mode="run", testLimit=1).json()["recordCount"] == 30


def test_invalid_param_key_fails_the_run_with_http_200(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    response = run_tap(datris, "orders_api", mode="run", params={"bad-key": "x"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failure"
    assert body["persisted"] is False
    assert body["persistedReason"] == "run_error"
    assert body["error"].startswith("Invalid tap param key 'bad-key'")
    assert "publisherToken" not in body
    assert datris.run_logs("orders_api")[0]["status"] == "failure"
    assert call(datris, "GET", "/tap", params={"name": "orders_api"}).json()["lastRunStatus"] == "failure"


def test_params_become_environment_variables_with_the_key_case_kept(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    params = {
        "since": "2026-05-01",
        "pageSize": 1000,
        "ratio": 0.5,
        "full": True,
        "cursor": None,
        "filter": {"status": ["paid", "open"]},
        " padded ": "trimmed",
        "": "skipped",
    }
    run_tap(datris, "orders_api", mode="run", params=params)

    (run,) = datris.script_runs("orders_api")
    assert run.params == params
    assert run.env == {
        "DATRIS_TAP_PARAM_since": "2026-05-01",
        "DATRIS_TAP_PARAM_pageSize": "1000",
        "DATRIS_TAP_PARAM_ratio": "0.5",
        "DATRIS_TAP_PARAM_full": "true",
        "DATRIS_TAP_PARAM_cursor": "",
        "DATRIS_TAP_PARAM_filter": '{"status":["paid","open"]}',
        "DATRIS_TAP_PARAM_padded": "trimmed",
    }
    (recorded,) = datris.calls("POST /tap/run")
    assert recorded.json == {"name": "orders_api", "mode": "run", "params": params}
    assert recorded.headers["content-type"] == "application/json"


def test_params_that_are_not_an_object_are_ignored(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    assert run_tap(datris, "orders_api", mode="run", params=["a", "b"]).json()["status"] == "success"
    assert datris.script_runs("orders_api")[0].env == {}


@pytest.mark.parametrize(
    ("tap_fields", "mode", "status", "reason"),
    [
        pytest.param({"error": "boom", "records": 0, "target_pipeline": None}, "test", "failure", "test_mode"),
        pytest.param({"error": "boom", "records": 0, "target_pipeline": None}, "run", "failure", "run_error"),
        pytest.param({"records": 0, "target_pipeline": None}, "run", "success", "no_records"),
        pytest.param({"records": 5, "target_pipeline": None}, "run", "success", "no_target_pipeline"),
        pytest.param({"records": 5}, "preview", "success", "test_mode"),
    ],
)
def test_persisted_reason_precedence(
    datris: StandInDatris, tap_fields: dict[str, Any], mode: str, status: str, reason: str
) -> None:
    datris.add_tap(name="tap", **tap_fields)
    body = run_tap(datris, "tap", mode=mode).json()
    assert body["status"] == status
    assert body["persisted"] is False
    assert body["persistedReason"] == reason
    assert "publisherToken" not in body


def test_script_error_and_no_records_update_the_tap(datris: StandInDatris) -> None:
    datris.add_tap(name="broken", error="RuntimeError: upstream answered 503")
    datris.add_tap(name="empty", records=0)
    failed = run_tap(datris, "broken", mode="run").json()
    assert failed["error"] == "RuntimeError: upstream answered 503"
    assert failed["recordCount"] == 0
    broken_config = call(datris, "GET", "/tap", params={"name": "broken"}).json()
    assert broken_config["lastRunStatus"] == "failure"
    assert broken_config["lastRunError"] == "RuntimeError: upstream answered 503"

    empty = run_tap(datris, "empty", mode="run").json()
    assert (empty["status"], empty["persistedReason"], empty["recordCount"]) == ("success", "no_records", 0)
    assert call(datris, "GET", "/tap", params={"name": "empty"}).json()["lastRunStatus"] == "no_records"
    assert datris.run_logs("empty")[0]["status"] == "no_records"


def test_script_timeout_fails_the_run(datris: StandInDatris) -> None:
    datris.tap_run_timeout_seconds = 0.1
    datris.add_tap(name="slow", script_seconds=5)
    result: dict[str, requests.Response] = {}
    runner = threading.Thread(target=lambda: result.update(run=run_tap(datris, "slow", mode="run")))
    runner.start()
    datris.wait_until_running("slow")
    datris.clock.advance(0.1)
    runner.join(timeout=10)
    body = result["run"].json()
    assert body["status"] == "failure"
    assert body["error"].startswith("Tap script timed out after 0.1 seconds (run mode; raise TAP_RUN_TIMEOUT_SECONDS")


def test_cron_and_disabled_taps_still_run(datris: StandInDatris) -> None:
    datris.add_tap(name="nightly", cron="0 0 6 * * ?", enabled=False)
    datris.add_tap(name="manual")
    body = run_tap(datris, "nightly", mode="run").json()
    assert body["status"] == "success" and body["persisted"] is True
    assert call(datris, "GET", "/tap", params={"name": "nightly"}).json()["cronExpression"] == "0 0 6 * * ?"
    assert "cronExpression" not in call(datris, "GET", "/tap", params={"name": "manual"}).json()


def test_request_validation(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    missing_name = call(datris, "POST", "/tap/run", json={"mode": "run"})
    assert (missing_name.status_code, missing_name.json()) == (500, {"error": "Tap name is required"})
    wrong_type = call(datris, "POST", "/tap/run", data="name=orders_api")
    assert wrong_type.status_code == 415
    assert wrong_type.json()["error"] == "Unsupported Media Type"
    not_json = call(datris, "POST", "/tap/run", data="{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert call(datris, "GET", "/tap").status_code == 400
    assert call(datris, "GET", "/tap/run").status_code == 405
    assert call(datris, "GET", "/nowhere").status_code == 404


# ------------------------------------------------------------------------------------------------
# Tap config and run history
# ------------------------------------------------------------------------------------------------


def test_get_tap_writes_integers_as_doubles_and_taps_as_integers(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", records=7, owner="airflow")
    run_tap(datris, "orders_api", mode="run")
    config = call(datris, "GET", "/tap", params={"name": "orders_api"}).json()
    assert config["lastRunRecordCount"] == 7.0 and isinstance(config["lastRunRecordCount"], float)
    assert config["version"] == 1.0 and isinstance(config["version"], float)
    assert config["retryCount"] == 0.0 and isinstance(config["retryCount"], float)
    assert config["createdByKeyLabel"] == "airflow"
    assert DATE_TIME.match(config["lastRunTime"])
    assert "script" in config

    (listed,) = call(datris, "GET", "/taps").json()
    assert listed["lastRunRecordCount"] == 7 and isinstance(listed["lastRunRecordCount"], int)
    assert "script" not in listed


def test_tap_logs_newest_first_with_pipeline_rollup(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    test_run = run_tap(datris, "orders_api").json()
    real_run = run_tap(datris, "orders_api", mode="run").json()
    assert "publisherToken" not in test_run

    response = call(datris, "GET", "/tap/logs", params={"name": "orders_api"})
    assert '"pipelineRollup":null' in response.text
    rows = response.json()
    assert [row["mode"] for row in rows] == ["run", "test"]
    newest, oldest = rows
    assert newest["publisherToken"] == real_run["publisherToken"]
    assert newest["status"] == "success" and newest["recordCount"] == 3 and newest["dataType"] == "json"
    assert isinstance(newest["durationMs"], int) and DATE_TIME.match(newest["runTime"])
    assert newest["pipelineRollup"]["allDone"] is False
    assert newest["pipelineRollup"]["status"] == "processing"
    assert len(newest["pipelineRollup"]["jobs"]) == 1
    assert "events" not in newest["pipelineRollup"]
    assert oldest["pipelineRollup"] is None

    # No time has passed: the job still waits for the scheduler's tick.
    assert datris.jobs(real_run["publisherToken"])[0].state == "INITIALIZED"
    assert call(datris, "GET", "/tap/logs", params={"name": "unknown"}).json() == []


def test_tap_logs_keep_the_newest_50(datris: StandInDatris) -> None:
    datris.add_tap(name="busy")
    for _ in range(55):
        run_tap(datris, "busy")
    rows = call(datris, "GET", "/tap/logs", params={"name": "busy"}).json()
    assert len(rows) == 50
    assert len(datris.run_logs("busy")) == 55


# ------------------------------------------------------------------------------------------------
# Pipeline status: the job lifecycle on the clock, and the rollup of §4.2
# ------------------------------------------------------------------------------------------------


def test_success_lifecycle_runs_on_the_clock_not_on_polls(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", records=4)
    body = run_tap(datris, "orders_api", mode="run").json()
    publisher, (pipeline_token,) = body["publisherToken"], body["pipelineTokens"]

    stored = datris.events(publisher)
    assert event_steps(stored) == [
        ("StreamNotifier", "begin", "info", "Stream data received, pipeline: orders, filename: tap-orders_api.json"),
        ("StreamNotifier", "processing", "info", stored[1]["description"]),
        ("StreamNotifier", "end", "info", "Process completed successfully"),
    ]
    assert re.match(r"^Total data size: \d+$", stored[1]["description"])
    assert datris.jobs(publisher)[0].state == "INITIALIZED"
    submitted_at = stored[-1]["epoch"]

    # Polls only observe: however many arrive, the job waits for the scheduler's 5 s tick.
    for _ in range(3):
        assert len(poll(datris, publisher)["events"]) == 3
    datris.clock.advance(4.9)
    assert datris.jobs(publisher)[0].state == "INITIALIZED"
    datris.clock.advance(0.1)

    first = poll(datris, publisher)
    assert first["events"][-1]["epoch"] == submitted_at + 5000
    assert first["rollup"]["allDone"] is False
    assert first["rollup"]["status"] == "processing"
    assert first["rollup"]["jobs"][0]["status"] == "processing"
    assert event_steps(first["events"])[-1] == ("JobRunner", "begin", "info", "Process started")
    assert datris.jobs(publisher)[0].state == "PROCESSING"
    assert first["rollup"]["jobs"][0]["elapsed"] == "5.00 sec"  # now minus the first event, on the clock

    datris.clock.advance(2)  # the default job runs 2 s; its events are written over that time
    second = poll(datris, publisher)
    events = second["events"]
    assert event_steps(events)[3:] == [
        ("JobRunner", "begin", "info", "Process started"),
        ("PostgresLoader", "processing", "info", "Loaded 4 records"),
        ("JobRunner", "end", "info", "Process completed"),
    ]
    assert second["rollup"] == {
        "allDone": True,
        "status": "success",
        "jobs": [expected_job_rollup(events, "success")],
    }
    assert second["rollup"]["jobs"][0]["filename"] == "stream: orders"
    assert second["rollup"]["jobs"][0]["elapsed"] == "7.00 sec"
    assert [e["epoch"] - submitted_at for e in events[3:]] == [5000, 6800, 7000]
    assert "recordCount" not in second["rollup"]["jobs"][0]
    assert datris.jobs(publisher)[0].state == "COMPLETED"

    for event in events:
        assert event["id"] == 0
        assert DATE_TIME.match(event["dateTime"])
        assert event["dateTime"] == format_datris_time(event["epoch"])
        assert isinstance(event["epoch"], int) and event["epoch"] > 1_600_000_000_000
        assert event["publisherToken"] == publisher and event["pipelineToken"] == pipeline_token
        assert event["pipeline"] == "orders" and event["filename"] == "stream: orders"
        assert "message" not in event
    assert [e["epoch"] for e in events] == sorted(e["epoch"] for e in events)


def test_warning_lifecycle(datris: StandInDatris) -> None:
    datris.add_tap(name="dq_tap", pipeline_outcome="warning")
    publisher = run_tap(datris, "dq_tap", mode="run").json()["publisherToken"]
    datris.clock.advance(7)
    result = poll(datris, publisher)
    assert [step[:3] for step in event_steps(result["events"])[4:]] == [
        ("DataQuality", "processing", "warning"),
        ("PostgresLoader", "processing", "info"),
        ("JobRunner", "end", "info"),
    ]
    assert result["rollup"] == {
        "allDone": True,
        "status": "warning",
        "jobs": [expected_job_rollup(result["events"], "warning")],
    }


@pytest.mark.parametrize("error_style", ["json", "stacktrace"])
def test_error_lifecycle_reports_the_first_error_event(datris: StandInDatris, error_style: str) -> None:
    datris.error_style = error_style
    datris.add_tap(name="bad_load", pipeline_outcome="error")
    publisher = run_tap(datris, "bad_load", mode="run").json()["publisherToken"]
    datris.clock.advance(7)
    result = poll(datris, publisher)
    events = result["events"]
    # Newer servers keep the description to one line and move the stack trace into `detail`; older
    # ones put the stack trace in the description itself.
    if error_style == "json":
        description = DEFAULT_PIPELINE_ERROR
        assert events[-1]["detail"].startswith("ai.datris.model.DatrisException: " + DEFAULT_PIPELINE_ERROR)
    else:
        description = events[-1]["description"]
        first_line, trace = description.split("\n", 1)
        assert first_line == DEFAULT_PIPELINE_ERROR
        assert trace.startswith("ai.datris.model.DatrisException: ") and "\tat ai.datris.controller.JobRunner" in trace
        assert "detail" not in events[-1]
    assert event_steps(events)[4:] == [
        ("PostgresLoader", "end", "error", description),
        ("JobRunner", "end", "error", description),
    ]
    job = result["rollup"]["jobs"][0]
    assert job == expected_job_rollup(events, "error")
    assert job["lastError"] == {"processName": "PostgresLoader", "description": description}
    assert result["rollup"]["status"] == "error" and result["rollup"]["allDone"] is True


def test_document_tap_submits_one_job_per_new_document(datris: StandInDatris) -> None:
    datris.add_tap(name="contracts", tap_type="document", records=4, documents=3, job_seconds=3)
    body = run_tap(datris, "contracts", mode="run").json()
    assert body["dataType"] == "document" and body["recordCount"] == 4
    assert len(body["pipelineTokens"]) == 3
    publisher = body["publisherToken"]
    assert [job.pipeline_token for job in datris.jobs(publisher)] == body["pipelineTokens"]
    assert datris.run_logs("contracts")[0]["recordCount"] == 3  # the submitted (new) documents

    assert poll(datris, publisher)["rollup"]["status"] == "processing"
    datris.clock.advance(7)
    assert poll(datris, publisher)["rollup"]["allDone"] is False
    datris.clock.advance(1)
    result = poll(datris, publisher)
    rollup = result["rollup"]
    assert rollup["allDone"] is True and rollup["status"] == "success"
    assert sorted(job["pipelineToken"] for job in rollup["jobs"]) == sorted(body["pipelineTokens"])
    assert [job["startedAt"] for job in rollup["jobs"]] == sorted(job["startedAt"] for job in rollup["jobs"])
    for job in rollup["jobs"]:
        job_events = [e for e in result["events"] if e["pipelineToken"] == job["pipelineToken"]]
        assert job == expected_job_rollup(job_events, "success")
    descriptions = [e["description"] for e in result["events"] if e["state"] == "begin"]
    assert "Stream data received, pipeline: orders, filename: contracts-document-1.pdf" in descriptions


def test_document_tap_with_only_known_documents_persists_without_a_token(datris: StandInDatris) -> None:
    datris.add_tap(name="contracts", tap_type="document", records=2, documents=0)
    body = run_tap(datris, "contracts", mode="run").json()
    assert body["persisted"] is True
    assert "publisherToken" not in body and "pipelineTokens" not in body


def test_polling_one_pipeline_token_reads_only_that_job(datris: StandInDatris) -> None:
    datris.add_tap(name="contracts", tap_type="document", documents=2, job_seconds=1)
    body = run_tap(datris, "contracts", mode="run").json()
    first, second = body["pipelineTokens"]
    datris.clock.advance(6)
    events = poll(datris, first, by="pipelinetoken", withrollup=None)
    assert isinstance(events, list)
    assert {e["pipelineToken"] for e in events} == {first}
    # Both jobs ran on the clock, the polled one and the other alike.
    assert (datris.job(first).state, datris.job(second).state) == ("COMPLETED", "COMPLETED")
    assert (datris.job(first).polls, datris.job(second).polls) == (1, 0)
    # publishertoken wins when both tokens are sent.
    both = call(
        datris,
        "GET",
        "/pipeline/status",
        params={"publishertoken": body["publisherToken"], "pipelinetoken": first, "withrollup": "true"},
    ).json()
    assert len(both["rollup"]["jobs"]) == 2


def test_a_job_with_no_end_stays_processing(datris: StandInDatris) -> None:
    datris.add_tap(name="endless", job_seconds=None)
    publisher = run_tap(datris, "endless", mode="run").json()["publisherToken"]
    datris.clock.advance(3600)
    for _ in range(5):
        rollup = poll(datris, publisher)["rollup"]
    assert rollup["status"] == "processing" and rollup["allDone"] is False
    assert rollup["jobs"][0]["elapsed"] == "1 hr 0 min 0.00 sec"
    assert datris.jobs(publisher)[0].state == "PROCESSING"
    assert datris.jobs(publisher)[0].polls == 5


@pytest.mark.parametrize(("job_start_seconds", "started_after"), [(0, 5), (3, 5), (5, 10), (7.5, 10)])
def test_a_job_starts_at_the_first_scheduler_tick_after_its_start_delay(
    datris: StandInDatris, job_start_seconds: float, started_after: float
) -> None:
    datris.add_tap(name="queued", job_start_seconds=job_start_seconds, job_seconds=None)
    publisher = run_tap(datris, "queued", mode="run").json()["publisherToken"]
    datris.clock.advance(started_after - 0.001)
    assert datris.jobs(publisher)[0].state == "INITIALIZED"
    datris.clock.advance(0.001)
    assert datris.jobs(publisher)[0].state == "PROCESSING"


def test_a_run_nobody_polls_ends_on_its_own_and_its_log_row_shows_the_finished_rollup() -> None:
    with StandInDatris(time_scale=500) as datris:
        datris.add_tap(name="orders_api", records=5)
        token = run_tap(datris, "orders_api", mode="run").json()["publisherToken"]
        # The scheduler thread ends the job (7 stand-in seconds at most: 14 ms here); nobody polls.
        datris.wait_for(lambda: datris.jobs(token)[0].state == "COMPLETED")
        (row,) = call(datris, "GET", "/tap/logs", params={"name": "orders_api"}).json()
        assert datris.calls("GET /pipeline/status") == []
    rollup = row["pipelineRollup"]
    assert (rollup["allDone"], rollup["status"]) == (True, "success")
    assert rollup["jobs"][0]["elapsed"].endswith(" sec")


@pytest.mark.parametrize("value", ["true", "TRUE", "True"])
def test_withrollup_true_in_any_case_gives_the_rollup_object(datris: StandInDatris, value: str) -> None:
    datris.add_tap(name="orders_api")
    publisher = run_tap(datris, "orders_api", mode="run").json()["publisherToken"]
    result = poll(datris, publisher, withrollup=value)
    assert set(result) == {"rollup", "events"}


@pytest.mark.parametrize("value", [None, "1", "yes", "false", "true "])
def test_other_withrollup_values_give_the_raw_event_array(datris: StandInDatris, value: str | None) -> None:
    datris.add_tap(name="orders_api")
    publisher = run_tap(datris, "orders_api", mode="run").json()["publisherToken"]
    result = poll(datris, publisher, withrollup=value)
    assert isinstance(result, list) and len(result) == 3


def test_unknown_token_answers_200_with_empty_data(datris: StandInDatris) -> None:
    assert poll(datris, "no-such-token") == {
        "rollup": {"allDone": False, "status": "processing", "jobs": []},
        "events": [],
    }
    assert poll(datris, "no-such-token", withrollup=None) == []
    assert poll(datris, "no-such-token", by="pipelinetoken") == {
        "rollup": {"allDone": False, "status": "processing", "jobs": []},
        "events": [],
    }


def test_status_parameters_are_case_sensitive_and_summary_page_lists_jobs(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", records=9)
    publisher = run_tap(datris, "orders_api", mode="run").json()["publisherToken"]
    # Camel-case names are not read: the server answers with the summary page instead.
    page = call(datris, "GET", "/pipeline/status", params={"publisherToken": publisher}).json()
    assert isinstance(page, list)
    (row,) = page
    assert row["pipeline"] == "orders" and row["status"] == "processing" and row["recordCount"] == 9
    assert datris.jobs(publisher)[0].polls == 0


def test_build_rollup_rules() -> None:
    def event(token: str, epoch: int, process: str, state: str, code: str) -> dict[str, Any]:
        return {
            "pipelineToken": token,
            "pipeline": "p",
            "filename": "stream: p",
            "processName": process,
            "state": state,
            "code": code,
            "description": f"{process} {state}",
            "epoch": epoch,
            "dateTime": format_datris_time(epoch),
        }

    base = 1_777_903_402_000
    finished_with_warning = [
        event("a", base, "JobRunner", "begin", "info"),
        event("a", base + 500, "DataQuality", "processing", "warning"),
        event("a", base + 3250, "JobRunner", "end", "info"),
    ]
    still_running = [event("b", base + 1000, "JobRunner", "begin", "info")]
    rollup = build_rollup(finished_with_warning + still_running, now_ms=base + 2000)
    # A warning job makes the aggregate "warning" even while another job still runs.
    assert rollup["status"] == "warning" and rollup["allDone"] is False
    assert [job["elapsed"] for job in rollup["jobs"]] == ["3.25 sec", "1.00 sec"]

    # Warning without a JobRunner end event is still processing.
    assert build_rollup(finished_with_warning[:2], now_ms=base + 1000)["jobs"][0]["status"] == "processing"
    # More than 8 hours with no end: timed_out, which counts as done and as an error in the aggregate.
    stale = build_rollup(still_running, now_ms=base + 1000 + 8 * 3600 * 1000 + 1)
    assert stale["jobs"][0]["status"] == "timed_out"
    assert stale["status"] == "error" and stale["allDone"] is True
    # The first error event is the lastError, even before the end.
    errors = [
        event("c", base, "PostgresLoader", "processing", "error"),
        event("c", base + 10, "JobRunner", "end", "error"),
    ]
    assert build_rollup(errors, now_ms=base)["jobs"][0]["lastError"]["processName"] == "PostgresLoader"


def test_format_elapsed() -> None:
    assert format_elapsed(3250) == "3.25 sec"
    assert format_elapsed(63_250) == "1 min 3.25 sec"
    assert format_elapsed(3_723_250) == "1 hr 2 min 3.25 sec"
    assert format_elapsed(3_603_050) == "1 hr 0 min 3.05 sec"
    assert format_elapsed(0) == "0.00 sec"


# ------------------------------------------------------------------------------------------------
# POST /job/kill
# ------------------------------------------------------------------------------------------------


def test_kill_rules(datris: StandInDatris) -> None:
    datris.add_tap(name="endless", job_seconds=None)
    body = run_tap(datris, "endless", mode="run").json()
    publisher, (token,) = body["publisherToken"], body["pipelineTokens"]

    queued = kill(datris, token)
    assert (queued.status_code, queued.json()) == (500, {"error": "Job is not running (state: INITIALIZED)"})

    datris.clock.advance(5)  # the scheduler's tick starts the JobRunner; no poll needed
    killed = kill(datris, token)
    assert (killed.status_code, killed.json()) == (200, {"status": "cancelled", "pipelineToken": token})
    assert datris.kills == [token]

    result = poll(datris, publisher)
    assert event_steps(result["events"])[-1] == ("JobRunner", "end", "error", "Job cancelled by user")
    job = result["rollup"]["jobs"][0]
    assert job["status"] == "error"
    assert job["lastError"] == {"processName": "JobRunner", "description": "Job cancelled by user"}
    assert result["rollup"]["allDone"] is True and result["rollup"]["status"] == "error"

    again = kill(datris, token)
    assert (again.status_code, again.json()) == (500, {"error": "Job is not running (state: CANCELLED)"})
    unknown = kill(datris, "nope")
    assert (unknown.status_code, unknown.json()) == (500, {"error": "Job not found for pipeline token: nope"})
    missing = call(datris, "POST", "/job/kill", json={})
    assert missing.json() == {"error": "'pipelineToken' parameter is required"}


def test_a_killed_job_is_frozen_and_a_finished_job_cannot_be_killed(datris: StandInDatris) -> None:
    datris.add_tap(name="short", job_seconds=3)
    body = run_tap(datris, "short", mode="run").json()
    publisher, (token,) = body["publisherToken"], body["pipelineTokens"]
    datris.clock.advance(6)  # started at the tick, one second into its three
    assert kill(datris, token).status_code == 200
    before = len(datris.events(publisher))
    datris.clock.advance(60)
    assert len(datris.events(publisher)) == before
    assert datris.job(token).state == "CANCELLED"

    datris.add_tap(name="quick", job_seconds=1)
    done = run_tap(datris, "quick", mode="run").json()
    datris.clock.advance(6)
    finished = kill(datris, done["pipelineTokens"][0])
    assert finished.json() == {"error": "Job is not running (state: COMPLETED)"}


# ------------------------------------------------------------------------------------------------
# Error generations
# ------------------------------------------------------------------------------------------------


def test_unknown_tap_is_500_with_json_error(datris: StandInDatris) -> None:
    for response in (run_tap(datris, "nope", mode="run"), call(datris, "GET", "/tap", params={"name": "nope"})):
        assert response.status_code == 500
        assert response.json() == {"error": "Tap: nope not found"}


def test_unknown_tap_is_500_with_stack_trace_in_the_older_style(datris: StandInDatris) -> None:
    datris.error_style = "stacktrace"
    for response in (run_tap(datris, "nope", mode="run"), call(datris, "GET", "/tap", params={"name": "nope"})):
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("application/json")
        lines = response.text.splitlines()
        assert lines[0] == "ai.datris.model.DatrisException: Tap: nope not found"
        assert sum(line.startswith("\tat ai.datris.") for line in lines) >= 2
        with pytest.raises(ValueError):
            response.json()


# ------------------------------------------------------------------------------------------------
# Authentication and capabilities
# ------------------------------------------------------------------------------------------------


def test_keys_off_allow_everything_and_ignore_any_key(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    response = run_tap(datris, "orders_api", mode="run", headers={"x-api-key": "whatever"})
    assert response.json()["status"] == "success"
    assert call(datris, "GET", "/mcp/tools").json()["filtered"] is False


def test_missing_key_json_style(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_tap(name="orders_api")
    response = call(datris, "GET", "/tap", params={"name": "orders_api"})
    assert (response.status_code, response.json()) == (401, {"error": "Authentication required"})


def test_missing_key_stacktrace_style(datris: StandInDatris) -> None:
    datris.error_style = "stacktrace"
    datris.require_api_keys()
    response = run_tap(datris, "orders_api", mode="run")
    assert response.status_code == 500
    assert response.text.splitlines()[0].endswith("x-api-key does not exist or is invalid")
    assert "\tat ai.datris." in response.text


def test_unknown_revoked_key_and_key_store_down(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_api_key("good", label="airflow")
    datris.add_api_key("old", label="retired", revoked=True)
    datris.add_tap(name="orders_api")
    for key in ("unknown", "old"):
        response = call(datris, "GET", "/tap", params={"name": "orders_api"}, headers={"x-api-key": key})
        assert (response.status_code, response.json()) == (401, {"error": "API key is revoked or invalid"})
    ok = call(datris, "GET", "/tap", params={"name": "orders_api"}, headers={"x-api-key": "good"})
    assert ok.status_code == 200

    datris.revoke_api_key("good")
    assert call(datris, "GET", "/taps", headers={"x-api-key": "good"}).status_code == 401

    datris.add_api_key("good", label="airflow")
    datris.key_store_down()
    down = call(datris, "GET", "/taps", headers={"x-api-key": "good"})
    assert (down.status_code, down.json()) == (503, {"error": "API key metadata unavailable"})


def test_key_without_the_route_capability_gets_403(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_api_key("runner", label="airflow", capabilities=("tap:run",))
    datris.add_tap(name="orders_api")
    headers = {"x-api-key": "runner"}

    denied = call(datris, "GET", "/tap", params={"name": "orders_api"}, headers=headers)
    assert denied.status_code == 403
    body = denied.json()
    assert body["error"] == "capability denied"
    assert body["errorKind"] == "capability_denied"
    assert body["key"] == "airflow"
    assert body["required"] == "tap:read"
    assert body["route"] == "GET /api/v1/tap"
    assert body["message"].startswith("API key 'airflow' does not hold capability 'tap:read'.")

    run = run_tap(datris, "orders_api", mode="run", headers=headers).json()
    assert run["status"] == "success"
    expected = {
        ("GET", "/tap/logs", "job:read"): {"params": {"name": "orders_api"}},
        ("GET", "/pipeline/status", "job:read"): {"params": {"publishertoken": run["publisherToken"]}},
        ("POST", "/job/kill", "job:kill"): {"json": {"pipelineToken": run["pipelineTokens"][0]}},
        ("GET", "/taps", "tap:read"): {},
    }
    for (method, path, capability), kwargs in expected.items():
        response = call(datris, method, path, headers=headers, **kwargs)
        assert response.status_code == 403, path
        assert response.json()["required"] == capability
        assert response.json()["route"] == f"{method} /api/v1{path}"


def test_airflow_capability_set_is_enough(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_api_key("af", label="airflow", capabilities=("tap:read", "tap:run", "job:read", "job:kill"))
    datris.add_tap(name="orders_api", job_seconds=None)
    headers = {"x-api-key": "af"}
    run = run_tap(datris, "orders_api", mode="run", headers=headers).json()
    datris.clock.advance(5)
    assert call(datris, "GET", "/tap", params={"name": "orders_api"}, headers=headers).status_code == 200
    assert call(datris, "GET", "/tap/logs", params={"name": "orders_api"}, headers=headers).status_code == 200
    status = call(datris, "GET", "/pipeline/status", params={"publishertoken": run["publisherToken"]}, headers=headers)
    assert status.status_code == 200
    killed = call(datris, "POST", "/job/kill", json={"pipelineToken": run["pipelineTokens"][0]}, headers=headers)
    assert killed.status_code == 200


def test_owner_scope_denial_is_500_and_taps_are_filtered(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_api_key("mine", label="airflow", capabilities=("tap:run:owner=self", "tap:read:owner=self"))
    datris.add_tap(name="own_tap", owner="airflow")
    datris.add_tap(name="their_tap", owner="someone")
    headers = {"x-api-key": "mine"}

    assert run_tap(datris, "own_tap", mode="run", headers=headers).json()["status"] == "success"
    denied = run_tap(datris, "their_tap", mode="run", headers=headers)
    assert denied.status_code == 500
    assert denied.json()["error"] == (
        "capability denied: key 'airflow' does not hold capability 'tap:run' "
        "for the targeted resource (scope: owner=someone)"
    )
    assert [tap["name"] for tap in call(datris, "GET", "/taps", headers=headers).json()] == ["own_tap"]


def test_version_is_public_and_all_strings(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.key_store_down()
    response = call(datris, "GET", "/version")
    assert response.status_code == 200
    info = response.json()
    assert all(isinstance(value, str) for value in info.values())
    assert info["version"] == "1.38.3"
    assert info["useApiKeys"] == "true"
    assert info["tapRunTimeoutSeconds"] == "3600"
    assert info["tapScriptTimeoutSeconds"] == "300"
    assert info["tapRunTimeoutSecondsSource"] == "default"


def test_legacy_version_lacks_the_timeouts(datris: StandInDatris) -> None:
    datris.legacy_version = True
    info = call(datris, "GET", "/version").json()
    assert "tapRunTimeoutSeconds" not in info and "tapScriptTimeoutSeconds" not in info
    assert info["useApiKeys"] == "false"


def test_mcp_tools_checks_the_key(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_api_key("reader", label="viewer", capabilities=("tap:read", "job:read"))
    datris.add_api_key("admin", label="admin")
    for headers in ({}, {"x-api-key": "wrong"}):
        response = call(datris, "GET", "/mcp/tools", headers=headers)
        assert (response.status_code, response.json()) == (401, {"error": "x-api-key does not exist or is invalid"})

    limited = call(datris, "GET", "/mcp/tools", headers={"x-api-key": "reader"}).json()
    assert limited["filtered"] is True
    assert "get_tap" in limited["tools"] and "run_tap" not in limited["tools"]
    full = call(datris, "GET", "/mcp/tools", headers={"x-api-key": "admin"}).json()
    assert full["filtered"] is False and "kill_job" in full["tools"]

    datris.has_mcp_tools = False
    assert call(datris, "GET", "/mcp/tools", headers={"x-api-key": "admin"}).status_code == 404


# ------------------------------------------------------------------------------------------------
# Fault injection
# ------------------------------------------------------------------------------------------------


def test_fail_fault_answers_without_running_the_handler(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    datris.fail("POST /tap/run", 503, times=2)
    datris.fail("GET /tap", 429, headers={"Retry-After": "3"})

    assert [run_tap(datris, "orders_api", mode="run").status_code for _ in range(2)] == [503, 503]
    assert datris.run_logs("orders_api") == []
    assert run_tap(datris, "orders_api", mode="run").json()["status"] == "success"

    limited = call(datris, "GET", "/tap", params={"name": "orders_api"})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json() == {"error": "Too Many Requests"}
    assert [r.fault for r in datris.calls("POST /tap/run")] == ["fail", "fail", None]
    assert [r.fault for r in datris.calls("GET /tap")] == ["fail"]


def test_fail_fault_with_a_custom_body(datris: StandInDatris) -> None:
    datris.fail("GET /version", 500, body={"error": "custom"})
    datris.fail("GET /version", 502, body="upstream gone")
    first = call(datris, "GET", "/version")
    assert (first.status_code, first.json()) == (500, {"error": "custom"})
    second = call(datris, "GET", "/version")
    assert (second.status_code, second.text) == (502, "upstream gone")


def test_delay_fault_then_normal_handling(datris: StandInDatris) -> None:
    datris.delay("GET /version", 0.2)
    started = time.monotonic()
    response = call(datris, "GET", "/version")
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200 and response.json()["version"] == "1.38.3"
    assert datris.calls("GET /version")[0].fault == "delay"


def test_reset_fault_cuts_the_connection(datris: StandInDatris) -> None:
    datris.reset("GET /version")
    with pytest.raises(requests.exceptions.ConnectionError):
        call(datris, "GET", "/version")
    assert call(datris, "GET", "/version").status_code == 200
    assert [r.fault for r in datris.calls("GET /version")] == ["reset", None]


def test_reset_fault_on_the_run_does_not_run_it(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    datris.reset("POST /tap/run")
    with pytest.raises(requests.exceptions.ConnectionError):
        run_tap(datris, "orders_api", mode="run")
    assert datris.run_logs("orders_api") == []


def test_html_fault_is_a_proxy_page(datris: StandInDatris) -> None:
    datris.html("GET /pipeline/status")
    response = call(datris, "GET", "/pipeline/status", params={"publishertoken": "x"})
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in response.text
    assert datris.calls("GET /pipeline/status")[0].fault == "html"


def test_garbage_fault_is_not_json(datris: StandInDatris) -> None:
    datris.garbage("GET /tap/logs")
    datris.garbage("GET /tap/logs", body='[{"tapName":"orders_a')
    for expected in ("not json", '[{"tapName":"orders_a'):
        response = call(datris, "GET", "/tap/logs", params={"name": "orders_api"})
        assert response.status_code == 200 and response.text == expected
        with pytest.raises(ValueError):
            response.json()


def test_proxy_timeout_cuts_the_call_while_the_run_carries_on(datris: StandInDatris) -> None:
    gate = threading.Event()
    datris.add_tap(name="orders_api", gate=gate, records=11)
    datris.proxy_timeout()

    response = run_tap(datris, "orders_api", mode="run")
    assert response.status_code == 504
    assert response.headers["Content-Type"].startswith("text/html")
    assert "504 Gateway Time-out" in response.text or "504 Gateway Timeout" in response.text

    datris.wait_until_running("orders_api")
    assert call(datris, "GET", "/tap", params={"name": "orders_api"}).json()["lastRunStatus"] == "running"
    assert call(datris, "GET", "/tap/logs", params={"name": "orders_api"}).json() == []
    gate.set()
    datris.wait_until_idle()

    (row,) = call(datris, "GET", "/tap/logs", params={"name": "orders_api"}).json()
    assert row["status"] == "success" and row["recordCount"] == 11
    assert UUID4.match(row["publisherToken"])
    assert len(datris.jobs(row["publisherToken"])) == 1
    assert call(datris, "GET", "/tap", params={"name": "orders_api"}).json()["lastRunStatus"] == "success"
    (recorded,) = datris.calls("POST /tap/run")
    assert recorded.fault == "proxy_timeout"


def test_proxy_timeout_after_seconds_and_the_debounced_retry(datris: StandInDatris) -> None:
    datris.debounce_clock = FakeClock()  # the retry below always falls inside the window
    datris.add_tap(name="orders_api", script_seconds=30)
    datris.proxy_timeout(after_seconds=0.1)  # real seconds: the proxy measures on its own clock
    started = time.monotonic()
    assert run_tap(datris, "orders_api", mode="run").status_code == 504
    assert time.monotonic() - started >= 0.1
    # A retry within 5 s of the start is debounced: no token, although a run is in flight.
    retry = run_tap(datris, "orders_api", mode="run").json()
    assert retry["status"] == "skipped" and "publisherToken" not in retry
    datris.clock.advance(30)  # the script of the cut call finishes
    datris.wait_until_idle()
    assert len(datris.run_logs("orders_api")) == 1


def test_faults_apply_in_injection_order_and_can_be_cleared(datris: StandInDatris) -> None:
    datris.fail("get /api/v1/version", 500)
    datris.html("GET /version", 503)
    datris.garbage("GET /version")
    assert call(datris, "GET", "/version").status_code == 500
    assert call(datris, "GET", "/version").status_code == 503
    datris.clear_faults()
    assert call(datris, "GET", "/version").status_code == 200
    assert [r.fault for r in datris.calls("GET /version")] == ["fail", "html", None]


def test_wait_until_idle_times_out_while_a_run_is_held(datris: StandInDatris) -> None:
    gate = threading.Event()
    datris.add_tap(name="held", gate=gate)
    runner = threading.Thread(target=lambda: run_tap(datris, "held", mode="run"))
    runner.start()
    datris.wait_until_running("held")
    with pytest.raises(TimeoutError):
        datris.wait_until_idle(timeout=0.05)
    gate.set()
    runner.join(timeout=10)
    datris.wait_until_idle()


# ------------------------------------------------------------------------------------------------
# Server object
# ------------------------------------------------------------------------------------------------


def test_requests_are_recorded_in_order(datris: StandInDatris) -> None:
    call(datris, "GET", "/version", headers={"X-Api-Key": "k"})
    call(datris, "GET", "/tap/logs", params={"name": "a"})
    first, second = datris.requests
    assert (first.method, first.path, first.route) == ("GET", "/version", "GET /version")
    assert first.headers["x-api-key"] == "k" and first.json is None
    assert second.query == {"name": "a"}


def test_reset_state_forgets_everything_but_keeps_serving(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api")
    datris.require_api_keys()
    datris.error_style = "stacktrace"
    datris.fail("GET /version", 500)
    datris.reset_state()
    assert datris.requests == []
    assert call(datris, "GET", "/version").status_code == 200
    response = call(datris, "GET", "/tap", params={"name": "orders_api"})
    assert (response.status_code, response.json()) == (500, {"error": "Tap: orders_api not found"})


def test_add_tap_validates_and_urls() -> None:
    server = StandInDatris()
    with pytest.raises(RuntimeError):
        _ = server.url
    with pytest.raises(ValueError):
        server.add_tap(name="x", pipeline_outcome="exploded")
    tap = server.add_tap(StandInTap(name="x"), records=9)
    assert server.tap("x") is tap and tap.records == 9
    with server:
        assert re.match(r"^http://127\.0\.0\.1:\d+$", server.url)
        assert server.api_url == server.url + "/api/v1"


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def test_cli_parser_and_connection_example() -> None:
    arguments = build_parser().parse_args(["serve", "--port", "9000", "--error-style", "stacktrace"])
    assert (arguments.port, arguments.host, arguments.api_key, arguments.error_style) == (
        9000,
        "127.0.0.1",
        None,
        "stacktrace",
    )
    assert json.loads(connection_example("http://127.0.0.1:9000", None)) == {
        "conn_type": "datris",
        "host": "http://127.0.0.1:9000",
    }
    assert json.loads(connection_example("http://h:1", "k"))["password"] == "k"


def test_demo_taps_are_valid() -> None:
    taps = demo_taps()
    names = {tap.name for tap in taps}
    assert {"orders_api_to_postgres", "nightly_cron_tap", "broken_tap", "bad_load_tap"} <= names
    for tap in taps:
        tap.validate()
        assert tap.script_seconds == 1.0
