from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from datris_provider.testing import StandInDatris, StandInTap

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
