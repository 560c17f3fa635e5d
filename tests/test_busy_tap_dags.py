"""A busy tap, through real DAGs: a window never reports another run as its own (README table).

"Another client" is the stand-in playing someone else's ``POST /tap/run`` of the same tap: on the
task's first read of the tap (the run is in flight when the task checks) or just before its run call
(the task's call is debounced).
"""

from __future__ import annotations

import pytest

from datris_provider.testing import StandInTap

pytestmark = pytest.mark.dag

TAP = "shared_orders_tap"
OTHER = {"since": "another-window"}


@pytest.fixture
def shared_tap(datris):
    datris.add_tap(StandInTap(name=TAP, target_pipeline="orders", records=11, script_seconds=2.0))
    return datris


def _runs(datris, client):
    return [run for run in datris.journal.script_runs(TAP) if run.client == client]


def _assert_reports_its_own_window(outcome, datris):
    (own,) = _runs(datris, "airflow")
    (other,) = _runs(datris, "other")
    assert set(own.params) == {"since"} and own.params != OTHER
    assert other.params == OTHER
    assert outcome.xcom("run_tap", "publisher_token") == own.publisher_token != other.publisher_token
    assert outcome.xcom("run_tap")["row_count"] == 11
    # Datris's own "busy" is the script phase (lastRunStatus: running); the loads after it queue per table.
    assert other.ended_at_ms is not None and other.ended_at_ms <= own.started_at_ms


@pytest.mark.parametrize("dag_id", ["busy_window", "busy_window_deferred", "busy_window_taskflow"])
def test_a_window_waits_for_a_run_in_flight_then_runs_its_own(shared_tap, datris_dag_runner, dag_id):
    shared_tap.other_client_run(TAP, params=OTHER, when="on_tap_read")

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    _assert_reports_its_own_window(outcome, shared_tap)
    assert "is busy: a run of the tap is in flight on Datris" in outcome.log
    assert "starting this task's own run" in outcome.log


@pytest.mark.parametrize("dag_id", ["busy_window", "busy_window_deferred"])
def test_a_debounced_window_posts_again_once_the_tap_is_idle(shared_tap, datris_dag_runner, dag_id):
    shared_tap.other_client_run(TAP, params=OTHER, when="before_next_run")

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    _assert_reports_its_own_window(outcome, shared_tap)
    assert "debounced this task's run call" in outcome.log
    # The debounced call ran nothing; the task slept past the window the answer reported, then posted once.
    assert len(shared_tap.calls("POST /tap/run")) == 2


@pytest.mark.parametrize("dag_id", ["busy_no_params", "busy_no_params_deferred"])
def test_without_params_the_task_follows_the_run_in_flight(shared_tap, datris_dag_runner, dag_id):
    shared_tap.other_client_run(TAP, params=None, when="on_tap_read")

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == "success"
    assert _runs(shared_tap, "airflow") == []
    (other,) = _runs(shared_tap, "other")
    assert outcome.xcom("run_tap", "publisher_token") == other.publisher_token
    assert "follows that run instead of starting a second one" in outcome.log


def test_if_busy_join_lets_a_window_follow_the_run_in_flight(shared_tap, datris_dag_runner):
    shared_tap.other_client_run(TAP, params=OTHER, when="on_tap_read")

    outcome = datris_dag_runner.run("busy_window_join")

    assert outcome.state == "success"
    assert _runs(shared_tap, "airflow") == []


def test_if_busy_fail_fails_without_posting(shared_tap, datris_dag_runner):
    shared_tap.other_client_run(TAP, params=OTHER, when="on_tap_read")

    outcome = datris_dag_runner.run("busy_window_fail")

    assert outcome.task_states["run_tap"] == "failed"
    assert shared_tap.calls("POST /tap/run") == []
    assert "if_busy='fail', so it did not start its own run" in outcome.log


def test_a_wait_past_busy_timeout_fails_saying_nothing_was_loaded(shared_tap, datris_dag_runner):
    shared_tap.tap(TAP).script_seconds = 60.0  # far longer than busy_timeout, on the stand-in's clock
    shared_tap.other_client_run(TAP, params=OTHER, when="on_tap_read")

    outcome = datris_dag_runner.run("busy_window_short_wait")

    assert outcome.task_states["run_tap"] == "failed"
    assert _runs(shared_tap, "airflow") == []
    assert "stayed busy for" in outcome.log
    assert "nothing was loaded for it" in outcome.log
