"""A date-windowed tap: each DAG run asks Datris for its own data interval, so backfills just work.

The tap script reads the window from the environment: ``os.environ["DATRIS_TAP_PARAM_since"]``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator

with DAG("datris_orders_backfill", schedule="@daily", start_date=datetime(2026, 5, 1), catchup=True) as dag:
    DatrisRunTapOperator(
        task_id="ingest_daily",
        tap_name="orders_api_to_postgres",
        datris_conn_id="datris_default",
        wait_for_completion=True,
        tap_params={"since": "{{ data_interval_start | ds }}", "until": "{{ data_interval_end | ds }}"},
    )
