"""Datris schedules the tap, Airflow reacts: the report DAG runs once per run whose data landed.

``orders_nightly`` has a cron in Datris, so Datris's scheduler fires it and no Airflow task may (the
one-scheduler rule). The asset's watcher reads Datris's run log in the triggerer and emits one asset
event per run whose pipelines ended ``success`` or ``warning``; the event's extra names the run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from datris_provider.assets import datris_tap_runs_asset

ORDERS_NIGHTLY_RUNS = datris_tap_runs_asset(
    "orders_nightly",  # datris://default/taps/orders_nightly/runs
    poll_interval=60,
    # fire_on=["landed", "failed"],  # also react to failed runs (e.g. to page someone)
    # catch_up_runs=1,  # at the very first start, also react to the newest run already there
)

with DAG("datris_orders_reaction", schedule=[ORDERS_NIGHTLY_RUNS], start_date=datetime(2026, 5, 1), catchup=False):

    @task
    def build_report(*, triggering_asset_events: Any = None) -> list[str]:
        """One line per Datris run that started this DAG run (several, if they landed close together)."""
        events = triggering_asset_events[ORDERS_NIGHTLY_RUNS] if triggering_asset_events else []
        lines = []
        for event in events:
            run = event.extra["payload"]
            lines.append(f"{run['run_time']}: {run['record_count']} records, {run['status']} ({run['publisher']})")
        return lines

    build_report()
