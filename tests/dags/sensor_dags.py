"""DatrisPipelineSensor waiting on tokens produced by another task, in each of its modes."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator
from datris_provider.sensors import DatrisPipelineSensor

START = datetime(2026, 5, 1)
PUBLISHER_TOKEN = "{{ ti.xcom_pull(task_ids='start_tap', key='publisher_token') }}"
FIRST_JOB = "{{ ti.xcom_pull(task_ids='start_tap', key='pipeline_tokens')[0] }}"


def sensor_dag(dag_id: str, tap_name: str, **sensor_kwargs: object) -> DAG:
    """A tap started without waiting, then a sensor that waits for its pipeline."""
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"]) as dag:
        start = DatrisRunTapOperator(task_id="start_tap", tap_name=tap_name, wait_for_completion=False)
        wait = DatrisPipelineSensor(
            task_id="wait_for_pipeline", **{"publisher_token": PUBLISHER_TOKEN, "poke_interval": 0.05, **sensor_kwargs}
        )
        start >> wait
    return dag


sensor_poke = sensor_dag("sensor_poke", "orders_api_to_postgres")
sensor_deferrable = sensor_dag("sensor_deferrable", "orders_api_to_postgres", deferrable=True)
sensor_pipeline_token = sensor_dag(
    "sensor_pipeline_token", "docs_tap", publisher_token=None, pipeline_token=FIRST_JOB, deferrable=True
)
sensor_pipeline_error = sensor_dag("sensor_pipeline_error", "bad_load_tap")
sensor_pipeline_error_deferred = sensor_dag("sensor_pipeline_error_deferred", "bad_load_tap", deferrable=True)

with DAG("sensor_unknown_token", schedule=None, start_date=START, catchup=False) as sensor_unknown_token:
    DatrisPipelineSensor(
        task_id="wait_for_pipeline",
        publisher_token="00000000-0000-4000-8000-000000000000",
        poke_interval=0.05,
        no_job_timeout=0.3,
    )
sensor_deferred_timeout = sensor_dag("sensor_deferred_timeout", "endless_tap", deferrable=True, timeout=0.5)
