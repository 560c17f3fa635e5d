"""DAGs for a tap that is busy with a run the task did not start (README: "When the tap is busy").

Each DAG has one task ``run_tap``; the tests stage "another client" on the stand-in (a run started on
the task's first read of the tap, or just before its run call) and check whose run the task reports.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from datris_provider.operators import DatrisRunTapOperator

START = datetime(2026, 5, 1)
TAP = "shared_orders_tap"
WINDOW = {"since": "{{ ds }}"}


def busy_dag(dag_id: str, **operator_kwargs: object) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests"]) as dag:
        DatrisRunTapOperator(task_id="run_tap", tap_name=TAP, poll_interval=0.05, **operator_kwargs)
    return dag


busy_window = busy_dag("busy_window", tap_params=WINDOW)
busy_window_deferred = busy_dag("busy_window_deferred", tap_params=WINDOW, deferrable=True)
busy_no_params = busy_dag("busy_no_params")
busy_no_params_deferred = busy_dag("busy_no_params_deferred", deferrable=True)
busy_window_fail = busy_dag("busy_window_fail", tap_params=WINDOW, if_busy="fail")
busy_window_join = busy_dag("busy_window_join", tap_params=WINDOW, if_busy="join")
busy_window_short_wait = busy_dag("busy_window_short_wait", tap_params=WINDOW, busy_timeout=0.3)

with DAG("busy_window_taskflow", schedule=None, start_date=START, catchup=False, tags=["datris-tests"]):

    @task.datris_tap(tap_name=TAP, poll_interval=0.05)
    def run_tap(ds=None):
        return {"since": ds}

    run_tap()
