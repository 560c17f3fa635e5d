"""DAGs for the fault-injection suite and the bad-input table, run with dag.test() against the stand-in.

The same tap task runs in the worker (``*_sync``) and deferred to the triggerer (``*_deferred``), with
Airflow task retries on, a short poll interval and a small ``max_poll_failures``, so that a fault
burst can use up an attempt and the retry has to attach to the run already on Datris.

The taps these DAGs name are not among the standard ones: the tests add them to the stand-in
(see :func:`datris_provider.testing.faults.story_tap`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from datris_provider.operators import DatrisRunTapOperator

START = datetime(2026, 5, 1)
FAULT_TAP = "fault_tap"
ENDLESS_TAP = "fault_endless_tap"
BIG_LOGS_TAP = "big_logs_tap"
# Kept in step with the soak's fault budget (datris_provider.testing.faults.FaultBudget).
MAX_POLL_FAILURES = 2
TASK_RETRIES = 2


def fault_dag(dag_id: str, tap_name: str, *, deferrable: bool, **operator_kwargs: object) -> DAG:
    """One DAG holding one tap task called ``run_tap``, retried twice at once when it fails."""
    kwargs: dict[str, object] = {
        "poll_interval": 0.05,
        "retries": TASK_RETRIES,
        "retry_delay": timedelta(0),
        "max_poll_failures": MAX_POLL_FAILURES,
        **operator_kwargs,
    }
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["datris-tests", "faults"]) as dag:
        DatrisRunTapOperator(task_id="run_tap", tap_name=tap_name, deferrable=deferrable, **kwargs)
    return dag


# The fault suite and the soak: one tap, retried, in both modes.
fault_sync = fault_dag("fault_sync", FAULT_TAP, deferrable=False)
fault_deferred = fault_dag("fault_deferred", FAULT_TAP, deferrable=True)

# Airflow's execution timeout fires while the pipeline still loads, so the provider calls job/kill.
# No task retries here: a retry after a kill would rightly start a new run.
fault_kill_sync = fault_dag(
    "fault_kill_sync",
    ENDLESS_TAP,
    deferrable=False,
    retries=0,
    poll_interval=0.1,
    execution_timeout=timedelta(seconds=2),
)
fault_kill_deferred = fault_dag(
    "fault_kill_deferred", ENDLESS_TAP, deferrable=True, retries=0, execution_timeout=timedelta(seconds=1)
)
# The operator's own wait bound: the resumed task has the whole kill budget (Airflow applies the full
# execution_timeout again to each resumption, so a 1 s one would cut a slow kill call short).
fault_wait_timeout_deferred = fault_dag(
    "fault_wait_timeout_deferred", ENDLESS_TAP, deferrable=True, retries=0, timeout=0.5
)

# The bad-input table (docs/bad-input.md): one retry allowed, to show which errors are not retried.
bad_input_sync = fault_dag("bad_input_sync", FAULT_TAP, deferrable=False, retries=1)
bad_input_deferred = fault_dag("bad_input_deferred", FAULT_TAP, deferrable=True, retries=1)
bad_input_param_value = fault_dag(
    "bad_input_param_value",
    FAULT_TAP,
    deferrable=False,
    retries=1,
    tap_params={"since": "{{ ds }}", "ids": {1, 2, 3}},
)
bad_input_param_key = fault_dag(
    "bad_input_param_key", FAULT_TAP, deferrable=False, retries=1, tap_params={"since-date": "{{ ds }}"}
)
bad_input_big_logs_sync = fault_dag("bad_input_big_logs_sync", BIG_LOGS_TAP, deferrable=False, retries=0)
bad_input_big_logs_deferred = fault_dag("bad_input_big_logs_deferred", BIG_LOGS_TAP, deferrable=True, retries=0)
