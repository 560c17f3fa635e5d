"""A tap waited on by Airflow's triggerer: no worker slot is held while Datris works."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator

with DAG("datris_deferrable_tap", schedule="@hourly", start_date=datetime(2026, 5, 1), catchup=False) as dag:
    DatrisRunTapOperator(
        task_id="ingest_orders",
        tap_name="orders_api_to_postgres",
        deferrable=True,
        poll_interval=30,
        timeout=3 * 3600,  # the whole wait; the jobs are killed if it runs out
    )
