"""Test helpers for code that talks to Datris: a faithful stand-in Datris API server.

``StandInDatris`` serves the Datris REST API on a local port (built on pytest-httpserver) with the
real server's quirks and with fault injection, so clients can be tested against realistic behaviour::

    from datris_provider.testing import StandInDatris

    with StandInDatris() as datris:
        datris.add_tap(name="orders_api", records=42)
        datris.add_pipeline("invoices", outcome="warning")  # a target for POST /pipeline/upload
        ...  # point the client at datris.url

Run ``python -m datris_provider.testing serve --port 8080`` for a local demo server.
"""

from __future__ import annotations

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

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_PIPELINE_ERROR",
    "DEFAULT_PIPELINE_WARNING",
    "RecordedRequest",
    "RecordedUpload",
    "ScriptRun",
    "StandInDatris",
    "StandInJob",
    "StandInPipeline",
    "StandInTap",
]
