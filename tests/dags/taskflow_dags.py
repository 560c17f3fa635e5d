"""DAGs for ``@task.datris_tap``, each run with dag.test() against the stand-in Datris.

The decorator is used as users write it (``@task.datris_tap`` through the provider manifest); one
DAG uses the directly imported factory. The tests check task states, XComs, the task log and the
parameters that reached Datris.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from datris_provider.decorators import datris_tap_task

START = datetime(2026, 5, 1)
FAST = {"poll_interval": 0.05}


def _dag(dag_id: str, schedule: str | None = None) -> DAG:
    return DAG(dag_id, schedule=schedule, start_date=START, catchup=False, tags=["datris-tests", "taskflow"])


# The plain case: params from the run's data interval, and a downstream task reading the result.
with _dag("taskflow_tap", schedule="@daily") as taskflow_tap:

    @task.datris_tap(tap_name="orders_api_to_postgres", datris_conn_id="datris_default", **FAST)
    def ingest_orders(ds=None, data_interval_end=None):
        """Load one day of orders."""
        return {"since": ds, "until": data_interval_end.strftime("%Y-%m-%d")}

    @task
    def report(row_count: int, result: dict) -> str:
        return f"{row_count} rows, {result['status']}, {result['row_count']} in the result"

    orders = ingest_orders()
    report(orders["row_count"], orders)


# Params built from an upstream task's output; a `-> dict` annotation must not unroll the result.
with _dag("taskflow_upstream_params") as taskflow_upstream_params:

    @task
    def pick_window() -> dict[str, str]:
        return {"since": "2026-04-01", "until": "2026-04-02"}

    @task.datris_tap(tap_name="orders_api_to_postgres", **FAST)
    def ingest_window(window: dict[str, str], batch: int) -> dict[str, Any]:
        return {**window, "batch": batch, "source": "upstream"}

    ingest_window(pick_window(), batch=7)


# The decorator's tap_params are defaults: the function's dict is merged over them, then rendered.
with _dag("taskflow_params_merged") as taskflow_params_merged:

    @task.datris_tap(
        tap_name="orders_api_to_postgres",
        tap_params={"region": "eu", "source": "decorator", "dag": "{{ dag.dag_id }}"},
        **FAST,
    )
    def ingest_merged():
        return {"source": "function", "day": "{{ ds }}"}

    ingest_merged()


# No parameters at all: the function returns None.
with _dag("taskflow_no_params") as taskflow_no_params:

    @task.datris_tap(tap_name="orders_api_to_postgres", **FAST)
    def ingest_everything():
        return None

    ingest_everything()


# A backfill over three windows with .partial(...).expand(...): three runs, three windows.
with _dag("taskflow_backfill_expand") as taskflow_backfill_expand:

    @task.datris_tap(tap_name="orders_api_to_postgres", **FAST)
    def backfill_day(since: str, days: int):
        until = date.fromisoformat(since) + timedelta(days=days)
        return {"since": since, "until": until.isoformat()}

    @task
    def total(row_counts: list[int]) -> int:
        return sum(row_counts)

    windows = backfill_day.partial(days=1).expand(since=["2026-04-01", "2026-04-02", "2026-04-03"])
    total(windows["row_count"])


# The same with .expand_kwargs(...) and the directly imported (typed) factory.
with _dag("taskflow_backfill_expand_kwargs") as taskflow_backfill_expand_kwargs:

    @datris_tap_task(tap_name="orders_api_to_postgres", **FAST)
    def backfill_window(since: str, until: str):
        return {"since": since, "until": until}

    backfill_window.expand_kwargs(
        [
            {"since": "2026-03-01", "until": "2026-03-08"},
            {"since": "2026-03-08", "until": "2026-03-15"},
            {"since": "2026-03-15", "until": "2026-03-22"},
        ]
    )


# The function returns something that is not a dict of params.
with _dag("taskflow_returns_list") as taskflow_returns_list:

    @task.datris_tap(tap_name="orders_api_to_postgres", retries=3, retry_delay=timedelta(0), **FAST)
    def params_as_list():
        return ["2026-04-01", "2026-04-02"]

    params_as_list()

with _dag("taskflow_returns_str") as taskflow_returns_str:

    @task.datris_tap(tap_name="orders_api_to_postgres", retries=3, retry_delay=timedelta(0), **FAST)
    def params_as_str():
        return "since=2026-04-01"

    params_as_str()


# A dict the operator's own validation refuses: it fails before any call to Datris.
with _dag("taskflow_bad_param_key") as taskflow_bad_param_key:

    @task.datris_tap(tap_name="orders_api_to_postgres", **FAST)
    def params_with_bad_key():
        return {"bad-key": 1}

    params_with_bad_key()


# The one-scheduler rule and a pipeline error, through the decorator.
with _dag("taskflow_datris_scheduled") as taskflow_datris_scheduled:

    @task.datris_tap(tap_name="nightly_cron_tap", **FAST)
    def run_cron_tap():
        return {"since": "2026-04-01"}

    run_cron_tap()

with _dag("taskflow_pipeline_error") as taskflow_pipeline_error:

    @task.datris_tap(tap_name="bad_load_tap", **FAST)
    def run_bad_load():
        return {"since": "2026-04-01"}

    run_bad_load()


# One decorated function reused under two task ids (and two taps) with .override().
with _dag("taskflow_override") as taskflow_override:

    @task.datris_tap(tap_name="orders_api_to_postgres", **FAST)
    def ingest_table(table: str):
        return {"table": table}

    orders_run = ingest_table.override(task_id="ingest_orders")("orders")
    customers_run = ingest_table.override(task_id="ingest_customers", tap_name="customers_pg_to_snowflake")("customers")
    orders_run >> customers_run
