"""The stand-in Datris server: a faithful fake of the Datris REST API for tests and local demos.

This module keeps the names the stand-in has always been imported by; the server itself is a
package of small modules (see :mod:`datris_provider.testing.stand_in` for the parts).

The points a client most easily gets wrong are all modelled:

* ``POST /tap/run`` blocks while the "script" runs, answers HTTP 200 even when the run fails, defaults
  ``mode`` to ``test`` and debounces a second ``mode=run`` call for 5 s from the start of the first.
* The pipeline load happens *after* the run answers, on the stand-in's clock: the 5 s scheduler tick
  starts queued jobs, jobs run for their duration writing events as they go, a running job can be
  killed, and a run nobody polls still ends. Status polls only observe.
* Enabled cron taps are fired by the stand-in's scheduler; other clients' runs can be staged.
* The rollup (``withrollup=true``) is computed from the stored events with the server's own rules.
* Errors come in the two generations the real server has: ``{"error": ...}`` JSON or a plain-text
  Java stack trace served as ``application/json``.
* API keys and capabilities, and fault injection (failures, delays, connection resets, proxy pages,
  garbage bodies and a gateway timeout that cuts the blocking run while it carries on).
* ``POST /pipeline/upload`` (multipart file ingestion into a registered pipeline) answers the bare
  pipelineToken as plain text, and stages the file through the same StreamNotifier events as a tap.
* ``GET /lineage`` and ``GET /lineage/{type}/{name}``: the configuration graph
  source → tap → pipeline → dataset → catalog, with no key required.
* ``POST /tap/test``, ``GET /health/services`` and ``GET /mcp/tools`` (the tools a key may see).
"""

from __future__ import annotations

from datris_provider.testing.injection import FAULT_KINDS
from datris_provider.testing.model import (
    DEFAULT_PIPELINE_ERROR,
    DEFAULT_PIPELINE_WARNING,
    RecordedRequest,
    RecordedUpload,
    ScriptRun,
    StandInJob,
    StandInPipeline,
    StandInTap,
)
from datris_provider.testing.rollup import build_rollup
from datris_provider.testing.stand_in import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_TIME_SCALE, StandInDatris
from datris_provider.testing.wire import API_PREFIX, ERROR_STYLES, format_datris_time, format_elapsed

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_PIPELINE_ERROR",
    "DEFAULT_PIPELINE_WARNING",
    "DEFAULT_TIME_SCALE",
    "ERROR_STYLES",
    "FAULT_KINDS",
    "RecordedRequest",
    "RecordedUpload",
    "ScriptRun",
    "StandInDatris",
    "StandInJob",
    "StandInPipeline",
    "StandInTap",
    "build_rollup",
    "format_datris_time",
    "format_elapsed",
]
