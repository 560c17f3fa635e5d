"""A user's DAG: load each day's orders through the Datris tap ``my_orders``."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator

# Production waits 15 s between status polls; the project's tests set a shorter wait (conftest.py).
POLL_SECONDS = float(os.environ.get("MY_ORDERS_POLL_SECONDS", "15"))

with DAG("my_orders_daily", schedule="@daily", start_date=datetime(2026, 5, 1), catchup=False) as dag:
    DatrisRunTapOperator(
        task_id="load_orders",
        tap_name="my_orders",
        tap_params={"since": "{{ data_interval_start | ds }}", "until": "{{ data_interval_end | ds }}"},
        poll_interval=POLL_SECONDS,
    )
