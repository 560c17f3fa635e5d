"""End to end: Datris runs survive Airflow's own faults, with one run call, no stray kill, and every
Datris line once in the task log.

A real Airflow on PostgreSQL (scheduler, triggerer, DAG processor and API server as separate
processes; the LocalExecutor with three slots) runs ``DatrisRunTapOperator`` against the stand-in in
this process while the test breaks it:

(a) the triggerer is SIGKILLed while a deferred run's tap script runs, then restarted;
(b) the triggerer is SIGKILLed while the trigger waits for the pipeline, then restarted;
(c) a sync task's process is SIGKILLed while it polls the pipeline; the task has a retry;
(d) two triggerers run, and the one holding the pipeline trigger is SIGKILLed, so the other takes it
    over: the Datris job must not be killed (Airflow 3.3.0 called a moved trigger's ``on_kill``);
(d2) two triggerers run, and the one holding the pipeline trigger stalls (SIGSTOP) until the other takes
    the trigger over, then resumes: it cancels its own copy of the moved trigger and calls its
    ``on_kill`` (Airflow 3.3's triggerer treats a trigger no longer assigned to it as cancelled by the
    user, apache/airflow#73454). A SIGKILLed holder, as in (d), cannot call anything, so (d2) is the
    case that meets the provider's guard; the Datris job must not be killed here either;
(e) a deferred task is marked failed during the pipeline wait: here the kill is what the user asked;
(orphaned try) try 1 of a sync task is cut off from Airflow (its supervisor stopped, so it sends no
    heartbeat) until the scheduler fails it for the missing heartbeat and try 2 takes its run over;
    then try 1 comes back, is told to stop, and must kill nothing.

Each scenario counts the ``POST /tap/run`` and ``POST /job/kill`` calls, and the Datris lines (each
script log line and each pipeline event's description, as the stand-in produced them) in the task
log: duplicated lines (printed more often than Datris produced them) and lost lines (never printed).
The counts table is printed (with ``-s``) and written to ``benchmarks/results/fault_recovery.txt``.

The runs here have no ``tap_params``: a trigger restarted after it posted may then follow the run in
flight as its own (with params a busy tap is never adopted, and a restarted trigger could not prove
the run in flight is its own). Gates hold each tap script until the scheduler has handled the
deferring worker's exit (Airflow's own race, see ``airflow_stack``), and the jobs run until the test
moves the stand-in clock past their end, so every fault lands in the phase it names.

Run: ``.venv/bin/python -m pytest tests/e2e/test_fault_recovery.py -m e2e -q -p no:cacheprovider -s``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from airflow_stack import alive, wait_for

from datris_provider.testing import StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_stack import AirflowStack
    from postgres import PostgresCluster

pytestmark = pytest.mark.e2e

TASK_ID = "run_tap"
TAP_RUN_TRIGGER = "datris_provider.triggers.datris.DatrisTapRunTrigger"
PIPELINE_TRIGGER = "datris_provider.triggers.datris.DatrisPipelineTrigger"
RESULTS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fault_recovery.txt"

# Stand-in seconds are real seconds here; a job runs until the test advances the clock past its end.
JOB_SECONDS = 3600.0
SCRIPT_SECONDS = 1.0
FAULT_TIMEOUT = 120.0
# A dead triggerer's triggers go to a live one once its heartbeat is this old (default 30 s).
TRIGGERER_THRESHOLD_S = 5
# Try 1 of the orphaned-try case is failed this long after its last heartbeat (default 300 s).
HEARTBEAT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Scenario:
    """One fault: its DAG (``e2e_fault_<key>``) runs its own tap (``e2e_fault_<key>_tap``)."""

    key: str
    title: str
    deferrable: bool = True
    retries: int = 0

    @property
    def dag_id(self) -> str:
        return f"e2e_fault_{self.key}"

    @property
    def tap_name(self) -> str:
        return f"e2e_fault_{self.key}_tap"


SCENARIOS = {
    s.key: s
    for s in (
        Scenario("a", "(a) triggerer SIGKILLed in the script phase, restarted"),
        Scenario("b", "(b) triggerer SIGKILLed in the pipeline wait, restarted"),
        Scenario("c", "(c) sync task process SIGKILLed while polling, retried", deferrable=False, retries=1),
        Scenario("d", "(d) triggerer holding the trigger SIGKILLed, other takes over"),
        Scenario("d2", "(d2) holding triggerer stalled, other takes over, it resumes"),
        Scenario("e", "(e) deferred task marked failed in the pipeline wait"),
        Scenario("orphan", "(orphaned try) try 1 stopped after try 2 took the run over", deferrable=False, retries=1),
    )
}


def dag_file() -> str:
    dags = "\n".join(
        textwrap.dedent(
            f"""\
            with DAG("{s.dag_id}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
                DatrisRunTapOperator(
                    task_id="{TASK_ID}",
                    tap_name="{s.tap_name}",
                    deferrable={s.deferrable},
                    poll_interval=1,
                    retries={s.retries},
                    retry_delay=timedelta(seconds=1),
                )
            """
        )
        for s in SCENARIOS.values()
    )
    header = textwrap.dedent(
        '''\
        """DAGs of the Datris fault-recovery test (written by tests/e2e/test_fault_recovery.py)."""
        from datetime import datetime, timedelta

        from airflow.sdk import DAG

        from datris_provider.operators.tap import DatrisRunTapOperator

        '''
    )
    return header + dags


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datris() -> Iterator[StandInDatris]:
    """The stand-in, in this process, on a real-time clock; each deferrable tap's script has a gate."""
    server = StandInDatris(time_scale=1.0, scheduler_tick_seconds=1.0).start()
    for scenario in SCENARIOS.values():
        server.add_tap(
            StandInTap(
                name=scenario.tap_name,
                target_pipeline="orders",
                records=25,
                script_seconds=SCRIPT_SECONDS,
                job_seconds=JOB_SECONDS,
                gate=threading.Event() if scenario.deferrable else None,
            )
        )
    try:
        yield server
    finally:
        for scenario in SCENARIOS.values():
            gate = server.tap(scenario.tap_name).gate
            if gate is not None:
                gate.set()
        server.stop()


@pytest.fixture(scope="module")
def stack(
    datris: StandInDatris, airflow_stacks: Callable[..., AirflowStack], postgres_cluster: PostgresCluster
) -> AirflowStack:
    stack = airflow_stacks(
        datris_url=datris.url,
        database_url=postgres_cluster.new_database(),
        parallelism=3,
        env={
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_THRESHOLD_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        },
    )
    stack.write_dag("datris_fault_dags.py", dag_file())
    return stack.start(wait_for_dags=[s.dag_id for s in SCENARIOS.values()])


@dataclass
class Counts:
    scenario: Scenario
    posts: int
    kills: int
    duplicated: int
    lost: int
    state: str
    read_as: str
    detail: str = ""


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Counts]]:
    """The counts of each scenario, printed and written to the results file at the end."""
    counts: dict[str, Counts] = {}
    yield counts
    if not counts:
        return
    lines = [
        "Fault recovery on a real Airflow 3.3 (PostgreSQL, LocalExecutor; scheduler, triggerer, DAG processor "
        "and API server as separate processes)",
        f"{'scenario':<66} {'posts':>5} {'kills':>5} {'dup':>4} {'lost':>4}  {'final state':<11} lines read in",
    ]
    # Rows in the order the scenarios ran (a row per scenario, and (c) also across its tries).
    for c in counts.values():
        lines.append(
            f"{c.scenario.title:<66} {c.posts:>5} {c.kills:>5} {c.duplicated:>4} {c.lost:>4}  {c.state:<11} {c.read_as}"
        )
    details = [f"{c.scenario.title}: {c.detail}" for c in counts.values() if c.detail]
    text = "\n".join(lines + (["", *details] if details else [])) + "\n"
    print("\n" + text)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(text)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def tap_posts(datris: StandInDatris, tap_name: str) -> int:
    return sum(1 for call in datris.calls("POST /tap/run") if (call.json or {}).get("name") == tap_name)


def kill_calls(datris: StandInDatris, tap_name: str) -> int:
    """The ``POST /job/kill`` calls for the jobs of one tap's runs."""
    jobs = {
        job.pipeline_token
        for run in datris.script_runs(tap_name)
        if run.publisher_token
        for job in datris.jobs(run.publisher_token)
    }
    return sum(1 for call in datris.calls("POST /job/kill") if (call.json or {}).get("pipelineToken") in jobs)


def the_token(datris: StandInDatris, tap_name: str) -> str:
    def token() -> str | None:
        runs = datris.script_runs(tap_name)
        return runs[0].publisher_token if runs else None

    return wait_for(f"the publisher token of tap {tap_name}'s run", token, FAULT_TIMEOUT)


def tap_reads(datris: StandInDatris, tap_name: str) -> int:
    return sum(1 for call in datris.calls("GET /tap") if call.query.get("name") == tap_name)


def status_polls(datris: StandInDatris, token: str) -> int:
    return sum(1 for call in datris.calls("GET /pipeline/status") if call.query.get("publishertoken") == token)


def wait_for_more_polls(datris: StandInDatris, token: str, than: int, what: str) -> int:
    return wait_for(what, lambda: (n := status_polls(datris, token)) > than and n, FAULT_TIMEOUT)


def event_line(event: dict[str, Any]) -> str:
    """How the task log shows one pipeline event."""
    return f"[{event.get('pipeline') or 'pipeline'}] {event['processName']} {event['state']}: {event['description']}"


def datris_lines(datris: StandInDatris, tap_name: str, events: list[dict[str, Any]] | None = None) -> Counter[str]:
    """Every line the task log should hold once: the tap run's script log lines, then its pipeline
    events (``events``: as they stood at some moment; default: all of them now). One run per tap here."""
    expected: Counter[str] = Counter()
    for row in datris.run_logs(tap_name):
        for line in (row.get("logs") or "").splitlines():
            if line.strip():
                expected[f"[tap {tap_name}] {line.rstrip()}"] += 1
        token = row.get("publisherToken")
        if events is None:
            events = datris.events(token) if token else []
        expected.update(event_line(event) for event in events)
    return expected


def line_counts(log: str, expected: Counter[str]) -> tuple[int, int, list[str]]:
    """Duplicated and lost lines of ``expected`` in ``log``, and a note naming them."""
    found = Counter(line.strip() for line in log.splitlines() if line.strip() in expected)
    duplicated = sum(max(0, found[line] - count) for line, count in expected.items())
    lost = sum(max(0, count - found[line]) for line, count in expected.items())
    notes = [f"x{found[line]} {line}" for line, count in expected.items() if found[line] != count]
    return duplicated, lost, notes


def ti_of(stack: AirflowStack, scenario: Scenario, run_id: str) -> dict[str, Any]:
    return stack.task_instance(scenario.dag_id, run_id, TASK_ID)


def deferred_in_script_phase(stack: AirflowStack, datris: StandInDatris, scenario: Scenario, run_id: str) -> None:
    """Trigger the run and wait until its tap script is in flight from the triggerer (the gate holds it)."""
    stack.trigger(scenario.dag_id, run_id)
    datris.wait_until_running(scenario.tap_name, timeout=FAULT_TIMEOUT)
    stack.wait_for_task(scenario.dag_id, run_id, TASK_ID, states={"deferred"}, trigger=TAP_RUN_TRIGGER)
    stack.let_defer_exit_settle(scenario.dag_id, run_id, TASK_ID, deferrals=1)


def deferred_in_pipeline_wait(stack: AirflowStack, datris: StandInDatris, scenario: Scenario, run_id: str) -> str:
    """Trigger the run, let its script end, and wait until the triggerer polls the running job."""
    deferred_in_script_phase(stack, datris, scenario, run_id)
    gate = datris.tap(scenario.tap_name).gate
    assert gate is not None
    gate.set()
    stack.wait_for_task(scenario.dag_id, run_id, TASK_ID, states={"deferred"}, trigger=PIPELINE_TRIGGER)
    token = the_token(datris, scenario.tap_name)
    polls = status_polls(datris, token)
    wait_for_more_polls(datris, token, polls, "the pipeline trigger to poll")
    stack.let_defer_exit_settle(scenario.dag_id, run_id, TASK_ID, deferrals=2)
    wait_for(
        "the Datris job to be running",
        lambda: any(job.state == "PROCESSING" for job in datris.jobs(token)),
        FAULT_TIMEOUT,
    )
    return token


def end_jobs(datris: StandInDatris) -> None:
    """Move the stand-in clock past the end of every running job."""
    datris.clock.advance(JOB_SECONDS + 10)


def final_try_log(stack: AirflowStack, scenario: Scenario, run_id: str) -> tuple[int, str]:
    try_number = int(ti_of(stack, scenario, run_id)["try_number"])
    return try_number, stack.task_log(scenario.dag_id, run_id, TASK_ID, try_number=try_number)


def record(
    report: dict[str, Counts],
    stack: AirflowStack,
    datris: StandInDatris,
    scenario: Scenario,
    run_id: str,
    *,
    events: list[dict[str, Any]] | None = None,
    across_tries: bool = False,
) -> Counts:
    """Count posts, kills and the Datris lines of the final try's log (or every try's) for the table."""
    try_number, log = final_try_log(stack, scenario, run_id)
    read_as = f"try {try_number}'s log"
    if across_tries:
        log = stack.task_log(scenario.dag_id, run_id, TASK_ID)
        read_as = f"tries 1-{try_number}"
    duplicated, lost, notes = line_counts(log, datris_lines(datris, scenario.tap_name, events))
    counts = Counts(
        scenario,
        posts=tap_posts(datris, scenario.tap_name),
        kills=kill_calls(datris, scenario.tap_name),
        duplicated=duplicated,
        lost=lost,
        state=str(ti_of(stack, scenario, run_id)["state"]),
        read_as=read_as,
        detail="; ".join(notes),
    )
    report[scenario.key] = counts
    return counts


def assert_clean(counts: Counts, *, state: str = "success", kills: int = 0) -> None:
    assert (counts.posts, counts.kills, counts.state) == (1, kills, state), counts
    assert (counts.duplicated, counts.lost) == (0, 0), counts


# --------------------------------------------------------------------------------------------------
# The scenarios
# --------------------------------------------------------------------------------------------------


def test_a_triggerer_killed_in_the_script_phase(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["a"], "fault-a"
    with stack.dump_on_failure():
        deferred_in_script_phase(stack, datris, scenario, run_id)
        reads = tap_reads(datris, scenario.tap_name)
        stack.kill("triggerer")
        stack.restart("triggerer")
        # The restarted trigger looks at the tap again rather than posting a second run.
        wait_for(
            "the restarted trigger to read the tap",
            lambda: tap_reads(datris, scenario.tap_name) > reads,
            FAULT_TIMEOUT,
        )
        gate = datris.tap(scenario.tap_name).gate
        assert gate is not None
        gate.set()
        stack.wait_for_task(scenario.dag_id, run_id, TASK_ID, states={"deferred"}, trigger=PIPELINE_TRIGGER)
        stack.let_defer_exit_settle(scenario.dag_id, run_id, TASK_ID, deferrals=2)
        end_jobs(datris)
        assert stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT) == "success", stack.race_hint(
            scenario.dag_id
        )
    counts = record(report, stack, datris, scenario, run_id)
    _, log = final_try_log(stack, scenario, run_id)
    # The provider's own note from before the POST lived in the killed trigger, not in Datris.
    if "Running Datris tap" not in log:
        counts.detail = (
            "the killed trigger's own note 'Running Datris tap ...' (collected before its POST, carried in "
            "its event) is not in the task log; " + counts.detail
        ).rstrip("; ")
    assert "started since this task checked; following it" in log, log
    assert_clean(counts)


def test_b_triggerer_killed_in_the_pipeline_wait(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["b"], "fault-b"
    with stack.dump_on_failure():
        token = deferred_in_pipeline_wait(stack, datris, scenario, run_id)
        polls = status_polls(datris, token)
        stack.kill("triggerer")
        stack.restart("triggerer")
        wait_for_more_polls(datris, token, polls, "the restarted triggerer to poll the pipeline")
        end_jobs(datris)
        assert stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT) == "success"
    assert_clean(record(report, stack, datris, scenario, run_id))


def test_c_sync_task_process_killed_while_polling(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["c"], "fault-c"
    with stack.dump_on_failure():
        stack.trigger(scenario.dag_id, run_id)
        token = the_token(datris, scenario.tap_name)
        wait_for_more_polls(datris, token, 1, "try 1 to poll the pipeline")
        stack.kill_task_process(scenario.dag_id, run_id, TASK_ID)
        stack.wait_for_log(scenario.dag_id, run_id, TASK_ID, "This is a retry", try_number=2, timeout=FAULT_TIMEOUT)
        polls = status_polls(datris, token)
        wait_for_more_polls(datris, token, polls, "try 2 to poll the pipeline")
        end_jobs(datris)
        assert stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT) == "success"
        tries = stack.task_tries(scenario.dag_id, run_id, TASK_ID)
        assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")], tries
    # Try 1 died mid-run, so the run's whole story is try 2's log; across both tries, the lines try 1
    # printed before it was killed appear twice by design (reported, not asserted).
    across = record(report, stack, datris, scenario, run_id, across_tries=True)
    report["c-across"] = Counts(
        Scenario("c-across", "(c) the same, counted across both tries", deferrable=False),
        across.posts,
        across.kills,
        across.duplicated,
        across.lost,
        across.state,
        across.read_as,
    )
    assert_clean(record(report, stack, datris, scenario, run_id))


def test_d_a_trigger_taken_over_by_another_triggerer_keeps_the_job(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["d"], "fault-d"
    with stack.dump_on_failure():
        token = deferred_in_pipeline_wait(stack, datris, scenario, run_id)
        holder = ti_of(stack, scenario, run_id)["triggerer_job"]["id"]
        stack.start_component("triggerer-2")
        second = wait_for(
            "the second triggerer to be alive", lambda: newer_triggerer(stack, than=holder), FAULT_TIMEOUT
        )
        # The trigger was assigned before the second triggerer started, so the first one holds it.
        stack.kill("triggerer")
        wait_for(
            "the second triggerer to take the trigger over",
            lambda: (ti_of(stack, scenario, run_id).get("triggerer_job") or {}).get("id") == second,
            FAULT_TIMEOUT,
        )
        polls = status_polls(datris, token)
        wait_for_more_polls(datris, token, polls, "the second triggerer to poll the pipeline")
        assert kill_calls(datris, scenario.tap_name) == 0, "the trigger that moved killed the Datris job"
        assert all(job.state == "PROCESSING" for job in datris.jobs(token)), datris.jobs(token)
        end_jobs(datris)
        assert stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT) == "success"
        # Back to one triggerer, the stack's own, for the scenarios after this one.
        stack.restart("triggerer")
        stack.kill("triggerer-2")
    assert_clean(record(report, stack, datris, scenario, run_id))


def newer_triggerer(stack: AirflowStack, *, than: int) -> int | None:
    jobs = stack.api.get("/jobs", params={"job_type": "TriggererJob", "is_alive": True}).json()["jobs"]
    ids = [int(job["id"]) for job in jobs if int(job["id"]) > than]
    return max(ids) if ids else None


ON_KILL_CALLED = "Trigger cancelled by user action, invoking on_kill"
LEFT_RUNNING = "leaving the Datris jobs running"


def test_d2_a_stalled_triggerer_that_lost_its_trigger_keeps_the_job(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["d2"], "fault-d2"
    with stack.dump_on_failure():
        token = deferred_in_pipeline_wait(stack, datris, scenario, run_id)
        holder = ti_of(stack, scenario, run_id)["triggerer_job"]["id"]
        stack.start_component("triggerer-2")
        second = wait_for(
            "the second triggerer to be alive", lambda: newer_triggerer(stack, than=holder), FAULT_TIMEOUT
        )
        stalled = stack.pid("triggerer")
        os.killpg(stalled, signal.SIGSTOP)
        try:
            wait_for(
                "the second triggerer to take the trigger over",
                lambda: (ti_of(stack, scenario, run_id).get("triggerer_job") or {}).get("id") == second,
                FAULT_TIMEOUT,
            )
            polls = status_polls(datris, token)
            wait_for_more_polls(datris, token, polls, "the second triggerer to poll the pipeline")
        finally:
            os.killpg(stalled, signal.SIGCONT)

        # The resumed triggerer finds the trigger assigned elsewhere and cancels its copy. Its on_kill
        # either kills the job or says it left it running; wait for whichever it does.
        def on_kill_outcome() -> str | None:
            if kill_calls(datris, scenario.tap_name):
                return "killed"
            log = stack.task_log(scenario.dag_id, run_id, TASK_ID, try_number=1)
            if LEFT_RUNNING in log:
                return "left running"
            return None

        try:
            stack.wait_for_log(scenario.dag_id, run_id, TASK_ID, ON_KILL_CALLED, try_number=1, timeout=60)
            outcome = wait_for("the moved trigger's on_kill to end", on_kill_outcome, FAULT_TIMEOUT)
        except AssertionError:
            outcome = "on_kill not called"
        kills_by_the_moved_trigger = kill_calls(datris, scenario.tap_name)
        end_jobs(datris)
        state = stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT)
        stack.kill("triggerer-2")
    counts = record(report, stack, datris, scenario, run_id)
    counts.detail = "; ".join(part for part in (f"the resumed triggerer's on_kill: {outcome}", counts.detail) if part)
    assert kills_by_the_moved_trigger == 0, f"the stalled triggerer's on_kill killed a healthy job ({outcome})"
    assert state == "success"
    assert_clean(counts)


def test_e_a_deferred_task_marked_failed_kills_its_job(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["e"], "fault-e"
    with stack.dump_on_failure():
        token = deferred_in_pipeline_wait(stack, datris, scenario, run_id)
        # The lines Datris had produced when the user stopped the task are the ones its log can hold.
        events_when_stopped = datris.events(token)
        stack.set_task_state(scenario.dag_id, run_id, TASK_ID, "failed")
        wait_for("POST /job/kill to reach Datris", lambda: kill_calls(datris, scenario.tap_name), FAULT_TIMEOUT)
        assert stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT) == "failed"
        assert [job.state for job in datris.jobs(token)] == ["CANCELLED"]
    counts = record(report, stack, datris, scenario, run_id, events=events_when_stopped)
    after_stop = datris_lines(datris, scenario.tap_name) - datris_lines(datris, scenario.tap_name, events_when_stopped)
    if after_stop:
        counts.detail = (
            f"{sum(after_stop.values())} event line(s) Datris wrote after the task was stopped are not in its log "
            f"(not counted as lost): {', '.join(after_stop)}"
        )
    its_jobs = [job.pipeline_token for job in datris.jobs(token)]
    assert [call.json for call in datris.calls("POST /job/kill") if call.json["pipelineToken"] in its_jobs] == [
        {"pipelineToken": job_token} for job_token in its_jobs
    ]
    assert_clean(counts, state="failed", kills=1)


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def attempt_owner(stack: AirflowStack, scenario: Scenario, run_id: str) -> int | None:
    """The try that the task's attempt record (task state ``datris_run``) names as the run's owner."""
    path = f"/dags/{scenario.dag_id}/dagRuns/{run_id}/taskInstances/{TASK_ID}/state-store/datris_run"
    answer = stack.api.get(path)
    if answer.status_code != 200:
        return None
    value = answer.json()["value"]
    return int(value["try_number"]) if isinstance(value, dict) and "try_number" in value else None


def test_orphaned_try_stopped_after_the_retry_took_its_run_kills_nothing(
    stack: AirflowStack, datris: StandInDatris, report: dict[str, Counts]
) -> None:
    scenario, run_id = SCENARIOS["orphan"], "fault-orphan"
    with stack.dump_on_failure():
        stack.trigger(scenario.dag_id, run_id)
        token = the_token(datris, scenario.tap_name)
        wait_for_more_polls(datris, token, 1, "try 1 to poll the pipeline")
        task_pid = wait_for(
            "try 1's task process",
            lambda: stack.task_process_pid(scenario.dag_id, run_id, TASK_ID),
            FAULT_TIMEOUT,
        )
        supervisor = parent_pid(task_pid)
        # Try 1's supervisor stops: no heartbeat reaches Airflow, while the task process goes on
        # polling Datris. The scheduler fails the try for the missing heartbeat and starts try 2.
        os.kill(supervisor, signal.SIGSTOP)
        try:
            wait_for(
                "try 2 to take the run over (its attempt record)",
                lambda: attempt_owner(stack, scenario, run_id) == 2,
                FAULT_TIMEOUT,
            )
            stack.wait_for_log(scenario.dag_id, run_id, TASK_ID, "This is a retry", try_number=2, timeout=FAULT_TIMEOUT)
            try_1_alive_at_takeover = alive(task_pid)
        finally:
            # Try 1 is back: its next heartbeat is refused, and its supervisor stops it (on_kill).
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor, signal.SIGCONT)
        wait_for("try 1's task process to be stopped", lambda: not alive(task_pid), FAULT_TIMEOUT)
        kills_by_try_1 = kill_calls(datris, scenario.tap_name)
        end_jobs(datris)
        stack.wait_for_dag_run(scenario.dag_id, run_id, timeout=FAULT_TIMEOUT)
        first_try = stack.task_log(scenario.dag_id, run_id, TASK_ID, try_number=1)
    counts = record(report, stack, datris, scenario, run_id)
    stopped_quietly = "stops without killing it" in first_try
    killed = [line for line in first_try.splitlines() if "Asked Datris to kill" in line]
    counts.detail = "; ".join(
        part
        for part in (
            "try 1 logged that try 2 owns the run" if stopped_quietly else "",
            f"try 1 (stopped after try 2 took over) logged: {killed[0]}" if killed else "",
            counts.detail,
        )
        if part
    )
    assert try_1_alive_at_takeover, "try 1 ended before try 2 took its run over: the scenario did not happen"
    assert kills_by_try_1 == 0, f"try 1 killed the run try 2 follows: {killed}"
    assert_clean(counts)
