"""The bad-input table (docs/bad-input.md): each row, run through a real DAG against the stand-in.

Every row ends in an error that says what is wrong and what to fix. For input the provider can check
before calling Datris, nothing runs (no ``POST /tap/run``) and no Airflow retry is wasted. For answers
the provider cannot trust, it fails closed: the task fails, it never succeeds on a guess. A huge but
valid answer (10 MB of script logs) is streamed line by line and the task succeeds.
"""

from __future__ import annotations

import json

import pytest

from datris_provider.operators import DatrisRunTapOperator
from datris_provider.testing.dag_runner import connection_json
from datris_provider.testing.faults import check_run, count_lines, story_tap
from datris_provider.testing.server import StandInTap

pytestmark = pytest.mark.dag

KEY = "dk_badinput_5ecret_0a1b2c3d4e5f"
FAULT_TAP = "fault_tap"
BIG_LOGS_TAP = "big_logs_tap"
BIG_LOG_LINES = 10_000
STATUS = "GET /pipeline/status"
EXTRA = {"retries": 1, "retry_delay": 0.01, "timeout": 5}


def big_logs() -> list[str]:
    """10 000 distinct lines of about 1 kB: a 10 MB ``logs`` string."""
    return [f"[wrapper] big line {index:05d} " + "x" * 1000 for index in range(BIG_LOG_LINES)]


@pytest.fixture
def datris(datris_stand_in, datris_connection, monkeypatch):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow")
    datris_stand_in.add_tap(story_tap(FAULT_TAP, job_seconds=6.0))
    datris_stand_in.add_tap(StandInTap(name=BIG_LOGS_TAP, target_pipeline="orders", logs=big_logs()))
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris_stand_in.url, api_key=KEY, extra=EXTRA))
    return datris_stand_in


def use_connection(monkeypatch, **conn) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", json.dumps({"conn_type": "datris", "password": KEY, **conn}))


def assert_nothing_ran(datris, outcome, *, tries: int = 1) -> None:
    """The task failed, was not retried in vain, ran no tap and leaked no key."""
    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == tries
    assert datris.calls("POST /tap/run") == []
    assert check_run(datris, outcome, api_key=KEY, expected_state="failed", tap_name=FAULT_TAP, expected_runs=0) == []


def assert_failed_closed(datris, outcome) -> None:
    """The task failed at once (no retry can make a wrong answer right) and leaked no key."""
    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == 1
    assert not outcome.has_xcom("run_tap", "row_count")
    datris.wait_until_idle()
    assert check_run(datris, outcome, api_key=KEY, expected_state="failed", expected_runs=None) == []


# -- the connection -----------------------------------------------------------------------------------


def test_connection_without_host(datris, datris_dag_runner, monkeypatch):
    use_connection(monkeypatch)

    outcome = datris_dag_runner.run("bad_input_sync")

    assert "The connection 'datris_default' has no Host. Set Host to the Datris base URL" in outcome.log
    assert datris.requests == []
    assert_nothing_ran(datris, outcome)


def test_host_without_scheme(datris, datris_dag_runner, monkeypatch):
    bare = datris.url.removeprefix("http://")
    use_connection(monkeypatch, host=bare)

    outcome = datris_dag_runner.run("bad_input_sync")

    assert f"Host '{bare}' has no http:// or https:// scheme" in outcome.log
    assert f"e.g. https://{bare}" in outcome.log
    assert datris.requests == []
    assert_nothing_ran(datris, outcome)


def test_host_ending_in_api_v1(datris, datris_dag_runner, monkeypatch):
    use_connection(monkeypatch, host=datris.url + "/api/v1")

    outcome = datris_dag_runner.run("bad_input_sync")

    assert "ends in /api/v1; the provider adds that itself" in outcome.log
    assert f"Set Host to '{datris.url}'" in outcome.log
    assert datris.requests == []
    assert_nothing_ran(datris, outcome)


def test_connection_timeout_not_positive(datris, datris_dag_runner, monkeypatch):
    use_connection(monkeypatch, host=datris.url, extra={"timeout": -1})

    outcome = datris_dag_runner.run("bad_input_sync")

    assert "extra 'timeout' must be positive, not -1" in outcome.log
    assert datris.requests == []
    assert_nothing_ran(datris, outcome)


# -- the operator's arguments -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_poll_interval_is_refused_when_the_dag_is_defined(datris, value):
    with pytest.raises(ValueError, match=r"poll_interval must be more than zero seconds"):
        DatrisRunTapOperator(task_id="run_tap", tap_name=FAULT_TAP, poll_interval=value)

    assert datris.requests == []


def test_negative_timeout_is_refused_when_the_dag_is_defined(datris):
    with pytest.raises(ValueError, match=r"timeout must be zero or more seconds, not -5"):
        DatrisRunTapOperator(task_id="run_tap", tap_name=FAULT_TAP, timeout=-5)

    assert datris.requests == []


def test_tap_params_not_serialisable(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("bad_input_param_value")

    assert "tap_params value for key 'ids' is a set, which cannot be sent as JSON" in outcome.log
    assert "Convert it to a string, number, boolean, list or dict" in outcome.log
    assert_nothing_ran(datris, outcome)


def test_tap_params_key_the_server_rejects(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("bad_input_param_key")

    assert "tap_params key 'since-date' is not a valid Datris parameter name" in outcome.log
    assert "use letters, digits and underscores" in outcome.log
    assert_nothing_ran(datris, outcome)


# -- answers the provider cannot trust, before the run --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "starting"),
    [
        ("Welcome to nginx!", "starting: 'Welcome to nginx!'"),
        ("", "(0 bytes, starting: 'empty answer')"),
        ('{"name": "fault_tap", "enabled": tr', 'starting: \'{"name": "fault_tap", "enabled": tr\''),
    ],
    ids=["not_json", "empty_body", "truncated_body"],
)
def test_200_answer_that_is_not_json(datris, datris_dag_runner, body, starting):
    datris.garbage("GET /tap", body=body, times=10)

    outcome = datris_dag_runner.run("bad_input_sync")

    assert "GET /api/v1/tap answered HTTP 200 with a body that is not JSON" in outcome.log
    assert starting in outcome.log
    assert "Is Host pointing at the Datris API?" in outcome.log
    assert_nothing_ran(datris, outcome)


def test_html_error_page_from_a_proxy(datris, datris_dag_runner):
    datris.html("GET /tap", status=502, times=100)

    outcome = datris_dag_runner.run("bad_input_sync")

    assert "GET /api/v1/tap failed with HTTP 502: an HTML error page (from a proxy in front of Datris?)" in outcome.log
    assert "<html>" not in outcome.log
    # A proxy's 502 may pass: the client repeats the call, then Airflow retries the task once.
    assert len(datris.calls("GET /tap")) == 2 * (EXTRA["retries"] + 1)
    assert_nothing_ran(datris, outcome, tries=2)


# -- answers the provider cannot trust, after the run started: fail closed -------------------------------


def _status_body(events: list[dict], job: dict, rollup_status: str = "processing") -> str:
    return json.dumps({"rollup": {"allDone": False, "status": rollup_status, "jobs": [job]}, "events": events})


EVENT = {"id": 0, "pipeline": "orders", "processName": "JobRunner", "pipelineToken": "p-1", "state": "begin"}
JOB = {"pipelineToken": "p-1", "pipeline": "orders", "status": "processing"}
UNTRUSTED_STATUS = {
    "event_without_epoch": (_status_body([EVENT], JOB), "a pipeline status event has no 'epoch' field"),
    "job_without_status": (
        _status_body([], {"pipelineToken": "p-1", "pipeline": "orders"}),
        "a pipeline job in the rollup has no 'status' field",
    ),
    "rollup_status_cancelled": (
        _status_body([], JOB, rollup_status="cancelled"),
        "the pipeline rollup: status 'cancelled' is not one of",
    ),
}


@pytest.mark.parametrize("dag_id", ["bad_input_sync", "bad_input_deferred"])
@pytest.mark.parametrize("case", sorted(UNTRUSTED_STATUS))
def test_status_answer_missing_fields_or_with_an_unknown_status_fails_closed(datris, datris_dag_runner, dag_id, case):
    body, message = UNTRUSTED_STATUS[case]
    datris.garbage(STATUS, body=body, times=100)

    outcome = datris_dag_runner.run(dag_id)

    assert message in outcome.log
    assert len(datris.calls("POST /tap/run")) == 1
    assert_failed_closed(datris, outcome)


@pytest.mark.parametrize("dag_id", ["bad_input_sync", "bad_input_deferred"])
def test_run_answer_with_an_unknown_status_fails_closed(datris, datris_dag_runner, dag_id):
    answer = {"tap": FAULT_TAP, "status": "cancelled", "mode": "run", "persisted": True, "publisherToken": "t-1"}
    datris.garbage("POST /tap/run", body=json.dumps(answer))

    outcome = datris_dag_runner.run(dag_id)

    assert "POST /tap/run: status 'cancelled' is not one of ['failure', 'skipped', 'success']" in outcome.log
    assert "refusing to guess" in outcome.log
    assert datris.calls(STATUS) == []
    assert_failed_closed(datris, outcome)


# -- a huge but valid answer ---------------------------------------------------------------------------


@pytest.mark.parametrize("dag_id", ["bad_input_big_logs_sync", "bad_input_big_logs_deferred"])
def test_ten_megabyte_logs_are_streamed_line_by_line(datris, datris_dag_runner, dag_id):
    assert len("\n".join(datris.tap(BIG_LOGS_TAP).logs or [])) >= 10_000_000

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    assert outcome.log_count(f"[tap {BIG_LOGS_TAP}] [wrapper] big line ") == BIG_LOG_LINES
    last = f"[tap {BIG_LOGS_TAP}] {big_logs()[-1]}"
    assert count_lines(outcome.log, [last])[last] == 1
    datris.wait_until_idle()
    assert check_run(datris, outcome, api_key=KEY, tap_name=BIG_LOGS_TAP) == []
