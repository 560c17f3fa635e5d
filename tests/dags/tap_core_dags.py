"""DAGs for the operator's behaviour, each run with dag.test() against the stand-in Datris.

The tests set the stand-in up (which taps exist, which faults happen), run one of these DAGs and
check what a user would see: task states, XComs, the task log, and what reached Datris.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from datris_provider.operators import DatrisRunTapOperator

START = datetime(2026, 5, 1)
FAST = {"poll_interval": 0.05}


def tap_dag(dag_id: str, tap_name: str, **operator_kwargs: object) -> DAG:
    """One DAG holding one tap task called ``run_tap``."""
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"]) as dag:
        DatrisRunTapOperator(task_id="run_tap", tap_name=tap_name, **{**FAST, **operator_kwargs})
    return dag


# The run, end to end, and a downstream task reading its XComs.
with DAG("tap_success", schedule="@daily", start_date=START, catchup=False) as tap_success:
    ingest = DatrisRunTapOperator(
        task_id="run_tap",
        tap_name="orders_api_to_postgres",
        tap_params={"since": "{{ data_interval_start | ds }}", "until": "{{ data_interval_end | ds }}"},
        **FAST,
    )

    @task
    def report(row_count: int, result: dict) -> str:
        return f"{row_count} rows, {result['status']}"

    report(ingest.output["row_count"], ingest.output)

tap_datris_scheduled = tap_dag("tap_datris_scheduled", "nightly_cron_tap")
tap_script_failure = tap_dag("tap_script_failure", "broken_tap")
tap_no_records = tap_dag("tap_no_records", "empty_tap")
tap_no_target_pipeline = tap_dag("tap_no_target_pipeline", "orphan_tap")
tap_pipeline_error = tap_dag("tap_pipeline_error", "bad_load_tap")
tap_pipeline_warning = tap_dag("tap_pipeline_warning", "dq_warning_tap")
tap_document = tap_dag("tap_document", "docs_tap")
tap_proxy_cut = tap_dag("tap_proxy_cut", "slow_tap")
tap_no_wait = tap_dag("tap_no_wait", "orders_api_to_postgres", wait_for_completion=False)
tap_wait_timeout = tap_dag("tap_wait_timeout", "endless_tap", timeout=0.5)
tap_no_job = tap_dag("tap_no_job", "orders_api_to_postgres", no_job_timeout=0.3)
tap_transient = tap_dag("tap_transient", "orders_api_to_postgres")
tap_bad_param_key = tap_dag("tap_bad_param_key", "orders_api_to_postgres", tap_params={"bad-key": "x"})
tap_bad_param_value = tap_dag("tap_bad_param_value", "orders_api_to_postgres", tap_params={"when": START})
tap_unknown = tap_dag("tap_unknown", "no_such_tap")
tap_with_retries = tap_dag(
    "tap_with_retries", "orders_api_to_postgres", retries=2, retry_delay=timedelta(0), max_poll_failures=1
)
tap_nested_params = tap_dag(
    "tap_nested_params",
    "orders_api_to_postgres",
    tap_params={"window": {"since": "{{ ds }}", "days": 1}, "ids": [1, 2], "full": True},
)

# Two runs of one tap back to back: the second lands inside Datris's 5 s debounce window.
with DAG("tap_debounced", schedule=None, start_date=START, catchup=False) as tap_debounced:
    first = DatrisRunTapOperator(task_id="first", tap_name="orders_api_to_postgres", **FAST)
    second = DatrisRunTapOperator(task_id="second", tap_name="orders_api_to_postgres", **FAST)
    first >> second

# Airflow's execution timeout fires while the pipeline is still loading: the job must be killed.
tap_execution_timeout = tap_dag(
    "tap_execution_timeout", "endless_tap", execution_timeout=timedelta(seconds=2), poll_interval=0.1
)

# Retries are on, to show that an authorisation problem fails at once instead of retrying.
tap_auth = tap_dag("tap_auth", "orders_api_to_postgres", retries=1, retry_delay=timedelta(0))

# A disabled tap keeps its cron, but Datris does not fire it: Airflow may drive it.
tap_disabled_cron = tap_dag("tap_disabled_cron", "disabled_cron_tap")
