"""DAGs for the task lifecycle shared by the tap run, the upload and the sensor, in every mode."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator, DatrisUploadFileOperator
from datris_provider.sensors import DatrisPipelineSensor

START = datetime(2026, 5, 1)
FILE = "{{ dag_run.conf['path'] }}"
PUBLISHER_TOKEN = "{{ ti.xcom_pull(task_ids='start_tap', key='publisher_token') }}"


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"])


with _dag("deferred_retry_follows_ended_run") as deferred_retry_follows_ended_run:
    DatrisRunTapOperator(
        task_id="run_tap",
        tap_name="orders_api_to_postgres",
        deferrable=True,
        poll_interval=0.05,
        max_poll_failures=1,
        retries=1,
        retry_delay=timedelta(0),
    )

with _dag("upload_cut_by_proxy") as upload_cut_by_proxy:
    DatrisUploadFileOperator(task_id="upload", file_path=FILE, pipeline="orders", poll_interval=0.05, retries=1)

for mode, deferrable in (("sync", False), ("deferred", True)):
    with _dag(f"upload_retried_after_poll_failures_{mode}") as retried_upload:
        DatrisUploadFileOperator(
            task_id="upload",
            file_path=FILE,
            pipeline="{{ dag_run.conf.get('pipeline', 'orders') }}",
            poll_interval=0.05,
            max_poll_failures=1,
            deferrable=deferrable,
            retries=2,
            retry_delay=timedelta(0),
        )
    globals()[retried_upload.dag_id] = retried_upload

with _dag("upload_deferred_execution_timeout") as upload_deferred_execution_timeout:
    DatrisUploadFileOperator(
        task_id="upload",
        file_path=FILE,
        pipeline="endless_pipeline",
        poll_interval=0.05,
        timeout=None,
        deferrable=True,
        execution_timeout=timedelta(seconds=1),
    )

with _dag("sensor_rescheduled") as sensor_rescheduled:
    start = DatrisRunTapOperator(task_id="start_tap", tap_name="slow_pipeline_tap", wait_for_completion=False)
    wait = DatrisPipelineSensor(
        task_id="wait_for_pipeline",
        publisher_token=PUBLISHER_TOKEN,
        mode="reschedule",
        poke_interval=0.2,
        no_job_timeout=timedelta(seconds=60),
    )
    start >> wait
