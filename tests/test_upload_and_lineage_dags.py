"""DatrisUploadFileOperator and OpenLineage facets, through real DAGs against the stand-in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.dag


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,amount\n1,9.5\n2,12.0\n")
    return path


@pytest.mark.parametrize("dag_id", ["upload_success", "upload_deferred"])
def test_upload_streams_the_file_and_waits_for_its_job(datris, datris_dag_runner, csv_file, dag_id):
    outcome = datris_dag_runner.run(dag_id, run_conf={"path": str(csv_file)})

    assert outcome.state == "success"
    result = outcome.xcom("upload")
    (upload,) = datris.uploads
    assert (upload.pipeline, upload.filename, upload.size) == ("orders", "orders.csv", csv_file.stat().st_size)
    assert upload.publishertoken == result["publisher_token"] == outcome.xcom("upload", "publisher_token")
    assert result["status"] == "success" and result["pipeline_status"] == "success"
    assert result["bytes"] == csv_file.stat().st_size
    for event in datris.events(result["publisher_token"]):
        assert outcome.log_count(f"{event['processName']} {event['state']}: {event['description']}") == 1


def test_upload_pipeline_error_fails_with_the_job_error(datris, datris_dag_runner, csv_file):
    datris.add_pipeline("bad_pipeline", outcome="error")
    outcome = datris_dag_runner.run("upload_pipeline_error", run_conf={"path": str(csv_file)})

    assert outcome.task_states["upload"] == "failed"
    assert "failed in PostgresLoader" in outcome.log


def test_unregistered_pipeline_fails_once_saying_so(datris, datris_dag_runner, csv_file):
    outcome = datris_dag_runner.run("upload_unregistered", run_conf={"path": str(csv_file)})

    assert outcome.task_states["upload"] == "failed"
    assert outcome.try_numbers["upload"] == 1
    assert "is not registered" in outcome.log
    assert "Register the pipeline in Datris" in outcome.log


def test_missing_file_fails_before_any_call(datris, datris_dag_runner, tmp_path):
    outcome = datris_dag_runner.run("upload_success", run_conf={"path": str(tmp_path / "nope.csv")})

    assert outcome.task_states["upload"] == "failed"
    assert "does not exist" in outcome.log
    assert datris.requests == []


def test_upload_example(datris, datris_dag_runner, monkeypatch):
    for task in datris_dag_runner.get_dag("datris_upload_file").tasks:
        if hasattr(task, "poll_interval"):
            monkeypatch.setattr(task, "poll_interval", 0.05)
    outcome = datris_dag_runner.run("datris_upload_file")

    assert outcome.state == "success"
    assert outcome.xcom("load_orders")["pipeline"] == "orders"


@pytest.fixture
def openlineage_file():
    pytest.importorskip("airflow.providers.openlineage", reason="needs the openlineage extra")
    # tests/conftest.py points OpenLineage's file transport here before Airflow starts.
    return Path(json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"])


def _complete_event(path, job_suffix: str) -> dict:
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    matching = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"].endswith(job_suffix)]
    assert matching, f"no OpenLineage COMPLETE event for {job_suffix} in {path}"
    return matching[-1]


def test_openlineage_reports_the_taps_datasets_and_run(datris, datris_dag_runner, openlineage_file):
    datris.tap("orders_api_to_postgres").source = "postgres:crm.public.orders"

    outcome = datris_dag_runner.run("tap_with_lineage")

    assert outcome.state == "success"
    event = _complete_event(openlineage_file, "tap_with_lineage.run_tap")
    assert {(d["namespace"], d["name"]) for d in event["inputs"]} == {("postgres", "crm.public.orders")}
    assert {(d["namespace"], d["name"]) for d in event["outputs"]} == {("postgres", "datris.public.orders")}
    facet = event["run"]["facets"]["datris"]
    assert facet["publisher"] == outcome.xcom("run_tap", "publisher_token")
    assert facet["pipelineJobs"] == outcome.xcom("run_tap", "pipeline_tokens")
    assert facet["recordCount"] == 42


def test_missing_lineage_endpoint_changes_nothing(datris, datris_dag_runner, openlineage_file):
    datris.has_lineage = False

    outcome = datris_dag_runner.run("tap_with_lineage")

    assert outcome.state == "success"
    event = _complete_event(openlineage_file, "tap_with_lineage.run_tap")
    assert event["inputs"] == [] and event["outputs"] == []
