"""Deferrable mode through real DAGs: the same outcomes as in the worker, with no worker held."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.dag


def test_deferred_run_succeeds_with_the_same_xcoms_and_each_line_once(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("deferred_success")

    assert outcome.state == "success"
    result = outcome.xcom("run_tap")
    assert (result["status"], result["row_count"], result["pipeline_status"]) == ("success", 42, "success")
    assert outcome.xcom("run_tap", "publisher_token") == result["publisher_token"]
    assert outcome.xcom("run_tap", "row_count") == 42
    assert outcome.xcom("run_tap", "datris_tap_run_url").endswith("/taps/orders_api_to_postgres/run")
    token = result["pipeline_tokens"][0]
    assert outcome.xcom("run_tap", "datris_job_url").endswith(f"/pipeline/{token}/orders")
    assert len(datris.calls("POST /tap/run")) == 1
    assert outcome.log_count("[wrapper] calling fetch()") == 1
    for event in datris.events(result["publisher_token"]):
        assert outcome.log_count(f"{event['processName']} {event['state']}: {event['description']}") == 1


def test_deferred_script_failure_fails_with_the_server_error(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("deferred_script_failure")
    assert outcome.task_states["run_tap"] == "failed"
    assert "KeyError 'page'" in outcome.log


def test_deferred_pipeline_error_names_the_failed_job(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("deferred_pipeline_error")
    assert outcome.task_states["run_tap"] == "failed"
    assert "failed in PostgresLoader" in outcome.log


def test_deferred_pipeline_warning_and_nothing_loaded_succeed_with_warnings(datris, datris_dag_runner):
    assert datris_dag_runner.run("deferred_pipeline_warning").xcom("run_tap")["status"] == "warning"
    outcome = datris_dag_runner.run("deferred_no_records")
    assert outcome.xcom("run_tap")["status"] == "no_records"
    assert "No data was loaded" in outcome.log


def test_deferred_refuses_a_datris_scheduled_tap_before_deferring(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("deferred_datris_scheduled")
    assert outcome.task_states["run_tap"] == "failed"
    assert "is Datris-scheduled" in outcome.log
    assert datris.calls("POST /tap/run") == []


def test_deferred_cut_run_call_is_found_not_repeated(datris, datris_dag_runner):
    datris.proxy_timeout("POST /tap/run")
    outcome = datris_dag_runner.run("deferred_proxy_cut")
    assert outcome.state == "success"
    assert len(datris.calls("POST /tap/run")) == 1


def test_deferred_document_tap_follows_both_jobs(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("deferred_document")
    assert outcome.state == "success"
    assert len(outcome.xcom("run_tap")["jobs"]) == 2


@pytest.mark.parametrize("dag_id", ["deferred_timeout", "deferred_execution_timeout"])
def test_deferred_timeout_kills_the_job_then_fails(datris, datris_dag_runner, dag_id):
    outcome = datris_dag_runner.run(dag_id)

    assert outcome.task_states["run_tap"] == "failed"
    assert "did not finish in time" in outcome.log
    assert datris.kills == outcome.xcom("run_tap", "pipeline_tokens")


def test_deferred_retry_follows_the_previous_run(datris, datris_dag_runner, monkeypatch, retry_has_read_the_history):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATRIS_DEFAULT", f'{{"conn_type": "datris", "host": "{datris.url}", "extra": {{"retries": 0}}}}'
    )
    # One failed read before deferring, then two in a row in the trigger: more than max_poll_failures=1.
    # The load is still running when the retry looks (how it knows its run before 3.3): time stands still.
    datris.scheduler_tick_seconds = 0
    datris.hold_clock_until(retry_has_read_the_history(3))
    datris.fail("GET /pipeline/status", 503, times=3)

    outcome = datris_dag_runner.run("deferred_with_retries")

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 2
    assert len(datris.calls("POST /tap/run")) == 1
