"""The real-Airflow harness itself, on PostgreSQL: tasks really run side by side, a backfill runs each
window, and a killed task process is retried; logs of every try and XComs are read back.

Run: ``.venv/bin/pytest tests/e2e/test_airflow_stack.py -q -m e2e -p no:cacheprovider -s``.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from airflow_stack import AirflowStack
    from postgres import PostgresCluster

pytestmark = pytest.mark.e2e

PARALLEL_DAG = "e2e_harness_parallel"
WINDOWS_DAG = "e2e_harness_windows"
KILLED_DAG = "e2e_harness_killed_task"

DAG_FILE = textwrap.dedent(
    f'''\
    """DAGs of the harness smoke test (written by tests/e2e/test_airflow_stack.py)."""
    import os
    import time
    from datetime import datetime, timedelta
    from pathlib import Path

    from airflow.sdk import DAG, task

    MEETING_POINT = Path(os.environ["E2E_MEETING_POINT"])


    @task
    def rendezvous(me, other, run_id=None):
        """Both tasks wait here for each other: only tasks that run at the same time both get past it."""
        started = time.time()
        folder = MEETING_POINT / run_id.replace(":", "_").replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / me).touch()
        deadline = time.monotonic() + 60
        while not (folder / other).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{{other}} did not run while {{me}} ran")
            time.sleep(0.1)
        print(f"{{me}} met {{other}}")
        return {{"started": started, "ended": time.time()}}


    @task
    def window(ds=None):
        print(f"loading the window of {{ds}}")
        return ds


    @task(retries=1, retry_delay=timedelta(seconds=1), execution_timeout=timedelta(minutes=3))
    def outlive_a_kill(ti=None):
        print(f"try {{ti.try_number}} started", flush=True)
        while ti.try_number == 1:  # the test kills this try's process
            time.sleep(0.2)
        return ti.try_number


    with DAG("{PARALLEL_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        rendezvous.override(task_id="left")("left", "right")
        rendezvous.override(task_id="right")("right", "left")

    with DAG("{WINDOWS_DAG}", schedule="@daily", start_date=datetime(2025, 12, 1), catchup=False):
        window()

    with DAG("{KILLED_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        outlive_a_kill()
    '''
)


@pytest.fixture(scope="module")
def stack(
    airflow_stacks: Callable[..., AirflowStack],
    postgres_cluster: PostgresCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowStack]:
    meeting_point: Path = tmp_path_factory.mktemp("meeting-point")
    stack = airflow_stacks(
        database_url=postgres_cluster.new_database(), parallelism=4, env={"E2E_MEETING_POINT": str(meeting_point)}
    )
    stack.write_dag("harness_dags.py", DAG_FILE)
    stack.start(wait_for_dags=[PARALLEL_DAG, WINDOWS_DAG, KILLED_DAG])
    yield stack


def test_two_tasks_of_one_run_overlap_in_time(stack: AirflowStack) -> None:
    with stack.dump_on_failure():
        run_id = stack.trigger(PARALLEL_DAG)
        assert stack.wait_for_dag_run(PARALLEL_DAG, run_id) == "success"
        left = stack.xcom(PARALLEL_DAG, run_id, "left")
        right = stack.xcom(PARALLEL_DAG, run_id, "right")
        assert left["started"] < right["ended"] and right["started"] < left["ended"], (left, right)
        assert "left met right" in stack.task_log(PARALLEL_DAG, run_id, "left")
        assert stack.xcoms(PARALLEL_DAG, run_id, "right") == {"return_value": right}


def test_a_backfill_runs_each_window_once(stack: AirflowStack) -> None:
    with stack.dump_on_failure():
        backfill = stack.backfill(WINDOWS_DAG, "2026-01-01", "2026-01-03", max_active_runs=3)
        assert backfill["max_active_runs"] == 3
        runs = stack.wait_for_backfill(WINDOWS_DAG, expected_runs=3)
        assert [run["state"] for run in runs] == ["success"] * 3, runs
        windows = [stack.xcom(WINDOWS_DAG, run["dag_run_id"], "window") for run in runs]
        assert windows == ["2026-01-01", "2026-01-02", "2026-01-03"]
        log = stack.task_log(WINDOWS_DAG, runs[1]["dag_run_id"], "window")
        assert "loading the window of 2026-01-02" in log


def test_a_killed_task_process_is_retried_and_both_tries_logs_are_read(stack: AirflowStack) -> None:
    with stack.dump_on_failure():
        run_id = stack.trigger(KILLED_DAG)
        stack.wait_for_log(KILLED_DAG, run_id, "outlive_a_kill", "try 1 started", try_number=1)
        stack.kill_task_process(KILLED_DAG, run_id, "outlive_a_kill")
        assert stack.wait_for_dag_run(KILLED_DAG, run_id) == "success"
        assert stack.xcom(KILLED_DAG, run_id, "outlive_a_kill") == 2
        tries = stack.task_tries(KILLED_DAG, run_id, "outlive_a_kill")
        assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries
        log = stack.task_log(KILLED_DAG, run_id, "outlive_a_kill")
        assert log.index("try 1 started") < log.index("--- try 2 ---") < log.index("try 2 started"), log
