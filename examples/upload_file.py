"""Push a file produced in Airflow into a Datris pipeline and wait for it to load."""

from __future__ import annotations

import csv
from datetime import datetime

from airflow.sdk import DAG, task

from datris_provider.operators import DatrisUploadFileOperator

with DAG("datris_upload_file", schedule=None, start_date=datetime(2026, 5, 1), catchup=False) as dag:

    @task
    def export_orders() -> str:
        path = "/tmp/orders_export.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "amount"])
            writer.writerows([[1, 9.5], [2, 12.0]])
        return path

    DatrisUploadFileOperator(
        task_id="load_orders",
        file_path=export_orders(),
        pipeline="orders",
        poll_interval=15,
    )
