"""Data-aware scheduling: a tap task feeds the ``orders`` pipeline asset; another DAG waits on it."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from datris_provider.assets import datris_pipeline_asset
from datris_provider.operators import DatrisRunTapOperator

START = datetime(2026, 5, 1)
ORDERS = datris_pipeline_asset("orders")


def producer(dag_id: str, tap_name: str) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"]) as dag:
        DatrisRunTapOperator(task_id="run_tap", tap_name=tap_name, outlets=[ORDERS], poll_interval=0.05)
    return dag


orders_producer = producer("orders_producer", "orders_api_to_postgres")
orders_producer_empty = producer("orders_producer_empty", "empty_tap")
orders_producer_failing = producer("orders_producer_failing", "bad_load_tap")

with DAG("orders_consumer", schedule=[ORDERS], start_date=START, catchup=False) as orders_consumer:

    @task
    def use_orders() -> str:
        return "orders landed"

    use_orders()
