"""Every DAG in examples/ runs against the stand-in, as the README promises."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.dag


@pytest.fixture
def fast_polls(datris_dag_runner, monkeypatch):
    def speed_up(dag_id: str) -> None:
        for task in datris_dag_runner.get_dag(dag_id).tasks:
            for attribute in ("poll_interval", "poke_interval"):
                if hasattr(task, attribute):
                    monkeypatch.setattr(task, attribute, 0.05)

    return speed_up


def test_daily_tap_example(datris, datris_dag_runner, fast_polls):
    fast_polls("datris_daily_tap")
    outcome = datris_dag_runner.run("datris_daily_tap")

    assert outcome.state == "success"
    assert outcome.xcom("report") == "Datris loaded 7 customer rows"


def test_backfill_example_sends_each_runs_window(datris, datris_dag_runner, fast_polls):
    from datetime import datetime, timezone

    fast_polls("datris_orders_backfill")
    datris.debounce_seconds = 0
    for day in (1, 2, 3):
        outcome = datris_dag_runner.run(
            "datris_orders_backfill", logical_date=datetime(2026, 5, day, tzinfo=timezone.utc)
        )
        assert outcome.state == "success"

    # A manual run at a logical date covers the day that ends there.
    windows = [call.json["params"] for call in datris.calls("POST /tap/run")]
    assert windows == [
        {"since": "2026-04-30", "until": "2026-05-01"},
        {"since": "2026-05-01", "until": "2026-05-02"},
        {"since": "2026-05-02", "until": "2026-05-03"},
    ]


def test_deferrable_example(datris, datris_dag_runner, fast_polls):
    fast_polls("datris_deferrable_tap")
    outcome = datris_dag_runner.run("datris_deferrable_tap")

    assert outcome.state == "success"
    assert outcome.xcom("ingest_orders")["row_count"] == 42


def test_sensor_example(datris, datris_dag_runner, fast_polls):
    fast_polls("datris_pipeline_sensor")
    outcome = datris_dag_runner.run("datris_pipeline_sensor")

    assert outcome.state == "success"
    assert outcome.xcom("wait_for_orders")["pipeline_status"] == "success"


def test_asset_example_producer(datris, datris_dag_runner, fast_polls):
    from test_asset_dags import ORDERS_URI, _asset_events

    datris_dag_runner.run("datris_orders_report")
    fast_polls("datris_orders_ingest")
    before = _asset_events(ORDERS_URI)
    outcome = datris_dag_runner.run("datris_orders_ingest")

    assert outcome.state == "success"
    assert outcome.xcom("ingest_orders")["pipeline_status"] == "success"
    assert _asset_events(ORDERS_URI) == before + 1  # the orders data landed: the report DAG is due
