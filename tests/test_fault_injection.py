"""Fault injection: real DAGs against the stand-in Datris with faults on every route, in both modes.

For every run: the Airflow outcome is the right one, ``POST /tap/run`` reached the tap exactly once,
no Datris log line was lost or printed twice within a try, and the API key is nowhere in the captured
output, the XComs or the rendered template fields. The checks are
:func:`datris_provider.testing.faults.check_run`; the last test is a bounded, seeded soak.
"""

from __future__ import annotations

import json
import time
from importlib import metadata

import pytest
import requests

from datris_provider.testing.dag_runner import connection_json
from datris_provider.testing.faults import (
    RUN_ROUTE,
    Fault,
    FaultBudget,
    FaultPlan,
    check_run,
    count_lines,
    expected_lines,
    run_soak,
    split_attempts,
    story_tap,
)

pytestmark = [pytest.mark.dag, pytest.mark.faults]

KEY = "dk_fault_5ecret_9f8e7d6c5b4a3210"
FAULT_TAP = "fault_tap"
ENDLESS_TAP = "fault_endless_tap"
STATUS = "GET /pipeline/status"
MODES = ["fault_sync", "fault_deferred"]
# In step with the connection below and tests/dags/fault_dags.py.
BUDGET = FaultBudget(client_attempts=4, max_poll_failures=2, task_retries=2, request_timeout=0.5)
SOAK_RUNS = 12
SOAK_SEED = 20260501


def prepare(stand_in) -> None:
    """Keys on, the connection's key known, and the taps the fault DAGs run."""
    stand_in.require_api_keys()
    stand_in.add_api_key(KEY, label="airflow")
    stand_in.add_tap(story_tap(FAULT_TAP))
    stand_in.add_tap(story_tap(ENDLESS_TAP, job_seconds=None))


@pytest.fixture
def datris(datris_stand_in, datris_connection, monkeypatch):
    """The stand-in with the fault taps, and a keyed connection whose calls time out after 0.5 s."""
    prepare(datris_stand_in)
    extra = {"retries": BUDGET.client_attempts - 1, "retry_delay": 0.01, "timeout": BUDGET.request_timeout}
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris_stand_in.url, api_key=KEY, extra=extra))
    return datris_stand_in


def rendered_fields(outcome) -> dict[str, str]:
    """The run's rendered template fields as text, to search for the key."""
    from airflow import settings
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered

    assert settings.Session is not None
    session = settings.Session()
    try:
        rows = session.query(Rendered).filter(Rendered.dag_id == outcome.dag_id, Rendered.run_id == outcome.run_id)
        return {f"rendered fields of {row.task_id}": json.dumps(row.rendered_fields, default=repr) for row in rows}
    finally:
        session.close()


def assert_clean(datris, outcome, **kwargs) -> None:
    datris.wait_until_idle()
    violations = check_run(
        datris,
        outcome,
        api_key=KEY,
        tap_name=kwargs.pop("tap_name", FAULT_TAP),
        extra_texts=rendered_fields(outcome),
        **kwargs,
    )
    assert violations == [], "\n".join(str(v) for v in violations)


def faults_hit(datris) -> list[str]:
    return [f"{r.route} {r.fault}" for r in datris.requests if r.fault]


# -- the checker itself, without Airflow ---------------------------------------------------------------


def test_same_seed_same_plan_and_the_plan_stays_within_the_budget():
    plans = [FaultPlan.random(seed, budget=BUDGET) for seed in range(300)]

    assert FaultPlan.random(42, budget=BUDGET) == FaultPlan.random(42, budget=BUDGET)
    assert len({plan.describe() for plan in plans}) > 200
    for plan in plans:
        assert 0 <= plan.attempts_used <= BUDGET.task_retries
        per_route: dict[str, int] = {}
        for fault in plan.faults:
            if fault.route != RUN_ROUTE:
                per_route[fault.route] = per_route.get(fault.route, 0) + fault.times
        for route, total in per_route.items():
            spare = total % BUDGET.poll_burst if route == STATUS else total
            assert spare < (BUDGET.poll_burst if route == STATUS else BUDGET.client_attempts), plan.describe()
        killers = sum(f.times == BUDGET.poll_burst for f in plan.faults if f.route == STATUS) + sum(
            f.kind in ("reset", "fail", "html") for f in plan.faults if f.route == RUN_ROUTE
        )
        assert killers == plan.attempts_used, plan.describe()
        # Status bursts that use up a try come before any status fault that lets the handler run.
        status = [fault for fault in plan.faults if fault.route == STATUS]
        assert status == sorted(status, key=lambda fault: fault.times != BUDGET.poll_burst), plan.describe()


def test_count_lines_matches_whole_messages_only():
    log = "\n".join(
        [
            "2026-05-01T00:00:00Z [info     ] [tap t] line 10            [airflow.task] loc=x.py:1",
            "2026-05-01T00:00:00Z [info     ] [tap t] line 1 [wrapper] x [airflow.task] loc=x.py:1",
            "[2026-05-01 00:00:00] {x.py:1} INFO - [tap t] line 1",
        ]
    )

    counts = count_lines(log, ["[tap t] line 1", "[tap t] line 10", "[tap t] line 1 [wrapper] x"])

    assert counts == {"[tap t] line 1": 1, "[tap t] line 10": 1, "[tap t] line 1 [wrapper] x": 1}
    end = "Task instance state updated new_state=up_for_retry\n"
    assert split_attempts("setup\nx\n" + end + "y\n") == ["setup\nx\n" + end, "y\n"]
    assert split_attempts("just one try") == ["just one try"]


def test_check_run_finds_each_kind_of_broken_promise(datris_stand_in):
    datris_stand_in.debounce_seconds = 0
    datris_stand_in.add_tap(story_tap("t", lines=3))
    for _ in range(2):
        requests.post(f"{datris_stand_in.api_url}/tap/run", json={"name": "t", "mode": "run"}, timeout=5)
    wanted = sorted(expected_lines(datris_stand_in, "t"))
    printed = [wanted[0], wanted[0], *wanted[2:], f"Connecting with key {KEY}"]
    log = "\n".join(f"2026-05-01T00:00:00Z [info     ] {line} [airflow.task]" for line in printed)

    kinds = sorted(v.kind for v in check_run(datris_stand_in, log, api_key=KEY, tap_name="t"))

    assert kinds == ["double_fire", "duplicated_line", "key_leak", "lost_line"]


# -- faults the client's own repeats absorb -------------------------------------------------------------

ABSORBED = {
    "status_503_burst": [Fault(STATUS, "fail", times=3, status=503)],
    "status_read_timeout": [Fault(STATUS, "delay", seconds=1.0)],
    "tap_429_retry_after": [Fault("GET /tap", "fail", status=429, headers={"Retry-After": "1"})],
    "tap_504_then_ok": [Fault("GET /tap", "fail", times=3, status=504)],
    "tap_logs_connection_reset": [Fault("GET /tap/logs", "reset", times=2)],
    "version_proxy_html_page": [Fault("GET /version", "html", times=2, status=502)],
}


@pytest.mark.parametrize("dag_id", MODES)
@pytest.mark.parametrize("case", sorted(ABSORBED))
def test_repeatable_call_faults_are_absorbed_without_an_airflow_retry(datris, datris_dag_runner, dag_id, case):
    plan = FaultPlan(tuple(ABSORBED[case]))
    plan.apply(datris)

    started = time.monotonic()
    outcome = datris_dag_runner.run(dag_id)
    elapsed = time.monotonic() - started

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 1
    assert len(faults_hit(datris)) == plan.injected, faults_hit(datris)
    assert outcome.xcom("run_tap")["status"] == "success"
    if case == "tap_429_retry_after":
        assert elapsed >= 1.0, "the client must wait as long as Retry-After says, not its own 0.01 s"
    assert_clean(datris, outcome)


# -- the blocking run call ----------------------------------------------------------------------------


@pytest.mark.parametrize("dag_id", MODES)
def test_run_call_cut_by_a_proxy_504_is_found_while_the_run_goes_on(datris, datris_dag_runner, dag_id):
    datris.tap(FAULT_TAP).script_seconds = 0.3
    datris.proxy_timeout(RUN_ROUTE, after_seconds=0.05)

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 1
    assert [call.fault for call in datris.calls(RUN_ROUTE)] == ["proxy_timeout"]
    assert "Not starting another run" in outcome.log
    assert outcome.xcom("run_tap")["publisher_token"] == datris.run_logs(FAULT_TAP)[0]["publisherToken"]
    assert_clean(datris, outcome)


NEVER_STARTED = {
    "reset": Fault(RUN_ROUTE, "reset"),
    "503": Fault(RUN_ROUTE, "fail", status=503),
    "proxy_502_page": Fault(RUN_ROUTE, "html", status=502),
}


@pytest.mark.parametrize("dag_id", MODES)
@pytest.mark.parametrize("case", sorted(NEVER_STARTED))
def test_run_call_stopped_before_the_tap_ran_is_retried_by_airflow_once(datris, datris_dag_runner, dag_id, case):
    NEVER_STARTED[case].apply(datris)

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 2
    assert [call.fault for call in datris.calls(RUN_ROUTE)] == [NEVER_STARTED[case].kind, None]
    assert len(datris.script_runs(FAULT_TAP)) == 1
    if case != "503":
        assert "the run never started on Datris" in outcome.log
    assert_clean(datris, outcome)


# -- the pipeline wait ------------------------------------------------------------------------------


@pytest.mark.parametrize("dag_id", MODES)
def test_poll_failures_beyond_max_poll_failures_retry_and_attach_to_the_run(
    datris, datris_dag_runner, retry_has_read_the_history, dag_id
):
    # Two polls get through (their events are printed), then the polls fail until the try gives up.
    # The job starts at once and ends only once the retry has looked: the clock stands still till then.
    datris.scheduler_tick_seconds = 0
    datris.hold_clock_until(retry_has_read_the_history(BUDGET.poll_burst))
    datris.delay(STATUS, 0.01, times=2)
    datris.fail(STATUS, 503, times=BUDGET.poll_burst)

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    assert outcome.try_numbers["run_tap"] == 2
    assert len(datris.calls(RUN_ROUTE)) == 1
    assert "Gave up polling Datris after 3 failed polls in a row" in outcome.log
    assert "instead of starting another" in outcome.log
    # The first try printed what it saw before giving up; the retry printed the whole story again.
    started = "[orders] JobRunner begin: Process started"
    assert [count_lines(text, [started])[started] for text in split_attempts(outcome.log)] == [1, 1]
    assert_clean(datris, outcome)


@pytest.mark.skipif(
    tuple(int(part) for part in metadata.version("apache-airflow-core").split(".")[:2]) < (3, 3),
    reason="needs the task state store (Airflow 3.3+) to know the previous attempt's run once it ended",
)
def test_retry_after_the_pipeline_ended_unseen_does_not_post_again(datris, datris_dag_runner, monkeypatch):
    # Every poll times out at the client, but the server still handles it, so the job ends meanwhile.
    extra = {"retries": 0, "retry_delay": 0.01, "timeout": BUDGET.request_timeout}
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris.url, api_key=KEY, extra=extra))
    datris.tap(FAULT_TAP).job_seconds = 4.0
    datris.delay(STATUS, BUDGET.request_timeout + 0.3, times=BUDGET.max_poll_failures + 1)

    outcome = datris_dag_runner.run("fault_sync")

    assert outcome.try_numbers["run_tap"] == 2
    assert_clean(datris, outcome)


KILL_FAULTS = {
    "503": Fault("POST /job/kill", "fail", status=503),
    "reset": Fault("POST /job/kill", "reset"),
    "slower_than_the_kill_budget": Fault("POST /job/kill", "delay", seconds=2.0),
}


@pytest.mark.parametrize(
    ("dag_id", "case"),
    [
        ("fault_kill_sync", "503"),
        ("fault_kill_deferred", "reset"),
        ("fault_wait_timeout_deferred", "slower_than_the_kill_budget"),
    ],
)
def test_kill_faults_during_a_timeout_still_fail_the_task_cleanly(datris, datris_dag_runner, dag_id, case):
    KILL_FAULTS[case].apply(datris)

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == 1
    assert datris.calls("POST /job/kill"), "the provider must at least ask Datris to kill the job"
    token = outcome.xcom("run_tap", "pipeline_tokens")[0]
    if datris.kills != [token]:
        assert (
            f"Datris did not kill pipeline job {token}" in outcome.log
            or f"Could not reach Datris to kill pipeline job {token}" in outcome.log
        )
    assert_clean(datris, outcome, tap_name=ENDLESS_TAP, expected_state="failed")


def test_the_key_is_in_no_repr():
    from datris_provider.client.api import DatrisClient
    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.client.settings import ClientSettings

    settings = ClientSettings(base_url="http://127.0.0.1:1", api_key=KEY)

    for thing in (settings, DatrisClient(settings), AsyncDatrisClient(settings)):
        assert KEY not in repr(thing)


# -- the soak -----------------------------------------------------------------------------------------


@pytest.mark.skipif(
    tuple(int(part) for part in metadata.version("apache-airflow-core").split(".")[:2]) < (3, 3),
    reason="before 3.3 no task state tells a retry that a run which ended meanwhile was its own, so the tap "
    "runs again (documented); the soak's no-double-fire promise needs the task state",
)
def test_seeded_soak_has_no_double_fire_no_lost_or_repeated_line_and_no_leak(datris, datris_dag_runner, capfd):
    summary = run_soak(
        datris,
        datris_dag_runner.run,
        runs=SOAK_RUNS,
        seed=SOAK_SEED,
        dag_ids=MODES,
        prepare=prepare,
        tap_name=FAULT_TAP,
        api_key=KEY,
        budget=BUDGET,
    )

    with capfd.disabled():
        print("\n" + summary.line())
    assert summary.problems == []
    assert summary.runs == SOAK_RUNS
    assert summary.faults > SOAK_RUNS
    assert (summary.double_fires, summary.lost_lines, summary.duplicated_lines, summary.key_leaks) == (0, 0, 0, 0)
