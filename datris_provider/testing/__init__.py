"""Test helpers for code that talks to Datris: a faithful stand-in Datris API server.

``StandInDatris`` serves the Datris REST API on a local port (built on pytest-httpserver) with the
real server's quirks and with fault injection, so clients can be tested against realistic behaviour::

    from datris_provider.testing import StandInDatris

    with StandInDatris() as datris:
        datris.add_tap(name="orders_api", records=42, job_seconds=3)
        datris.add_pipeline("invoices", outcome="warning")  # a target for POST /pipeline/upload
        ...  # point the client at datris.url
        datris.journal.assert_posted_once("orders_api")

Everything on the server side runs on the stand-in's clock (``datris.clock``): 50 times real time by
default, or ``StandInDatris(clock="manual")`` for a clock that moves only with
``datris.clock.advance(seconds)``. Status polls only observe.

Run ``python -m datris_provider.testing serve --port 8080`` for a local demo server.
"""

from __future__ import annotations

from datris_provider.testing.clock import StandInClock
from datris_provider.testing.journal import Journal
from datris_provider.testing.model import RecordedKill
from datris_provider.testing.server import (
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_PIPELINE_ERROR,
    DEFAULT_PIPELINE_WARNING,
    RecordedRequest,
    RecordedUpload,
    ScriptRun,
    StandInDatris,
    StandInJob,
    StandInPipeline,
    StandInTap,
)
from datris_provider.testing.stand_in import DEFAULT_TIME_SCALE

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_PIPELINE_ERROR",
    "DEFAULT_PIPELINE_WARNING",
    "DEFAULT_TIME_SCALE",
    "Journal",
    "RecordedKill",
    "RecordedRequest",
    "RecordedUpload",
    "ScriptRun",
    "StandInClock",
    "StandInDatris",
    "StandInJob",
    "StandInPipeline",
    "StandInTap",
]
