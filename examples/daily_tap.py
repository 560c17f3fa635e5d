"""A daily Datris tap driven by Airflow, and a downstream task that reads its row count.

The tap ``customers_pg_to_snowflake`` must have no cron in Datris: Airflow owns its schedule.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from datris_provider.operators import DatrisRunTapOperator

with DAG("datris_daily_tap", schedule="@daily", start_date=datetime(2026, 5, 1), catchup=False) as dag:
    ingest_customers = DatrisRunTapOperator(
        task_id="ingest_customers",
        tap_name="customers_pg_to_snowflake",
        datris_conn_id="datris_default",
        wait_for_completion=True,
        poll_interval=15,
    )

    @task
    def report(row_count: int) -> str:
        return f"Datris loaded {row_count} customer rows"

    report(ingest_customers.output["row_count"])
