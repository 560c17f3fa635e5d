"""Wait for a Datris run started elsewhere: here a tap started without waiting, then a sensor.

The sensor takes any publisher token (every job of a run) or pipeline token (one job), for instance
one handed over by another DAG.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator
from datris_provider.sensors import DatrisPipelineSensor

with DAG("datris_pipeline_sensor", schedule=None, start_date=datetime(2026, 5, 1), catchup=False) as dag:
    start = DatrisRunTapOperator(task_id="start_tap", tap_name="orders_api_to_postgres", wait_for_completion=False)
    wait = DatrisPipelineSensor(
        task_id="wait_for_orders",
        publisher_token="{{ ti.xcom_pull(task_ids='start_tap', key='publisher_token') }}",
        poke_interval=30,
        mode="reschedule",
    )
    start >> wait
