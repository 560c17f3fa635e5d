"""A daily Datris tap written as a TaskFlow function with ``@task.datris_tap``.

The function runs when the task runs and returns the tap's parameters: here, the run's data
interval, so each DAG run (and each backfilled day) loads its own window. The tap script reads them
from the environment: ``os.environ["DATRIS_TAP_PARAM_since"]``.

The tap ``orders_api_to_postgres`` must have no cron in Datris: Airflow owns its schedule.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG("datris_taskflow_tap", schedule="@daily", start_date=datetime(2026, 5, 1), catchup=False) as dag:

    @task.datris_tap(tap_name="orders_api_to_postgres", datris_conn_id="datris_default", poll_interval=15)
    def ingest_orders(data_interval_start=None, data_interval_end=None):
        """Load the orders of this run's data interval."""
        return {
            "since": data_interval_start.strftime("%Y-%m-%d"),
            "until": data_interval_end.strftime("%Y-%m-%d"),
        }

    @task
    def report(row_count: int) -> str:
        return f"Datris loaded {row_count} order rows"

    result = ingest_orders()  # an XComArg holding the run result dict
    report(result["row_count"])
