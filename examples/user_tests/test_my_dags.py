"""A DAG project's own tests, against the stand-in Datris that ships with the provider.

The project's ``pytest.ini`` opts in to an isolated Airflow home and names ``datris-stand-in.toml``,
which declares the taps ``my_orders`` and ``my_customers`` for every test. Run with ``pytest`` here.
"""

from __future__ import annotations

from datetime import datetime, timezone


def test_a_daily_run_loads_its_own_day(datris_stand_in, datris_dag_runner):
    outcome = datris_dag_runner.run("my_orders_daily", logical_date=datetime(2026, 5, 2, tzinfo=timezone.utc))

    assert outcome.state == "success"
    assert outcome.xcom("load_orders", "row_count") == 42
    journal = datris_stand_in.journal
    journal.assert_posted_once("my_orders", params={"since": "2026-05-01", "until": "2026-05-02"})
    journal.assert_nothing_killed()
    journal.assert_no_key_sent()


def test_status_polls_that_fail_twice_are_ridden_out(datris_stand_in, datris_dag_runner):
    datris_stand_in.fail("GET /pipeline/status", 503, times=2)

    outcome = datris_dag_runner.run("my_orders_daily")

    assert outcome.state == "success"
    datris_stand_in.journal.assert_posted_once("my_orders")


def test_a_failed_load_fails_the_task_without_a_second_run(datris_stand_in, datris_dag_runner):
    datris_stand_in.tap("my_orders").pipeline_outcome = "error"

    outcome = datris_dag_runner.run("my_orders_daily")

    assert outcome.task_states["load_orders"] == "failed"
    assert "is of type numeric" in outcome.log  # the loader's error, streamed into the task log
    datris_stand_in.journal.assert_posted_once("my_orders")
