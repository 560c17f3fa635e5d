"""DatrisRunTapOperator, seen through real DAGs run with dag.test() against the stand-in Datris."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.dag


def _assert_each_once(log: str, lines: list[str]) -> None:
    for line in lines:
        assert sum(line in row for row in log.splitlines()) == 1, f"expected exactly one log line with {line!r}"


def test_tap_run_streams_logs_pushes_xcoms_and_feeds_downstream(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_success")

    assert outcome.state == "success"
    result = outcome.xcom("run_tap")
    assert result["status"] == "success"
    assert result["row_count"] == 42
    assert result["pipeline_status"] == "success"
    assert outcome.xcom("run_tap", "row_count") == 42
    assert outcome.xcom("run_tap", "duration_ms") >= 0
    publisher_token = outcome.xcom("run_tap", "publisher_token")
    assert publisher_token == result["publisher_token"]
    assert outcome.xcom("run_tap", "pipeline_tokens") == result["pipeline_tokens"]
    assert len(result["pipeline_tokens"]) == 1
    assert outcome.xcom("report") == "42 rows, success"

    # The script's log lines, then every pipeline event's description, each exactly once.
    _assert_each_once(outcome.log, ["[wrapper] calling fetch()"])
    for event in datris.events(publisher_token):
        _assert_each_once(outcome.log, [f"{event['processName']} {event['state']}: {event['description']}"])

    (run_call,) = datris.calls("POST /tap/run")
    assert run_call.json["mode"] == "run"
    params = run_call.json["params"]
    assert set(params) == {"since", "until"}
    assert params["since"] < params["until"]


def test_params_are_rendered_and_sent_as_json(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_nested_params")

    assert outcome.state == "success"
    (run_call,) = datris.calls("POST /tap/run")
    params = run_call.json["params"]
    assert params["ids"] == [1, 2]
    assert params["full"] is True
    assert params["window"]["days"] == 1
    assert len(params["window"]["since"]) == 10  # rendered "YYYY-MM-DD"


def test_datris_scheduled_tap_is_refused_without_running(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_datris_scheduled")

    assert outcome.task_states["run_tap"] == "failed"
    assert "is Datris-scheduled" in outcome.log
    assert "Remove the tap's cron" in outcome.log
    assert datris.calls("POST /tap/run") == []


def test_script_failure_fails_with_the_server_error_and_its_logs(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_script_failure")

    assert outcome.task_states["run_tap"] == "failed"
    assert "KeyError 'page'" in outcome.log
    assert "[tap broken_tap]" in outcome.log
    assert not outcome.has_xcom("run_tap", "publisher_token")


@pytest.mark.parametrize(
    ("dag_id", "status", "why"),
    [
        ("tap_no_records", "no_records", "the tap returned zero records"),
        ("tap_no_target_pipeline", "no_target_pipeline", "the tap has no target pipeline"),
    ],
)
def test_nothing_loaded_succeeds_with_a_warning_saying_why(datris, datris_dag_runner, dag_id, status, why):
    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    assert outcome.xcom("run_tap")["status"] == status
    assert "No data was loaded" in outcome.log
    assert why in outcome.log
    assert datris.calls("GET /pipeline/status") == []


def test_pipeline_error_fails_with_every_failed_jobs_last_error(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_pipeline_error")

    assert outcome.task_states["run_tap"] == "failed"
    assert "failed in PostgresLoader" in outcome.log
    assert "is of type numeric" in outcome.log
    # Tokens were pushed before the wait, so they survive the failure.
    assert outcome.has_xcom("run_tap", "publisher_token")


def test_pipeline_warning_succeeds_with_a_warning(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_pipeline_warning")

    assert outcome.state == "success"
    result = outcome.xcom("run_tap")
    assert result["status"] == "warning"
    assert result["pipeline_status"] == "warning"
    assert "finished with warnings" in outcome.log


def test_document_tap_follows_every_job(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_document")

    assert outcome.state == "success"
    result = outcome.xcom("run_tap")
    assert len(result["pipeline_tokens"]) == 2
    assert {job["status"] for job in result["jobs"]} == {"success"}


def test_debounced_second_run_succeeds_with_a_warning(datris, datris_dag_runner):
    datris.debounce_seconds = 600  # the second call lands in the window however long the first run's job takes
    outcome = datris_dag_runner.run("tap_debounced")

    assert outcome.state == "success"
    assert outcome.xcom("first")["status"] == "success"
    assert outcome.xcom("second")["status"] == "debounced"
    assert "skipped this run" in outcome.log
    assert len(datris.calls("POST /tap/run")) == 2
    assert len([r for r in datris.run_logs("orders_api_to_postgres") if r["mode"] == "run"]) == 1


def test_run_call_cut_by_a_proxy_is_found_not_repeated(datris, datris_dag_runner):
    datris.proxy_timeout("POST /tap/run")

    outcome = datris_dag_runner.run("tap_proxy_cut")

    assert outcome.state == "success"
    assert len(datris.calls("POST /tap/run")) == 1
    result = outcome.xcom("run_tap")
    assert result["status"] == "success"
    assert result["publisher_token"] == datris.run_logs("slow_tap")[0]["publisherToken"]
    assert "Not starting another run" in outcome.log


def test_no_wait_returns_once_jobs_are_submitted(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_no_wait")

    assert outcome.state == "success"
    assert outcome.xcom("run_tap")["status"] == "submitted"
    assert outcome.has_xcom("run_tap", "publisher_token")
    assert datris.calls("GET /pipeline/status") == []


def test_wait_is_bounded_by_timeout(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_wait_timeout")

    assert outcome.task_states["run_tap"] == "failed"
    assert "(timeout=0.5 s) did not finish in time" in outcome.log


def test_token_without_jobs_fails_clearly(datris, datris_dag_runner):
    datris.garbage(
        "GET /pipeline/status",
        body='{"rollup":{"allDone":false,"status":"processing","jobs":[]},"events":[]}',
        times=10_000,
    )

    outcome = datris_dag_runner.run("tap_no_job")

    assert outcome.task_states["run_tap"] == "failed"
    assert "showed no pipeline job" in outcome.log


def test_transient_poll_failures_are_ridden_out(datris, datris_dag_runner, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATRIS_DEFAULT",
        f'{{"conn_type": "datris", "host": "{datris.url}", "extra": {{"retry_delay": 0.01}}}}',
    )
    datris.fail("GET /pipeline/status", 503, times=3)
    datris.fail("GET /tap", 502, times=1)

    outcome = datris_dag_runner.run("tap_transient")

    assert outcome.state == "success"
    assert len(datris.calls("POST /tap/run")) == 1


@pytest.mark.parametrize("dag_id", ["tap_bad_param_key", "tap_bad_param_value"])
def test_bad_params_fail_before_any_call(datris, datris_dag_runner, dag_id):
    outcome = datris_dag_runner.run(dag_id)

    assert outcome.task_states["run_tap"] == "failed"
    assert datris.requests == []
    assert ("'bad-key'" in outcome.log) or ("key 'when'" in outcome.log)


def test_unknown_tap_names_the_server_message(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_unknown")

    assert outcome.task_states["run_tap"] == "failed"
    assert "Tap: no_such_tap not found" in outcome.log
    assert datris.calls("POST /tap/run") == []


def test_retry_does_not_start_a_second_run_while_the_first_is_processing(
    datris, datris_dag_runner, monkeypatch, retry_has_read_the_history
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATRIS_DEFAULT",
        f'{{"conn_type": "datris", "host": "{datris.url}", "extra": {{"retries": 0}}}}',
    )
    # The first attempt's polls fail until it gives up, while its run's pipeline is still going: the
    # stand-in's time stands still until the retry has looked (before 3.3 that is how it knows its run).
    datris.scheduler_tick_seconds = 0
    datris.hold_clock_until(retry_has_read_the_history(2))
    datris.fail("GET /pipeline/status", 503, times=2)

    outcome = datris_dag_runner.run("tap_with_retries")

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 2
    assert len(datris.calls("POST /tap/run")) == 1
    assert "instead of starting another" in outcome.log


def test_execution_timeout_kills_the_running_job(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_execution_timeout")

    assert outcome.task_states["run_tap"] == "failed"
    token = outcome.xcom("run_tap", "pipeline_tokens")[0]
    assert datris.kills == [token]
    assert len(datris.calls("POST /job/kill")) == 1


def test_disabled_tap_with_a_cron_may_be_driven_by_airflow(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("tap_disabled_cron")

    assert outcome.state == "success"
    assert len(datris.calls("POST /tap/run")) == 1
