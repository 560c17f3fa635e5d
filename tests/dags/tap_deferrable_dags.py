"""The operator in deferrable mode: dag.test() runs each trigger inline, then resumes the task."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator

START = datetime(2026, 5, 1)


def deferred_tap_dag(dag_id: str, tap_name: str, **operator_kwargs: object) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"]) as dag:
        DatrisRunTapOperator(
            task_id="run_tap", tap_name=tap_name, deferrable=True, **{"poll_interval": 0.05, **operator_kwargs}
        )
    return dag


deferred_success = deferred_tap_dag("deferred_success", "orders_api_to_postgres", tap_params={"since": "{{ ds }}"})
deferred_script_failure = deferred_tap_dag("deferred_script_failure", "broken_tap")
deferred_pipeline_error = deferred_tap_dag("deferred_pipeline_error", "bad_load_tap")
deferred_pipeline_warning = deferred_tap_dag("deferred_pipeline_warning", "dq_warning_tap")
deferred_no_records = deferred_tap_dag("deferred_no_records", "empty_tap")
deferred_datris_scheduled = deferred_tap_dag("deferred_datris_scheduled", "nightly_cron_tap")
deferred_proxy_cut = deferred_tap_dag("deferred_proxy_cut", "slow_tap")
deferred_document = deferred_tap_dag("deferred_document", "docs_tap")
deferred_timeout = deferred_tap_dag("deferred_timeout", "endless_tap", timeout=0.5)
deferred_execution_timeout = deferred_tap_dag(
    "deferred_execution_timeout", "endless_tap", execution_timeout=timedelta(seconds=1)
)
deferred_with_retries = deferred_tap_dag(
    "deferred_with_retries", "orders_api_to_postgres", retries=2, retry_delay=timedelta(0), max_poll_failures=1
)
