from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from datris_provider.testing import StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable

# OpenLineage reads its transport when Airflow loads plugins, so it is set before Airflow is imported.
OPENLINEAGE_EVENTS = Path(tempfile.mkdtemp(prefix="datris-openlineage-")) / "events.jsonl"
os.environ.setdefault(
    "AIRFLOW__OPENLINEAGE__TRANSPORT",
    json.dumps({"type": "file", "log_file_path": str(OPENLINEAGE_EVENTS), "append": True}),
)

STANDARD_TAPS = [
    StandInTap(name="orders_api_to_postgres", target_pipeline="orders", records=42),
    StandInTap(name="customers_pg_to_snowflake", target_pipeline="customers", records=7),
    StandInTap(name="nightly_cron_tap", cron="0 0 6 * * ?"),
    StandInTap(name="disabled_cron_tap", cron="0 0 6 * * ?", enabled=False),
    StandInTap(name="broken_tap", error="Traceback: KeyError 'page' (tap script line 12)"),
    StandInTap(name="empty_tap", records=0),
    StandInTap(name="orphan_tap", target_pipeline=None),
    StandInTap(name="bad_load_tap", pipeline_outcome="error"),
    StandInTap(name="dq_warning_tap", pipeline_outcome="warning"),
    StandInTap(name="docs_tap", tap_type="document", documents=2, target_pipeline="documents"),
    StandInTap(name="slow_tap", script_seconds=0.3),
    StandInTap(name="endless_tap", job_seconds=None),
]


@pytest.fixture
def datris(datris_stand_in: StandInDatris, datris_connection: str) -> StandInDatris:
    """The stand-in with the taps the test DAGs use, and the default connection pointing at it."""
    for tap in STANDARD_TAPS:
        datris_stand_in.add_tap(replace(tap))
    return datris_stand_in


@pytest.fixture
def retry_has_read_the_history(datris: StandInDatris) -> Callable[[int], Callable[[], bool]]:
    """``retry_has_read_the_history(n)`` is a condition that holds once ``n`` injected failures were
    served and, after them, the run history was read again: the retry has made its plan. Held on it
    (``datris.hold_clock_until``), a load is still running when the retry looks, on any machine; before
    Airflow 3.3 that is the only way a retry knows its earlier try's run."""

    def condition(failures: int) -> Callable[[], bool]:
        reads_after_failures: list[int] = []

        def holds() -> bool:
            reads = len(datris.calls("GET /tap/logs"))
            if not reads_after_failures:
                if len([request for request in datris.requests if request.fault == "fail"]) < failures:
                    return False
                reads_after_failures.append(reads)
            return reads > reads_after_failures[0]

        return holds

    return condition
