"""End to end: a real Airflow 3 (scheduler, triggerer, DAG processor, API server) runs deferrable
``DatrisRunTapOperator`` tasks against the stand-in Datris running in this test process.

What ``dag.test()`` cannot show is checked here: the task really leaves the worker while Datris works
(the triggerer makes the blocking run call and follows the pipeline), the serialised trigger kwargs
survive the metadata DB, and marking a deferred task failed makes the real triggerer call
``DatrisPipelineTrigger.on_kill``, which kills the Datris job (Airflow >= 3.3).

Run: ``.venv/bin/pytest tests/e2e/test_real_airflow.py -q -m e2e -p no:cacheprovider -s`` (about a
minute; one Airflow stack from ``tests/e2e/airflow_stack.py`` with SQLite, the LocalExecutor and two
worker slots).

A race in Airflow 3.3.2 itself shapes the timing here: when a trigger fires before the scheduler has
handled the executor's "success" report of the worker that deferred (the worker's supervisor can take up
to ``[workers] min_heartbeat_interval`` to report it), the re-queued task instance is failed as "state
changed externally" (apache/airflow#67287, #72716; only the SCHEDULED case is guarded in 3.3.2). So the
test holds each tap's script phase with a gate until the scheduler has handled that report (the stack
lowers ``min_heartbeat_interval`` to 1 s), and lets the pipeline take several seconds of polls.
"""

from __future__ import annotations

import textwrap
import threading
from typing import TYPE_CHECKING, Any

import pytest
from airflow_stack import wait_for

from datris_provider.testing.server import StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_stack import AirflowStack

pytestmark = pytest.mark.e2e

FINISHING_DAG = "e2e_datris_deferred_run"
FINISHING_TAP = "e2e_orders_tap"
ENDLESS_DAG = "e2e_datris_deferred_kill"
ENDLESS_TAP = "e2e_endless_tap"
TASK_ID = "run_tap"

TAP_RUN_TRIGGER = "datris_provider.triggers.datris.DatrisTapRunTrigger"
PIPELINE_TRIGGER = "datris_provider.triggers.datris.DatrisPipelineTrigger"

RUN_DEADLINE = 60.0
# Status polls (1 s apart) before the finishing tap's job ends: the pipeline trigger fires 7+ s after
# it starts, well after the deferring worker's exit was handled (see the module docstring).
PIPELINE_POLLS = 8

DAG_FILE = textwrap.dedent(
    f'''\
    """DAGs of the Datris end-to-end test (written by tests/e2e/test_real_airflow.py)."""
    from datetime import datetime

    from airflow.sdk import DAG

    from datris_provider.operators.tap import DatrisRunTapOperator

    with DAG("{FINISHING_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        DatrisRunTapOperator(task_id="{TASK_ID}", tap_name="{FINISHING_TAP}", deferrable=True, poll_interval=1)

    with DAG("{ENDLESS_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        DatrisRunTapOperator(task_id="{TASK_ID}", tap_name="{ENDLESS_TAP}", deferrable=True, poll_interval=1)
    '''
)


def run_calls(datris: StandInDatris, tap_name: str) -> list[Any]:
    """The POST /tap/run calls Datris received for one tap."""
    return [call for call in datris.calls("POST /tap/run") if (call.json or {}).get("name") == tap_name]


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInDatris]:
    """The stand-in Datris, in this process; the Airflow processes reach it through its URL."""
    server = StandInDatris().start()
    # Gates hold each tap's script phase (the blocking run call) open until the test lets it end.
    gates = [threading.Event(), threading.Event()]
    server.add_tap(
        StandInTap(
            name=FINISHING_TAP,
            target_pipeline="orders",
            job_seconds=PIPELINE_POLLS * server.clock.time_scale,  # PIPELINE_POLLS real seconds
            gate=gates[0],
        )
    )
    server.add_tap(StandInTap(name=ENDLESS_TAP, target_pipeline="orders", job_seconds=None, gate=gates[1]))
    try:
        yield server
    finally:
        for gate in gates:
            gate.set()
        server.stop()


@pytest.fixture(scope="module")
def airflow_stack(stand_in: StandInDatris, airflow_stacks: Callable[..., AirflowStack]) -> AirflowStack:
    """SQLite and two task slots: one deferrable task at a time is all these tests run."""
    stack = airflow_stacks(datris_url=stand_in.url)
    stack.write_dag("datris_e2e_dags.py", DAG_FILE)
    return stack.start(wait_for_dags=[FINISHING_DAG, ENDLESS_DAG])


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_deferred_run_waits_in_the_triggerer_and_succeeds(airflow_stack: AirflowStack, stand_in: StandInDatris) -> None:
    stack, datris, run_id = airflow_stack, stand_in, "e2e-finishing-1"
    gate = datris.tap(FINISHING_TAP).gate
    assert gate is not None
    with stack.dump_on_failure():
        stack.trigger(FINISHING_DAG, run_id)

        # The script phase is held open by the gate: the blocking run call is in flight, so it must
        # come from the triggerer while the task instance is deferred (no worker slot held).
        datris.wait_until_running(FINISHING_TAP, timeout=RUN_DEADLINE)
        ti = stack.wait_for_task(FINISHING_DAG, run_id, TASK_ID, states={"deferred"}, timeout=20)
        assert ti["trigger"]["classpath"] == TAP_RUN_TRIGGER, ti
        assert ti["triggerer_job"] is not None, ti
        stack.let_defer_exit_settle(FINISHING_DAG, run_id, TASK_ID, deferrals=1)
        gate.set()

        # Then the pipeline wait: deferred again, on the pipeline trigger, while Datris still works.
        seen: list[tuple[str | None, str | None]] = []

        def pipeline_deferred() -> bool:
            ti = stack.task_instance(FINISHING_DAG, run_id, TASK_ID)
            classpath = (ti.get("trigger") or {}).get("classpath")
            seen.append((ti["state"], classpath))
            if ti["state"] in ("success", "failed"):
                raise AssertionError(f"the task ended without being seen deferred on the pipeline: {seen}")
            return ti["state"] == "deferred" and classpath == PIPELINE_TRIGGER

        wait_for("the task to be deferred on the pipeline trigger", pipeline_deferred, 30, interval=0.2)
        token = wait_for("the run's publisher token", lambda: datris.script_runs(FINISHING_TAP)[0].publisher_token, 5)
        jobs = datris.jobs(token)
        assert len(jobs) == 1
        assert jobs[0].state in ("INITIALIZED", "PROCESSING"), jobs  # Datris was still working

        state = stack.wait_for_dag_run(FINISHING_DAG, run_id, timeout=RUN_DEADLINE)
        assert state == "success", stack.race_hint(FINISHING_DAG)
        ti = stack.task_instance(FINISHING_DAG, run_id, TASK_ID)
        assert ti["state"] == "success", ti
        assert ti["try_number"] == 1, ti

    # Datris saw exactly one run call, and the job was followed to its end by status polls.
    assert len(run_calls(datris, FINISHING_TAP)) == 1
    assert datris.job(jobs[0].pipeline_token).state == "COMPLETED"
    polls = [call for call in datris.calls("GET /pipeline/status") if call.query.get("publishertoken") == token]
    assert len(polls) >= PIPELINE_POLLS  # the trigger's polls, then the task's read of the last events
    assert datris.kills == []


def test_marking_a_deferred_task_failed_kills_the_datris_job(
    airflow_stack: AirflowStack, stand_in: StandInDatris
) -> None:
    stack, datris, run_id = airflow_stack, stand_in, "e2e-endless-1"
    with stack.dump_on_failure():
        stack.trigger(ENDLESS_DAG, run_id)
        gate = datris.tap(ENDLESS_TAP).gate
        assert gate is not None
        datris.wait_until_running(ENDLESS_TAP, timeout=RUN_DEADLINE)
        stack.wait_for_task(ENDLESS_DAG, run_id, TASK_ID, states={"deferred"}, timeout=20)
        stack.let_defer_exit_settle(ENDLESS_DAG, run_id, TASK_ID, deferrals=1)
        gate.set()

        token = wait_for(
            "the endless tap's run to submit its job",
            lambda: next((run.publisher_token for run in datris.script_runs(ENDLESS_TAP) if run.publisher_token), None),
            RUN_DEADLINE,
        )
        job = wait_for(
            "the Datris job to be running (killable)",
            lambda: next((job for job in datris.jobs(token) if job.state == "PROCESSING"), None),
            RUN_DEADLINE,
        )
        ti = stack.wait_for_task(
            ENDLESS_DAG, run_id, TASK_ID, states={"deferred"}, trigger=PIPELINE_TRIGGER, timeout=RUN_DEADLINE
        )
        # The worker reads the status once before deferring; a later poll comes from the running trigger.
        polls_before_deferral = len(datris.calls("GET /pipeline/status"))
        wait_for(
            "the triggerer to run the pipeline trigger",
            lambda: len(datris.calls("GET /pipeline/status")) > polls_before_deferral,
            RUN_DEADLINE,
        )
        assert datris.kills == []

        stack.set_task_state(ENDLESS_DAG, run_id, TASK_ID, "failed")

        # The triggerer cancels the trigger "by user action" and calls its on_kill (Airflow >= 3.3).
        wait_for("POST /job/kill to reach Datris", lambda: datris.kills, RUN_DEADLINE)
        assert datris.kills == [job.pipeline_token]
        assert datris.job(job.pipeline_token).state == "CANCELLED"
        kill_calls = datris.calls("POST /job/kill")
        assert [call.json for call in kill_calls] == [{"pipelineToken": job.pipeline_token}]

        assert stack.wait_for_dag_run(ENDLESS_DAG, run_id, timeout=RUN_DEADLINE) == "failed"
        assert stack.task_instance(ENDLESS_DAG, run_id, TASK_ID)["state"] == "failed"
        assert ti["try_number"] == 1

    assert len(run_calls(datris, ENDLESS_TAP)) == 1
