"""DatrisPipelineSensor through real DAGs: poke and deferrable modes, both token kinds."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.dag


@pytest.mark.parametrize("dag_id", ["sensor_poke", "sensor_deferrable"])
def test_sensor_waits_for_the_pipeline_and_streams_each_event_once(datris, datris_dag_runner, dag_id):
    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    token = outcome.xcom("start_tap", "publisher_token")
    result = outcome.xcom("wait_for_pipeline")
    assert result["token"] == token
    assert result["pipeline_status"] == "success"
    for event in datris.events(token):
        assert outcome.log_count(f"{event['processName']} {event['state']}: {event['description']}") == 1


def test_sensor_follows_one_pipeline_token(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("sensor_pipeline_token")

    assert outcome.state == "success"
    first_job = outcome.xcom("start_tap", "pipeline_tokens")[0]
    assert [job["pipeline_token"] for job in outcome.xcom("wait_for_pipeline")["jobs"]] == [first_job]


@pytest.mark.parametrize("dag_id", ["sensor_pipeline_error", "sensor_pipeline_error_deferred"])
def test_sensor_fails_on_a_pipeline_error_with_the_job_error(datris, datris_dag_runner, dag_id):
    outcome = datris_dag_runner.run(dag_id)

    assert outcome.task_states["wait_for_pipeline"] == "failed"
    assert "failed in PostgresLoader" in outcome.log


def test_sensor_on_an_unknown_token_fails_clearly(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("sensor_unknown_token")

    assert outcome.task_states["wait_for_pipeline"] == "failed"
    assert "showed no pipeline job" in outcome.log


def test_sensor_needs_exactly_one_token():
    from datris_provider.sensors import DatrisPipelineSensor

    with pytest.raises(ValueError, match="exactly one"):
        DatrisPipelineSensor(task_id="s")
    with pytest.raises(ValueError, match="exactly one"):
        DatrisPipelineSensor(task_id="s", publisher_token="a", pipeline_token="b")


def test_sensor_timeout_fails_without_killing_jobs_it_does_not_own(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("sensor_deferred_timeout")

    assert outcome.task_states["wait_for_pipeline"] == "failed"
    assert "did not finish in time" in outcome.log
    assert datris.calls("POST /job/kill") == []
