"""Data-aware scheduling: the report DAG runs when the tap's data has landed in the ``orders`` pipeline.

The asset event is emitted only when the pipeline succeeded (or warned): a failed run, or a run that
loaded nothing, does not start the report.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from datris_provider.assets import datris_pipeline_asset
from datris_provider.operators import DatrisRunTapOperator

ORDERS = datris_pipeline_asset("orders")

with DAG("datris_orders_ingest", schedule="@daily", start_date=datetime(2026, 5, 1), catchup=False):
    DatrisRunTapOperator(task_id="ingest_orders", tap_name="orders_api_to_postgres", outlets=[ORDERS])

with DAG("datris_orders_report", schedule=[ORDERS], start_date=datetime(2026, 5, 1), catchup=False):

    @task
    def build_report() -> str:
        return "orders report built"

    build_report()
