"""The shared task lifecycle, through real DAGs: every line once, every result returned, nothing
uploaded twice, and the same deadline in every mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from datris_provider.testing import StandInTap

pytestmark = pytest.mark.dag


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,amount\n1,9.5\n2,12.0\n")
    return path


def _needs_task_state():
    try:
        from airflow.sdk.execution_time.context import NEVER_EXPIRE  # noqa: F401  # Airflow 3.3+
    except ImportError:
        pytest.skip("Airflow keeps task state between tries from 3.3")


def test_a_deferrable_run_prints_each_line_once_across_both_deferrals(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("deferred_success")

    assert outcome.state == "success"
    assert outcome.log_count("Running Datris tap 'orders_api_to_postgres'") == 1
    assert outcome.log_count("[wrapper] calling fetch()") == 1
    token = outcome.xcom("run_tap", "publisher_token")
    for event in datris.events(token):
        assert outcome.log_count(f"{event['processName']} {event['state']}: {event['description']}") == 1


def test_a_deferrable_retry_that_finds_its_run_ended_returns_the_run(datris, datris_dag_runner, monkeypatch):
    _needs_task_state()
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATRIS_DEFAULT", f'{{"conn_type": "datris", "host": "{datris.url}", "extra": {{"retries": 0}}}}'
    )
    # The worker's own check before deferring, then both polls of the trigger fail: try 1 errors out
    # while its run goes on and ends.
    datris.fail("GET /pipeline/status", 503, times=3)

    outcome = datris_dag_runner.run("deferred_retry_follows_ended_run")

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 2
    assert len(datris.calls("POST /tap/run")) == 1
    result = outcome.xcom("run_tap")
    assert result["status"] == "success"
    assert result["row_count"] == 42
    assert result["publisher_token"] == outcome.xcom("run_tap", "publisher_token")


def test_an_upload_cut_by_a_proxy_is_followed_not_sent_again(datris, datris_dag_runner, csv_file):
    datris.proxy_timeout("POST /pipeline/upload")

    outcome = datris_dag_runner.run("upload_cut_by_proxy", run_conf={"path": str(csv_file)})

    assert outcome.state == "success"
    assert len(datris.uploads) == 1
    assert outcome.xcom("upload")["publisher_token"] == datris.uploads[0].publishertoken
    assert outcome.xcom("upload")["pipeline_status"] == "success"
    assert "looking for its jobs before deciding anything" in outcome.log


# Deferred, the worker's one read before deferring comes first; the trigger then counts its own two.
@pytest.mark.parametrize(("mode", "failed_reads"), [("sync", 2), ("deferred", 3)])
def test_a_retry_after_the_upload_reached_datris_follows_it_on_every_airflow(
    datris, datris_dag_runner, monkeypatch, csv_file, mode, failed_reads
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATRIS_DEFAULT", f'{{"conn_type": "datris", "host": "{datris.url}", "extra": {{"retries": 0}}}}'
    )
    # The file reaches Datris, then try 1 loses Datris for two polls in a row (max_poll_failures=1)
    # and fails; before Airflow 3.3 nothing but the token the retry derives ties it to that upload.
    datris.fail("GET /pipeline/status", 503, times=failed_reads)

    outcome = datris_dag_runner.run(f"upload_retried_after_poll_failures_{mode}", run_conf={"path": str(csv_file)})

    assert outcome.state == "success"
    assert outcome.try_numbers["upload"] == 2
    assert len(datris.uploads) == 1
    assert outcome.xcom("upload")["publisher_token"] == datris.uploads[0].publishertoken
    assert outcome.xcom("upload")["pipeline_status"] == "success"
    assert "an earlier try may have sent this file" in outcome.log


def test_a_retry_after_the_upload_failed_on_datris_sends_it_again_under_a_new_token(
    datris, datris_dag_runner, csv_file
):
    datris.add_pipeline("bad_pipeline", outcome="error")

    outcome = datris_dag_runner.run(
        "upload_retried_after_poll_failures_sync", run_conf={"path": str(csv_file), "pipeline": "bad_pipeline"}
    )

    assert outcome.task_states["upload"] == "failed"
    assert outcome.try_numbers["upload"] == 3
    tokens = [upload.publishertoken for upload in datris.uploads]
    assert len(tokens) == 3
    assert len(set(tokens)) == 3
    assert outcome.log_count("loaded nothing; this retry sends the file again") == 2


def test_a_deferred_upload_honours_execution_timeout_and_kills_its_job(datris, datris_dag_runner, csv_file):
    datris.add_pipeline("endless_pipeline", job_seconds=None)

    outcome = datris_dag_runner.run("upload_deferred_execution_timeout", run_conf={"path": str(csv_file)})

    assert outcome.task_states["upload"] == "failed"
    assert "did not finish in time" in outcome.log
    assert len(datris.calls("POST /job/kill")) == 1


def test_a_rescheduled_sensor_prints_each_event_once_over_all_its_pokes(datris, datris_dag_runner):
    _needs_task_state()
    datris.add_tap(StandInTap(name="slow_pipeline_tap", target_pipeline="orders", job_seconds=30.0))

    outcome = datris_dag_runner.run("sensor_rescheduled")

    assert outcome.state == "success"
    token = outcome.xcom("start_tap", "publisher_token")
    events = datris.events(token)
    assert len(events) >= 5
    for event in events:
        assert outcome.log_count(f"{event['processName']} {event['state']}: {event['description']}") == 1


def test_the_upload_reports_its_datasets_to_openlineage(datris, datris_dag_runner, csv_file):
    pytest.importorskip("airflow.providers.openlineage", reason="needs the openlineage extra")
    path = Path(json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"])

    outcome = datris_dag_runner.run("upload_success", run_conf={"path": str(csv_file)})

    assert outcome.state == "success"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    (event, *_) = [
        e
        for e in reversed(events)
        if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith("upload_success.upload")
    ]
    assert {(d["namespace"], d["name"]) for d in event["outputs"]} == {("postgres", "datris.public.orders")}
    assert event["run"]["facets"]["datris"]["publisher"] == outcome.xcom("upload", "publisher_token")
