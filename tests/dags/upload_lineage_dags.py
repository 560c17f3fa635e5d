"""File uploads into a pipeline, and a tap whose lineage Datris knows."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator, DatrisUploadFileOperator

START = datetime(2026, 5, 1)
FILE = "{{ dag_run.conf['path'] }}"


def upload_dag(dag_id: str, pipeline: str, **kwargs: object) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"]) as dag:
        DatrisUploadFileOperator(
            task_id="upload", file_path=FILE, pipeline=pipeline, **{"poll_interval": 0.05, **kwargs}
        )
    return dag


upload_success = upload_dag("upload_success", "orders")
upload_deferred = upload_dag("upload_deferred", "orders", deferrable=True)
upload_pipeline_error = upload_dag("upload_pipeline_error", "bad_pipeline")
upload_unregistered = upload_dag("upload_unregistered", "nowhere", retries=1, retry_delay=timedelta(0))

with DAG("tap_with_lineage", schedule=None, start_date=START, catchup=False) as tap_with_lineage:
    DatrisRunTapOperator(task_id="run_tap", tap_name="orders_api_to_postgres", poll_interval=0.05)
