"""A stand-in Datris server: a faithful fake of the Datris REST API for tests and local demos.

The behaviour follows the contract in the project's Datris API notes (the server source is the
reference, not the short public docs). The points a client most easily gets wrong are all modelled:

* ``POST /tap/run`` blocks while the "script" runs, answers HTTP 200 even when the run fails, defaults
  ``mode`` to ``test`` and debounces a second ``mode=run`` call for 5 s from the start of the first.
* The pipeline load happens *after* the run answers. Here it is driven by polls, not by the clock:
  each ``GET /pipeline/status`` call for a token moves that token's jobs one step forward, so a test
  decides exactly when a job starts and ends.
* The rollup (``withrollup=true``) is computed from the stored events with the server's own rules.
* Errors come in the two generations the real server has: ``{"error": ...}`` JSON or a plain-text
  Java stack trace served as ``application/json``.
* API keys and capabilities, and fault injection (failures, delays, connection resets, proxy pages,
  garbage bodies and a gateway timeout that cuts the blocking run while it carries on).
* ``POST /pipeline/upload`` (multipart file ingestion into a registered pipeline) answers the bare
  pipelineToken as plain text, and stages the file through the same StreamNotifier events as a tap.
* ``GET /lineage`` and ``GET /lineage/{type}/{name}``: the configuration graph
  source → tap → pipeline → dataset → catalog, with no key required.

The server depends only on the standard library, ``pytest_httpserver`` and ``werkzeug``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_httpserver import Error as HTTPServerInternalError
from pytest_httpserver import HTTPServer, URIPattern
from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

    from werkzeug.datastructures import FileStorage

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
    "build_rollup",
    "format_datris_time",
    "format_elapsed",
]

API_PREFIX = "/api/v1"

DEFAULT_PIPELINE_ERROR = 'Process completed, error: column "amount" is of type numeric but expression is of type text'
DEFAULT_PIPELINE_WARNING = "Data quality rule 'amount_not_negative' flagged 1 record(s)"

# Tap param keys become environment variable names, so the server refuses anything else.
PARAM_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# A job with no terminal event is reported as timed_out once its first event is this old.
TIMED_OUT_AFTER_MS = 8 * 60 * 60 * 1000
TERMINAL_JOB_STATUSES = frozenset({"success", "warning", "error", "timed_out"})

RUN_LOG_ROWS_RETURNED = 50
STATUS_SUMMARY_PAGE_SIZE = 20
DEFAULT_TEST_LIMIT = 20
PREVIEW_RECORDS_MAX = 20
LOGS_ALL_DEFAULT_LIMIT = 2000
LOGS_ALL_MAX_LIMIT = 5000
LOGS_ALL_DEFAULT_WINDOW_MS = 30 * 24 * 60 * 60 * 1000

DEFAULT_TAP_RUN_TIMEOUT_SECONDS = 3600
DEFAULT_TAP_SCRIPT_TIMEOUT_SECONDS = 300

ERROR_STYLES = ("json", "stacktrace")
PIPELINE_OUTCOMES = ("success", "warning", "error")
TAP_TYPES = ("structured", "document")

# Scope keys the server accepts in a capability string (resource:action:k=v,...).
CAPABILITY_SCOPE_KEYS = frozenset({"catalog", "database", "collection", "destination_kind", "_type", "owner"})

# JobState names of the server's in-memory GlobalJobContext.
JOB_INITIALIZED = "INITIALIZED"
JOB_PROCESSING = "PROCESSING"
JOB_COMPLETED = "COMPLETED"
JOB_CANCELLED = "CANCELLED"

FAULT_KINDS = ("fail", "delay", "reset", "html", "garbage", "proxy_timeout")

# POST /pipeline/upload: the size limit in front of the controller (Spring multipart / nginx) and the
# chunk size used to count an upload's bytes without holding the file in memory.
DEFAULT_MAX_UPLOAD_BYTES = 1024**3
UPLOAD_CHUNK_BYTES = 64 * 1024
# FileUploadAPIController treats these (case-insensitive) endings as archives.
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tar", ".jar")
# The dataset a pipeline lands into unless add_pipeline says otherwise; "{name}" is the pipeline name.
DEFAULT_DATASET = "postgres:datris.public.{name}"

# Lineage (LineageAPIController / LineageService).
LINEAGE_NODE_TYPES = ("source", "tap", "pipeline", "dataset", "catalog")
LINEAGE_DIRECTIONS = ("up", "down", "both")
LINEAGE_FRESHNESS_WINDOW_MS = 30 * 24 * 60 * 60 * 1000


# --------------------------------------------------------------------------------------------------
# Formatting helpers shared by events, rollups and run logs
# --------------------------------------------------------------------------------------------------


def now_epoch_ms() -> int:
    """Return the wall-clock time in epoch milliseconds, as the server stamps events."""
    return int(time.time() * 1000)


def format_datris_time(epoch_ms: int) -> str:
    """Format epoch milliseconds the way the server writes ``dateTime``: ``yyyy-MM-dd HH:mm:ss UTC``.

    :param epoch_ms: the instant in milliseconds since the epoch.
    """
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_elapsed(elapsed_ms: int) -> str:
    """Render a duration like the server's ``ElapsedTimeUtil``: ``3.25 sec``, ``1 min 3.25 sec``, ...

    Hours and minutes are shown only when they are non-zero at the front; the part after the decimal
    point is hundredths of a second.

    :param elapsed_ms: the duration in milliseconds (negative values are treated as 0).
    """
    elapsed_ms = max(0, int(elapsed_ms))
    hours, remainder = divmod(elapsed_ms, 3_600_000)
    minutes, remainder = divmod(remainder, 60_000)
    seconds, millis = divmod(remainder, 1000)
    seconds_text = f"{seconds}.{millis // 10:02d} sec"
    if hours:
        return f"{hours} hr {minutes} min {seconds_text}"
    if minutes:
        return f"{minutes} min {seconds_text}"
    return seconds_text


def _drop_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out keys whose value is None, as Gson does without ``serializeNulls``."""
    return {key: value for key, value in values.items() if value is not None}


def _gson_dumps(payload: Any) -> bytes:
    """Serialise like Gson's defaults: compact, UTF-8, with its HTML-safe escapes.

    Gson escapes ``< > & = '`` inside strings. None of these characters can appear in JSON outside a
    string, so replacing them in the whole text only touches string contents.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("=", "\\u003d"),
        ("'", "\\u0027"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode("utf-8")


def _compact_json(value: Any) -> str:
    """Compact JSON text of an object or array param value, as the script receives it."""
    return _gson_dumps(value).decode("utf-8")


def _param_value_text(value: Any) -> str:
    """Turn one tap param value into the text of its ``DATRIS_TAP_PARAM_<key>`` variable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _compact_json(value)
    return str(value)


def _seconds_text(seconds: float) -> str:
    """Seconds as /version writes them: an integer string when the value is whole."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


# --------------------------------------------------------------------------------------------------
# Rollup: the job and aggregate statuses computed from events (PipelineStatusUtil rules)
# --------------------------------------------------------------------------------------------------


def _job_rollup(job_events: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
    first_event, last_event = job_events[0], job_events[-1]
    error_events = [event for event in job_events if event.get("code") == "error"]
    runner_finished = any(
        event.get("processName") == "JobRunner" and event.get("state") == "end" and event.get("code") == "info"
        for event in job_events
    )
    has_warning = any(event.get("code") == "warning" for event in job_events)

    # The order matters: an error anywhere wins, even before the JobRunner end event.
    if error_events:
        status = "error"
    elif runner_finished and has_warning:
        status = "warning"
    elif runner_finished:
        status = "success"
    elif now_ms - int(first_event["epoch"]) > TIMED_OUT_AFTER_MS:
        status = "timed_out"
    else:
        status = "processing"

    if status in TERMINAL_JOB_STATUSES:
        elapsed_ms = int(last_event["epoch"]) - int(first_event["epoch"])
    else:
        elapsed_ms = now_ms - int(first_event["epoch"])

    job: dict[str, Any] = {
        "pipelineToken": first_event.get("pipelineToken"),
        "pipeline": first_event.get("pipeline"),
        "filename": first_event.get("filename"),
        "status": status,
        "startedAt": first_event.get("dateTime"),
        "lastEventAt": last_event.get("dateTime"),
        "elapsed": format_elapsed(elapsed_ms),
    }
    if status == "error":
        first_error = error_events[0]
        job["lastError"] = _drop_nulls(
            {"processName": first_error.get("processName"), "description": first_error.get("description")}
        )
    return _drop_nulls(job)


def build_rollup(events: list[dict[str, Any]], now_ms: int | None = None) -> dict[str, Any]:
    """Compute the ``rollup`` object of ``/pipeline/status?withrollup=true`` from status events.

    One job per distinct ``pipelineToken`` (sorted by its ``startedAt`` text); ``allDone`` is true when
    there is at least one job and every job is terminal; the aggregate status is ``processing`` with
    no jobs, else ``error`` if any job is error or timed_out, else ``warning`` if any job is warning,
    else ``success`` if all jobs succeeded, else ``processing``.

    :param events: the stored events in ascending order, as ``/pipeline/status`` returns them.
    :param now_ms: the current time in epoch ms (used for processing jobs and the 8 h time-out).
    """
    current_ms = now_epoch_ms() if now_ms is None else now_ms
    events_by_job: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        events_by_job.setdefault(str(event.get("pipelineToken")), []).append(event)
    jobs = [_job_rollup(job_events, current_ms) for job_events in events_by_job.values()]
    # A stable sort on the formatted text, like the server; same-second jobs keep their first-event order.
    jobs.sort(key=lambda job: str(job.get("startedAt", "")))

    statuses = [job["status"] for job in jobs]
    if not statuses:
        aggregate = "processing"
    elif any(status in ("error", "timed_out") for status in statuses):
        aggregate = "error"
    elif "warning" in statuses:
        aggregate = "warning"
    elif all(status == "success" for status in statuses):
        aggregate = "success"
    else:
        aggregate = "processing"
    all_done = bool(statuses) and all(status in TERMINAL_JOB_STATUSES for status in statuses)
    return {"allDone": all_done, "status": aggregate, "jobs": jobs}


# --------------------------------------------------------------------------------------------------
# Public data classes
# --------------------------------------------------------------------------------------------------


@dataclass
class StandInTap:
    """One tap known to the stand-in server, with the knobs that decide how its runs behave.

    The fields after ``owner`` are maintained by the server (they are what ``GET /tap`` reports);
    they can be preset to simulate history.

    :param name: the tap name.
    :param target_pipeline: the pipeline the run feeds; None means nothing is persisted
        (``persistedReason: no_target_pipeline``).
    :param cron: a 6-field Quartz expression such as ``0 0 6 * * ?``. The server does not refuse
        manual runs of cron taps; this only shows in the tap config.
    :param enabled: shown in the tap config; like the real server, disabled taps still run.
    :param tap_type: ``structured`` (one job per run) or ``document`` (one job per new document).
    :param records: how many records (documents, for a document tap) the script returns.
    :param documents: for a document tap, how many of the returned documents are new and become jobs.
        ``0`` with ``records > 0`` gives ``persisted: true`` with no publisherToken (all already ingested).
    :param logs: the script output lines; by default realistic ``[wrapper]`` lines are generated.
    :param script_seconds: how long ``POST /tap/run`` blocks while the script "runs".
    :param error: a script failure message; the run answers ``status: failure`` / ``run_error``.
    :param pipeline_outcome: how the jobs end: ``success``, ``warning`` or ``error``.
    :param pipeline_error: the description of the loader's error event for the ``error`` outcome.
    :param pipeline_warning: the description of the DataQuality warning for the ``warning`` outcome.
    :param loader: the loader process name used in events (None: no loader event on success).
    :param data_type: ``json`` or ``csv`` for a structured tap (document taps report ``document``).
    :param polls_until_start: status polls before the job's ``JobRunner`` starts (becomes killable).
    :param polls_until_end: status polls before the job ends; None means it never ends by itself.
    :param description: the tap description (left out of JSON when None).
    :param owner: ``createdByKeyLabel``, used by ``owner=self`` capability scopes.
    :param gate: optional event the script phase waits for (on top of ``script_seconds``), so a test
        can hold a run "in progress" for exactly as long as it needs. The run times out like a real
        script if the gate stays closed past the server's time limit.
    :param source: the tap's declared source for lineage, e.g. ``postgres:crm.public.customers``. None
        gives the server's last-resort source identity ``tap:<name>`` (node ``source:tap:<name>``).
    """

    name: str
    target_pipeline: str | None = "orders"
    cron: str | None = None
    enabled: bool = True
    tap_type: str = "structured"
    records: int = 3
    documents: int = 2
    logs: list[str] | None = None
    script_seconds: float = 0.0
    error: str | None = None
    pipeline_outcome: str = "success"
    pipeline_error: str = DEFAULT_PIPELINE_ERROR
    pipeline_warning: str = DEFAULT_PIPELINE_WARNING
    loader: str | None = "PostgresLoader"
    data_type: str = "json"
    polls_until_start: int = 1
    polls_until_end: int | None = 2
    description: str | None = None
    owner: str = "anonymous"
    gate: threading.Event | None = field(default=None, repr=False, compare=False)
    # Maintained by the server.
    script_path: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    version: int = 1
    retry_count: int = 0
    last_run_status: str | None = None
    last_run_time: str | None = None
    last_run_record_count: int | None = None
    last_run_error: str | None = None
    last_run_data_type: str | None = None
    last_run_columns: list[str] | None = None
    last_run_trigger: str | None = None
    last_test_run_status: str | None = None
    last_test_run_time: str | None = None
    last_test_run_record_count: int | None = None
    last_test_run_error: str | None = None
    last_test_run_data_type: str | None = None
    # Lineage (kept last so positional construction of the older fields is unchanged).
    source: str | None = None

    @property
    def lineage_source(self) -> str:
        """The source identity lineage uses: the declared ``source``, else ``tap:<name>``."""
        return self.source if self.source else f"tap:{self.name}"

    def validate(self) -> None:
        """Raise ValueError for settings the stand-in cannot act on."""
        if not self.name:
            raise ValueError("a tap needs a name")
        if self.tap_type not in TAP_TYPES:
            raise ValueError(f"tap_type must be one of {TAP_TYPES}, not {self.tap_type!r}")
        if self.pipeline_outcome not in PIPELINE_OUTCOMES:
            raise ValueError(f"pipeline_outcome must be one of {PIPELINE_OUTCOMES}, not {self.pipeline_outcome!r}")
        if self.records < 0 or self.documents < 0 or self.polls_until_start < 0:
            raise ValueError("records, documents and polls_until_start cannot be negative")
        if self.polls_until_end is not None and self.polls_until_end < 0:
            raise ValueError("polls_until_end cannot be negative")


@dataclass
class StandInPipeline:
    """A pipeline configuration registered on the stand-in server (see :meth:`StandInDatris.add_pipeline`).

    Uploads (``POST /pipeline/upload``) need one; a tap's ``target_pipeline`` is registered implicitly
    with the defaults. Jobs fed by a *tap* keep following the tap's own outcome settings; jobs fed by
    an *upload* follow these.

    :param name: the pipeline name.
    :param outcome: how upload jobs end: ``success``, ``warning`` or ``error``.
    :param error: the description of the loader's error event for the ``error`` outcome.
    :param warning: the description of the DataQuality warning for the ``warning`` outcome.
    :param loader: the loader process name used in events (None: no loader event on success).
    :param polls_until_start: status polls before an upload job's ``JobRunner`` starts (killable).
    :param polls_until_end: status polls before an upload job ends; None means it never ends by itself.
    :param dataset: the dataset the pipeline lands into, as a lineage name such as
        ``postgres:datris.public.orders`` (default: ``postgres:datris.public.<name>``); None: no dataset.
    :param catalog: the catalog of the pipeline; gives a ``dataset → catalog`` lineage edge.
    :param data_type: the pipeline's source format (``csv``, ``json``, ``xml``, ``unstructured``...).
        Decides how an archive upload is split and is reported as the jobs' ``dataType``.
    :param records: the record count of each upload job; None counts the uploaded file's lines (less
        one header line for ``csv``), and 0 for archives (the stand-in does not unpack them).
    :param archive_entries: what an uploaded archive (``.zip``/``.tar``/``.jar``) holds: a count (entries
        are named ``<stem>-<i>.<data_type>``) or the entry names. A ``.gz`` always holds one entry
        (its name without ``.gz``); 0 entries gives the server's "No files found in archive" error.
    """

    name: str
    outcome: str = "success"
    error: str = DEFAULT_PIPELINE_ERROR
    warning: str = DEFAULT_PIPELINE_WARNING
    loader: str | None = "PostgresLoader"
    polls_until_start: int = 1
    polls_until_end: int | None = 2
    dataset: str | None = DEFAULT_DATASET
    catalog: str | None = None
    data_type: str = "csv"
    records: int | None = None
    archive_entries: int | list[str] = 1

    def __post_init__(self) -> None:
        if self.dataset == DEFAULT_DATASET:
            self.dataset = DEFAULT_DATASET.format(name=self.name)

    def validate(self) -> None:
        """Raise ValueError for settings the stand-in cannot act on."""
        if not self.name:
            raise ValueError("a pipeline needs a name")
        if self.outcome not in PIPELINE_OUTCOMES:
            raise ValueError(f"outcome must be one of {PIPELINE_OUTCOMES}, not {self.outcome!r}")
        if self.polls_until_start < 0 or (self.polls_until_end is not None and self.polls_until_end < 0):
            raise ValueError("polls_until_start and polls_until_end cannot be negative")
        if self.records is not None and self.records < 0:
            raise ValueError("records cannot be negative")
        if isinstance(self.archive_entries, int) and self.archive_entries < 0:
            raise ValueError("archive_entries cannot be negative")
        if not self.data_type:
            raise ValueError("a pipeline needs a data_type")


@dataclass(frozen=True)
class RecordedUpload:
    """The file part of one ``POST /pipeline/upload`` call, as received (the bytes are not kept).

    :param pipeline: the ``pipeline`` parameter (query string first, then form field), or None.
    :param filename: the file part's file name.
    :param size: the file's size in bytes.
    :param publishertoken: the ``publishertoken`` parameter as sent (None when absent).
    :param content_type: the file part's own content type, if it had one.
    """

    pipeline: str | None
    filename: str
    size: int
    publishertoken: str | None
    content_type: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received, in arrival order.

    :param method: the HTTP method.
    :param path: the path without the ``/api/v1`` prefix (e.g. ``/tap/run``).
    :param query: the query parameters (first value of each).
    :param json: the parsed JSON body, or None when there was none or it was not JSON.
    :param headers: the request headers with lower-cased names (e.g. ``headers["x-api-key"]``).
    :param fault: the kind of injected fault that answered this call (``fail``, ``delay``, ``reset``,
        ``html``, ``garbage``, ``proxy_timeout``), or None.
    :param upload: for a multipart call with a ``file`` part, what was uploaded (``json`` is None then).
    :param form: the non-file fields of a multipart body (first value of each); empty otherwise.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    headers: dict[str, str]
    fault: str | None = None
    upload: RecordedUpload | None = None
    form: dict[str, str] = field(default_factory=dict)

    @property
    def route(self) -> str:
        """The route key, e.g. ``POST /tap/run``."""
        return f"{self.method} {self.path}"


@dataclass
class StandInJob:
    """One pipeline job (the server's in-memory ``JobContext``).

    :param pipeline_token: the job id.
    :param publisher_token: the token shared by every job of the tap run.
    :param pipeline: the pipeline name.
    :param tap_name: the tap whose run submitted the job (``""`` for a job submitted by an upload).
    :param state: ``INITIALIZED`` (queued), ``PROCESSING`` (JobRunner running, killable),
        ``COMPLETED`` or ``CANCELLED``.
    :param polls: how many status polls have touched the job so far.
    """

    pipeline_token: str
    publisher_token: str
    pipeline: str
    tap_name: str
    state: str = JOB_INITIALIZED
    polls: int = 0
    record_count: int = 0
    data_type: str = "json"
    # Copied from the tap when the job is submitted, so later tap edits do not change queued jobs.
    outcome: str = "success"
    pipeline_error: str = DEFAULT_PIPELINE_ERROR
    pipeline_warning: str = DEFAULT_PIPELINE_WARNING
    loader: str | None = "PostgresLoader"
    polls_until_start: int = 1
    polls_until_end: int | None = 2
    # The staged file name (the upload's file name, or the archive entry); None for tap-fed jobs.
    filename: str | None = None


@dataclass
class ScriptRun:
    """What the stand-in "script" of one accepted ``POST /tap/run`` received and returned.

    :param tap_name: the tap.
    :param mode: the lower-cased mode.
    :param params: the ``params`` object as sent (empty when absent or not an object).
    :param env: the ``DATRIS_TAP_PARAM_<key>`` variables the script would get (key case kept).
    :param test_limit: ``DATRIS_TAP_TEST_LIMIT`` for test runs (None: no limit or not a test run).
    :param run_time: the run start time, as written in the run log.
    :param status: ``running`` until the run finishes, then ``success``/``failure``/``no_records``.
    :param publisher_token: the token of the submitted jobs, when there were any.
    :param error: the run's error text, if it failed.
    """

    tap_name: str
    mode: str
    params: dict[str, Any]
    env: dict[str, str]
    test_limit: int | None
    run_time: str
    status: str = "running"
    publisher_token: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------------------------------
# Internal records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Capability:
    resource: str
    action: str
    scope: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> _Capability:
        parts = text.strip().split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"capability {text!r} is not resource:action[:k=v,...]")
        scope: list[tuple[str, str]] = []
        if len(parts) == 3 and parts[2]:
            for pair in parts[2].split(","):
                key, separator, value = pair.partition("=")
                if not separator or key not in CAPABILITY_SCOPE_KEYS:
                    raise ValueError(f"capability {text!r} has an invalid scope entry {pair!r}")
                scope.append((key, value))
        return cls(parts[0], parts[1], tuple(scope))

    def covers(self, resource: str, action: str) -> bool:
        """Resource and action match (scope ignored, as in the interceptor's check)."""
        return self.resource in ("*", resource) and self.action in ("*", action)

    @property
    def owner_scope(self) -> str | None:
        return dict(self.scope).get("owner")


FULL_ACCESS = (_Capability("*", "*"),)


@dataclass(frozen=True)
class _ApiKey:
    value: str
    label: str
    capabilities: tuple[_Capability, ...]
    revoked: bool = False


@dataclass(frozen=True)
class _Caller:
    label: str
    capabilities: tuple[_Capability, ...]

    def holds(self, capability: str) -> bool:
        resource, action = capability.split(":", 1)
        return any(cap.covers(resource, action) for cap in self.capabilities)

    def owner_allowed(self, resource: str, action: str, owner: str | None) -> bool:
        """The controller's owner-scope check: some matching capability must accept this owner."""
        for cap in self.capabilities:
            if not cap.covers(resource, action):
                continue
            owner_scope = cap.owner_scope
            if owner_scope is None:
                return True
            wanted = self.label if owner_scope == "self" else owner_scope
            if owner is not None and owner == wanted:
                return True
        return False


ANONYMOUS = _Caller("anonymous", FULL_ACCESS)


@dataclass
class _Fault:
    kind: str
    remaining: int
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _RunLogRow:
    tap_name: str
    started_ms: int
    sequence: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class _FilePart:
    """What the stand-in keeps of an uploaded file: its name and counts, never its bytes."""

    filename: str
    size: int
    lines: int
    content_type: str | None


def _measure_file(storage: FileStorage) -> _FilePart:
    """Count an uploaded file's bytes and lines by streaming it in chunks, then close it."""
    size = 0
    newlines = 0
    last_byte = b""
    try:
        while True:
            chunk = storage.stream.read(UPLOAD_CHUNK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            newlines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    finally:
        storage.close()
    lines = newlines + (1 if size and last_byte != b"\n" else 0)
    return _FilePart(storage.filename or "", size, lines, storage.content_type or None)


@dataclass
class _Call:
    """A request reduced to plain data, so it can still be handled after the client is gone.

    A multipart body is parsed by werkzeug (large files are spooled to disk) instead of being read
    whole: ``body`` stays empty, ``form`` holds the plain fields and ``file_part`` the ``file`` part.
    """

    method: str
    full_path: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    content_type: str
    multipart: bool = False
    form: dict[str, str] = field(default_factory=dict)
    file_part: _FilePart | None = None
    multipart_error: bool = False

    @classmethod
    def from_request(cls, request: Request) -> _Call:
        full_path = request.path
        path = full_path[len(API_PREFIX) :] if full_path.startswith(API_PREFIX + "/") else full_path
        call = cls(
            method=request.method.upper(),
            full_path=full_path,
            path=path,
            query={key: request.args.get(key, "") for key in request.args},
            headers={name.lower(): value for name, value in request.headers.items()},
            body=b"",
            content_type=request.headers.get("Content-Type", ""),
        )
        if request.mimetype == "multipart/form-data":
            call.multipart = True
            call._read_multipart(request)
        else:
            call.body = request.get_data()
        return call

    def _read_multipart(self, request: Request) -> None:
        try:
            self.form = {key: request.form.get(key, "") for key in request.form}
            files = request.files
        except (HTTPException, ValueError):
            self.multipart_error = True
            return
        try:
            # Spring binds the first part named "file"; the others are only drained.
            storage = files.get("file")
            if storage is not None:
                self.file_part = _measure_file(storage)
        finally:
            for other in files.values():
                other.close()

    def param(self, name: str) -> str | None:
        """A Spring ``@RequestParam``: the query string first, then a multipart form field."""
        if name in self.query:
            return self.query[name]
        return self.form.get(name)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    def parsed_json(self) -> Any | None:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def sends_json(self) -> bool:
        media_type = self.content_type.split(";", 1)[0].strip().lower()
        return media_type == "application/json"


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> _Reply:
        return cls(status, _gson_dumps(payload))

    def to_response(self) -> Response:
        response = Response(self.body, status=self.status, content_type=self.content_type)
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


class _ConnectionCut(HTTPServerInternalError, ConnectionAbortedError):
    """Raised after the socket was shut down on purpose.

    Werkzeug treats a ConnectionError as a dropped connection (nothing is written, nothing logged),
    and pytest-httpserver does not collect its own Error type as a handler failure.
    """


class _MatchEveryPath(URIPattern):
    def match(self, uri: str) -> bool:
        return True


class _StandInHTTPServer(HTTPServer):
    """pytest-httpserver, except that a multipart body is not read into memory before dispatch.

    The base class calls ``request.get_data()`` on every request (and keeps the request in its log);
    for uploads that would hold the whole file in memory. Multipart requests are left to werkzeug's
    form parser instead, which spools large files to temporary files.
    """

    def application(self, request: Request) -> Response:
        if request.mimetype != "multipart/form-data":
            request.get_data()
        try:
            response = self.dispatch(request)
        finally:
            if request.mimetype == "multipart/form-data":
                request.close()  # closes any spooled file parts
        self.log.append((request, response))
        return response


# Capability per (method, path). _SKIPPED (None): no capability check, either because CapabilityRoutes
# skips the route or because it does not map it (unmapped routes are let through).
_SKIPPED = None
# Route templates of the lineage controller (its sub-paths carry path variables).
_LINEAGE_ROOT = "/lineage"
_LINEAGE_SUBTREE = "/lineage/**"
_LINEAGE_TEMPLATES = frozenset({_LINEAGE_ROOT, _LINEAGE_SUBTREE})
_UPLOAD_ROUTE = ("POST", "/pipeline/upload")
_ROUTE_CAPABILITIES: dict[tuple[str, str], str | None] = {
    ("GET", "/tap"): "tap:read",
    ("GET", "/taps"): "tap:read",
    ("POST", "/tap/run"): "tap:run",
    ("GET", "/tap/logs"): "job:read",
    ("GET", "/tap/logs/all"): _SKIPPED,  # unmapped in CapabilityRoutes: let through, key still validated
    ("GET", "/pipeline/status"): "job:read",
    ("POST", "/job/kill"): "job:kill",
    ("POST", "/pipeline/upload"): "document:upload",
    ("GET", "/version"): _SKIPPED,
    ("GET", "/mcp/tools"): _SKIPPED,
    # Lineage is unmapped in CapabilityRoutes and its controller never calls validate(): no key needed.
    ("GET", _LINEAGE_ROOT): _SKIPPED,
    ("GET", _LINEAGE_SUBTREE): _SKIPPED,
}
_JSON_BODY_ROUTES = frozenset({("POST", "/tap/run"), ("POST", "/job/kill")})

# Which Scala class "throws" on each route, for realistic stack traces.
_ROUTE_CONTROLLERS: dict[str, tuple[str, str]] = {
    "/tap": ("TapAPIController", "getTap"),
    "/taps": ("TapAPIController", "getTaps"),
    "/tap/run": ("TapAPIController", "runTap"),
    "/tap/logs": ("TapAPIController", "getTapLogs"),
    "/tap/logs/all": ("TapAPIController", "getAllTapLogs"),
    "/pipeline/status": ("PipelineStatusAPIController", "getStatus"),
    "/job/kill": ("QueryAPIController", "killJob"),
    "/pipeline/upload": ("FileUploadAPIController", "uploadRawFile"),
    "/mcp/tools": ("MCPToolsAPIController", "listTools"),
}

# MCP tools and the capability each needs, for GET /mcp/tools.
_MCP_TOOLS: tuple[tuple[str, str | None], ...] = (
    ("get_version", None),
    ("list_taps", "tap:read"),
    ("get_tap", "tap:read"),
    ("run_tap", "tap:run"),
    ("test_tap", "tap:run"),
    ("get_tap_logs", "job:read"),
    ("get_pipeline_status", "job:read"),
    ("kill_job", "job:kill"),
    ("upload_file", "document:upload"),
)

_NGINX_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _nginx_page(status: int) -> bytes:
    return _NGINX_PAGE.format(code=status, reason=_status_phrase(status)).encode("ascii")


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class StandInDatris:
    """A stand-in Datris API server on a local port, built on ``pytest_httpserver``.

    Use it as a context manager (or call :meth:`start`/:meth:`stop`), add taps with :meth:`add_tap`
    (and pipelines for uploads with :meth:`add_pipeline`) and point a client at :attr:`url`. Every
    request is recorded in :attr:`requests`; every uploaded file also in :attr:`uploads`.

    :param host: the interface to listen on.
    :param port: the port; 0 picks a free one.
    :param error_style: ``json`` (newer servers: ``{"error": "<first line>"}``, 401 for a missing key)
        or ``stacktrace`` (older controllers: HTTP 500 with a Java stack trace as plain text).
    :param debounce_seconds: the ``mode=run`` debounce window, counted from the start of the last
        accepted run of the same tap. 0 disables it.
    :param tap_run_timeout_seconds: the script time limit for ``mode=run`` (and non-test modes).
    :param tap_script_timeout_seconds: the script time limit for ``mode=test`` (for every mode when
        ``legacy_version`` is set).
    :param version: the version string reported by ``/version``.
    :param has_mcp_tools: False models an older server where ``/mcp/tools`` answers 404.
    :param legacy_version: model an older server: ``/version`` lacks the timeout, payload and newer
        flags, and one script time limit applies to every mode.
    :param request_log_limit: keep at most this many entries in :attr:`requests` (None: keep all);
        useful for a long-running demo server.
    :param debounce_clock: the monotonic clock of the debounce window (``time.monotonic``); tests can
        pass a fake clock to step over the window without sleeping.
    :param has_lineage: False models an older server without the lineage controller: every
        ``/lineage`` path answers Spring's 404.
    :param max_upload_bytes: the largest file ``POST /pipeline/upload`` accepts (default 1 GB); a larger
        file gets ``413 {"error":"File too large…"}`` before any key or parameter is checked.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        error_style: str = "json",
        debounce_seconds: float = 5.0,
        tap_run_timeout_seconds: float = DEFAULT_TAP_RUN_TIMEOUT_SECONDS,
        tap_script_timeout_seconds: float = DEFAULT_TAP_SCRIPT_TIMEOUT_SECONDS,
        version: str = "1.38.3",
        has_mcp_tools: bool = True,
        legacy_version: bool = False,
        request_log_limit: int | None = None,
        debounce_clock: Callable[[], float] = time.monotonic,
        has_lineage: bool = True,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ) -> None:
        if error_style not in ERROR_STYLES:
            raise ValueError(f"error_style must be one of {ERROR_STYLES}, not {error_style!r}")
        self.host = host
        self.port = port
        self.error_style = error_style
        self.debounce_seconds = debounce_seconds
        self.tap_run_timeout_seconds = tap_run_timeout_seconds
        self.tap_script_timeout_seconds = tap_script_timeout_seconds
        self.version = version
        self.has_mcp_tools = has_mcp_tools
        self.legacy_version = legacy_version
        self.request_log_limit = request_log_limit
        self.debounce_clock = debounce_clock
        self.has_lineage = has_lineage
        self.max_upload_bytes = max_upload_bytes
        # reset_state() puts these back, so a test can change them on a shared server.
        self._initial_settings: dict[str, Any] = {
            "error_style": error_style,
            "debounce_seconds": debounce_seconds,
            "tap_run_timeout_seconds": tap_run_timeout_seconds,
            "tap_script_timeout_seconds": tap_script_timeout_seconds,
            "version": version,
            "has_mcp_tools": has_mcp_tools,
            "legacy_version": legacy_version,
            "debounce_clock": debounce_clock,
            "has_lineage": has_lineage,
            "max_upload_bytes": max_upload_bytes,
        }

        self._httpserver: HTTPServer | None = None
        # One re-entrant lock guards all state; the Condition wakes wait_until_idle/wait_until_running.
        self._lock = threading.RLock()
        self._state_changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._busy_handlers = 0

        self.requests: list[RecordedRequest] = []
        self.uploads: list[RecordedUpload] = []
        self.kills: list[str] = []
        self._init_state()

    def _init_state(self) -> None:
        self._taps: dict[str, StandInTap] = {}
        self._pipelines: dict[str, StandInPipeline] = {}
        self._api_keys: dict[str, _ApiKey] = {}
        self._keys_required = False
        self._key_store_down = False
        self._faults: dict[str, list[_Fault]] = {}
        # tap name -> monotonic start of the last accepted mode=run call
        self._debounce_started: dict[str, float] = {}
        self._jobs: dict[str, StandInJob] = {}
        self._jobs_by_publisher: dict[str, list[str]] = {}
        self._events_by_publisher: dict[str, list[dict[str, Any]]] = {}
        self._events_by_pipeline: dict[str, list[dict[str, Any]]] = {}
        self._last_event_ms = 0
        self._run_logs: dict[str, list[_RunLogRow]] = {}
        self._run_log_sequence = 0
        self._script_runs: list[ScriptRun] = []
        self._running_runs: dict[str, int] = {}
        # Bumped by reset_state so runs started before a reset do not write into the new state.
        self._generation = getattr(self, "_generation", 0) + 1

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> StandInDatris:
        """Start listening (in a background thread) and return self."""
        if self._httpserver is not None:
            return self
        self._stopping.clear()
        server = _StandInHTTPServer(host=self.host, port=self.port, threaded=True)
        server.expect_request(_MatchEveryPath()).respond_with_handler(self._serve)
        server.start()
        self._httpserver = server
        self.port = server.port
        return self

    def stop(self) -> None:
        """Stop listening. Runs still sleeping in their script phase wake up and finish early."""
        self._stopping.set()
        server, self._httpserver = self._httpserver, None
        if server is not None and server.is_running():
            server.stop()

    def __enter__(self) -> StandInDatris:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL without ``/api/v1``, e.g. ``http://127.0.0.1:54321``."""
        if self._httpserver is None:
            raise RuntimeError("the stand-in Datris server is not running; call start() first")
        return self._httpserver.url_for("/").rstrip("/")

    @property
    def api_url(self) -> str:
        """The API base URL: :attr:`url` + ``/api/v1``."""
        return self.url + API_PREFIX

    def reset_state(self) -> None:
        """Forget taps, pipelines, keys, jobs, events, run logs, requests, uploads, faults and debounce;
        keep serving.

        Auth goes back to "keys off", the key store back up, and the constructor settings (error style,
        debounce window, time limits, version flags) to the values the server was created with.
        Runs still in flight finish without writing into the fresh state.
        """
        with self._lock:
            self._init_state()
            self.requests.clear()
            self.uploads.clear()
            self.kills.clear()
            for name, value in self._initial_settings.items():
                setattr(self, name, value)
            if self._httpserver is not None:
                self._httpserver.clear_log()
                self._httpserver.clear_handler_errors()
            self._state_changed.notify_all()

    # ---------------------------------------------------------------- configuration

    def add_tap(self, tap: StandInTap | None = None, /, **fields: Any) -> StandInTap:
        """Register (or replace) a tap and return the stored object.

        Pass a :class:`StandInTap`, or its fields as keyword arguments (``name`` is required then).
        The returned object is live: changing its fields changes later runs. The tap's
        ``target_pipeline`` is registered as a pipeline with the defaults unless it already is.
        """
        if tap is None:
            tap = StandInTap(**fields)
        elif fields:
            tap = dataclasses.replace(tap, **fields)
        tap.validate()
        now_text = format_datris_time(now_epoch_ms())
        tap.created_at = tap.created_at or now_text
        tap.updated_at = tap.updated_at or tap.created_at
        tap.script_path = tap.script_path or f"tap-scripts/{tap.name}.py"
        with self._lock:
            self._taps[tap.name] = tap
            self._register_tap_pipelines()
        return tap

    def tap(self, name: str) -> StandInTap:
        """Return the stored tap (KeyError if unknown)."""
        with self._lock:
            return self._taps[name]

    def add_pipeline(
        self,
        name: str,
        *,
        outcome: str = "success",
        error: str = DEFAULT_PIPELINE_ERROR,
        warning: str = DEFAULT_PIPELINE_WARNING,
        loader: str | None = "PostgresLoader",
        polls_until_start: int = 1,
        polls_until_end: int | None = 2,
        dataset: str | None = DEFAULT_DATASET,
        catalog: str | None = None,
        data_type: str = "csv",
        records: int | None = None,
        archive_entries: int | list[str] = 1,
    ) -> StandInPipeline:
        """Register (or replace) a pipeline configuration and return the stored, live object.

        See :class:`StandInPipeline` for the fields. ``dataset`` defaults to
        ``postgres:datris.public.<name>``; pass None for a pipeline without a dataset in lineage.
        """
        pipeline = StandInPipeline(
            name=name,
            outcome=outcome,
            error=error,
            warning=warning,
            loader=loader,
            polls_until_start=polls_until_start,
            polls_until_end=polls_until_end,
            dataset=dataset,
            catalog=catalog,
            data_type=data_type,
            records=records,
            archive_entries=list(archive_entries) if isinstance(archive_entries, list) else archive_entries,
        )
        pipeline.validate()
        with self._lock:
            self._pipelines[name] = pipeline
        return pipeline

    def pipeline(self, name: str) -> StandInPipeline:
        """Return the stored pipeline, including one registered implicitly by a tap (KeyError if unknown)."""
        with self._lock:
            self._register_tap_pipelines()
            return self._pipelines[name]

    def _register_tap_pipelines(self) -> None:
        """Register every tap's target pipeline that is not registered yet (lock held).

        Called again where pipelines are read, so a tap whose ``target_pipeline`` was changed on the
        live object still feeds a registered pipeline.
        """
        for tap in self._taps.values():
            if tap.target_pipeline and tap.target_pipeline not in self._pipelines:
                self._pipelines[tap.target_pipeline] = StandInPipeline(tap.target_pipeline)

    def require_api_keys(self, enabled: bool = True) -> None:
        """Turn ``useApiKeys`` on or off. Off (the default) allows everything, key or no key."""
        with self._lock:
            self._keys_required = enabled

    def add_api_key(
        self,
        value: str,
        *,
        label: str,
        capabilities: tuple[str, ...] | list[str] = ("*:*",),
        revoked: bool = False,
    ) -> None:
        """Register an API key.

        :param value: the secret sent in ``x-api-key``.
        :param label: the key's label (reported in 403 bodies, matched by ``owner=self``).
        :param capabilities: capability strings such as ``tap:run`` or ``tap:run:owner=self``.
        :param revoked: a revoked key gets 401.
        """
        parsed = tuple(_Capability.parse(text) for text in capabilities)
        with self._lock:
            self._api_keys[value] = _ApiKey(value, label, parsed, revoked)

    def revoke_api_key(self, value: str) -> None:
        """Mark a registered key as revoked."""
        with self._lock:
            self._api_keys[value] = dataclasses.replace(self._api_keys[value], revoked=True)

    def key_store_down(self, down: bool = True) -> None:
        """Simulate an unreadable key store: requests carrying a key get 503 while keys are on."""
        with self._lock:
            self._key_store_down = down

    # ---------------------------------------------------------------- fault injection

    def _add_fault(self, route: str, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.setdefault(_normalise_route(route), []).append(fault)

    def fail(
        self,
        route: str,
        status: int,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``route`` with ``status``; the real handler does not run.

        :param route: e.g. ``"POST /tap/run"``.
        :param status: the HTTP status to answer with.
        :param times: how many calls the fault applies to.
        :param body: a str/bytes body, or an object sent as JSON; default: a JSON error body.
        :param headers: extra headers, e.g. ``{"Retry-After": "2"}`` for a 429.
        """
        self._add_fault(route, _Fault("fail", times, status=status, body=body, headers=dict(headers or {})))

    def delay(self, route: str, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` before handling the next ``times`` calls of ``route`` normally."""
        self._add_fault(route, _Fault("delay", times, seconds=seconds))

    def reset(self, route: str, times: int = 1) -> None:
        """Cut the TCP connection of the next ``times`` calls of ``route`` without any HTTP response."""
        self._add_fault(route, _Fault("reset", times))

    def html(self, route: str, status: int = 502, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with a proxy's HTML error page."""
        self._add_fault(route, _Fault("html", times, status=status))

    def garbage(self, route: str, body: str = "not json", status: int = 200, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with a body that is not (complete) JSON."""
        self._add_fault(route, _Fault("garbage", times, status=status, body=body))

    def proxy_timeout(self, route: str = "POST /tap/run", times: int = 1, after_seconds: float = 0.0) -> None:
        """Model a proxy cutting a blocking call: the request is handled for real in a background
        thread (it finishes and writes its run-log row and jobs as usual) while the client gets a
        504 HTML page after ``after_seconds``. Use :meth:`wait_until_idle` to wait for the real work.
        """
        self._add_fault(route, _Fault("proxy_timeout", times, status=504, seconds=after_seconds))

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    # ---------------------------------------------------------------- inspection

    def calls(self, route: str) -> list[RecordedRequest]:
        """The recorded requests of one route, e.g. ``calls("POST /tap/run")``."""
        wanted = _normalise_route(route)
        with self._lock:
            return [recorded for recorded in self.requests if recorded.route == wanted]

    def events(self, publisher_token: str) -> list[dict[str, Any]]:
        """The stored status events of a publisher token (copies, ascending)."""
        with self._lock:
            return [dict(event) for event in self._events_by_publisher.get(publisher_token, [])]

    def jobs(self, publisher_token: str) -> list[StandInJob]:
        """Snapshots of the jobs submitted under a publisher token, in submission order."""
        with self._lock:
            return [
                dataclasses.replace(self._jobs[token]) for token in self._jobs_by_publisher.get(publisher_token, [])
            ]

    def job(self, pipeline_token: str) -> StandInJob:
        """A snapshot of one job (KeyError if unknown)."""
        with self._lock:
            return dataclasses.replace(self._jobs[pipeline_token])

    def run_logs(self, tap_name: str) -> list[dict[str, Any]]:
        """Every run-log row of a tap, newest first, without ``pipelineRollup`` (not capped at 50)."""
        with self._lock:
            return [dict(row.fields) for row in self._sorted_rows(self._run_logs.get(tap_name, []))]

    def script_runs(self, tap_name: str | None = None) -> list[ScriptRun]:
        """The accepted (not debounced) runs, oldest first, optionally for one tap."""
        with self._lock:
            return [
                dataclasses.replace(run) for run in self._script_runs if tap_name is None or run.tap_name == tap_name
            ]

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Block until no request handling is in progress, including runs detached by
        :meth:`proxy_timeout`. Raises TimeoutError after ``timeout`` seconds."""
        with self._state_changed:
            if not self._state_changed.wait_for(lambda: self._busy_handlers == 0, timeout=timeout):
                raise TimeoutError(f"stand-in Datris still busy after {timeout} s")

    def wait_until_running(self, tap_name: str, timeout: float = 10.0) -> None:
        """Block until a run of ``tap_name`` is in its script phase (any mode).
        Raises TimeoutError after ``timeout`` seconds."""
        with self._state_changed:
            if not self._state_changed.wait_for(lambda: self._running_runs.get(tap_name, 0) > 0, timeout=timeout):
                raise TimeoutError(f"no run of tap {tap_name!r} started within {timeout} s")

    # ---------------------------------------------------------------- request entry point

    def _serve(self, request: Request) -> Response:
        call = _Call.from_request(request)
        with self._lock:
            fault = self._take_fault(call.route)
            self._record(call, fault)
        if fault is None:
            return self._handle_tracked(call).to_response()
        return self._apply_fault(fault, call, request)

    def _take_fault(self, route: str) -> _Fault | None:
        pending = self._faults.get(route)
        if not pending:
            return None
        fault = pending[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            pending.pop(0)
        return fault

    def _record(self, call: _Call, fault: _Fault | None) -> None:
        upload: RecordedUpload | None = None
        if call.file_part is not None:
            upload = RecordedUpload(
                pipeline=call.param("pipeline"),
                filename=call.file_part.filename,
                size=call.file_part.size,
                publishertoken=call.param("publishertoken"),
                content_type=call.file_part.content_type,
            )
            self.uploads.append(upload)
        self.requests.append(
            RecordedRequest(
                method=call.method,
                path=call.path,
                query=dict(call.query),
                json=call.parsed_json(),
                headers=dict(call.headers),
                fault=fault.kind if fault else None,
                upload=upload,
                form=dict(call.form),
            )
        )
        if self.request_log_limit is not None and len(self.requests) > self.request_log_limit:
            del self.requests[: len(self.requests) - self.request_log_limit]
            if len(self.uploads) > self.request_log_limit:
                del self.uploads[: len(self.uploads) - self.request_log_limit]
            if self._httpserver is not None:
                # pytest-httpserver keeps its own log too; trim it for the same reason.
                self._httpserver.clear_log()

    @contextmanager
    def _busy(self) -> Iterator[None]:
        self._enter_busy()
        try:
            yield
        finally:
            self._leave_busy()

    def _enter_busy(self) -> None:
        with self._lock:
            self._busy_handlers += 1

    def _leave_busy(self) -> None:
        with self._state_changed:
            self._busy_handlers -= 1
            self._state_changed.notify_all()

    def _handle_tracked(self, call: _Call) -> _Reply:
        with self._busy():
            return self._handle(call)

    def _sleep(self, seconds: float) -> None:
        """Sleep without holding the lock; wakes early when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # ---------------------------------------------------------------- faults

    def _apply_fault(self, fault: _Fault, call: _Call, request: Request) -> Response:
        if fault.kind == "delay":
            self._sleep(fault.seconds)
            return self._handle_tracked(call).to_response()
        if fault.kind == "reset":
            connection = request.environ.get("werkzeug.socket")
            if connection is not None:
                # The client may already be gone; the outcome is the same.
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            raise _ConnectionCut(f"stand-in Datris cut the connection of {call.route}")
        if fault.kind == "html":
            return _Reply(fault.status, _nginx_page(fault.status), content_type="text/html").to_response()
        if fault.kind == "garbage":
            body = fault.body if isinstance(fault.body, bytes) else str(fault.body).encode("utf-8")
            return _Reply(fault.status, body).to_response()
        if fault.kind == "proxy_timeout":
            # Count the detached work as busy before the client can see the 504, so a
            # wait_until_idle() issued right after the 504 always waits for it.
            self._enter_busy()
            worker = threading.Thread(
                target=self._handle_detached, args=(call,), name=f"stand-in-datris {call.route}", daemon=True
            )
            worker.start()
            self._sleep(fault.seconds)
            return _Reply(504, _nginx_page(504), content_type="text/html").to_response()
        return self._failure_reply(fault, call).to_response()

    def _handle_detached(self, call: _Call) -> None:
        try:
            self._handle(call)
        finally:
            self._leave_busy()

    def _failure_reply(self, fault: _Fault, call: _Call) -> _Reply:
        headers = dict(fault.headers)
        content_type = "application/json"
        for name in list(headers):
            if name.lower() == "content-type":
                content_type = headers.pop(name)
        if fault.body is None:
            if fault.status == 500 and self.error_style == "stacktrace":
                body = _stack_trace_text("java.lang.RuntimeException", "Injected failure", call.path)
            else:
                body = _gson_dumps({"error": _status_phrase(fault.status)})
        elif isinstance(fault.body, bytes):
            body = fault.body
        elif isinstance(fault.body, str):
            body = fault.body.encode("utf-8")
        else:
            body = _gson_dumps(fault.body)
        return _Reply(fault.status, body, content_type=content_type, headers=headers)

    # ---------------------------------------------------------------- routing and auth

    def _handle(self, call: _Call) -> _Reply:
        if not call.full_path.startswith(API_PREFIX + "/"):
            return self._spring_error(404, call)
        template = _route_template(call.path)
        route_id = (call.method, template)
        if template in _LINEAGE_TEMPLATES and not self.has_lineage:
            return self._spring_error(404, call)
        if route_id not in _ROUTE_CAPABILITIES:
            known_path = any(path == template for _, path in _ROUTE_CAPABILITIES)
            return self._spring_error(405 if known_path else 404, call)
        if call.path == "/mcp/tools" and not self.has_mcp_tools:
            return self._spring_error(404, call)
        # Spring checks `consumes = application/json` while choosing the handler, before interceptors.
        if route_id in _JSON_BODY_ROUTES and not call.sends_json():
            return self._spring_error(415, call)
        # The size limit sits in front of the application (proxy / multipart resolver).
        if route_id == _UPLOAD_ROUTE and call.file_part is not None and call.file_part.size > self.max_upload_bytes:
            return _Reply.json(
                {
                    "error": (
                        f"File too large: {call.file_part.size} bytes exceeds the upload limit of "
                        f"{self.max_upload_bytes} bytes"
                    )
                },
                413,
            )

        caller_or_reply = self._authorize(call)
        if isinstance(caller_or_reply, _Reply):
            return caller_or_reply
        caller = caller_or_reply

        handlers: dict[str, Callable[[_Call, _Caller], _Reply]] = {
            "/tap": self._get_tap,
            "/taps": self._get_taps,
            "/tap/run": self._run_tap,
            "/tap/logs": self._get_tap_logs,
            "/tap/logs/all": self._get_all_tap_logs,
            "/pipeline/status": self._get_pipeline_status,
            "/job/kill": self._kill_job,
            "/pipeline/upload": self._upload_file,
            "/version": self._get_version,
            "/mcp/tools": self._get_mcp_tools,
            _LINEAGE_ROOT: self._get_lineage,
            _LINEAGE_SUBTREE: self._get_lineage_path,
        }
        try:
            return handlers[template](call, caller)
        except _ControllerError as problem:
            return self._controller_error(
                problem.message, call, status=problem.status, exception_class=problem.exception_class
            )

    def _authorize(self, call: _Call) -> _Caller | _Reply:
        """Resolve the caller, following the server's interceptor order (tenant, capability, controller)."""
        if call.path == "/version":
            return ANONYMOUS  # public: the key is not even read
        with self._lock:
            keys_required = self._keys_required
            store_down = self._key_store_down
            api_key_value = call.headers.get("x-api-key", "").strip() or None
            api_key = self._api_keys.get(api_key_value) if api_key_value else None
        if not keys_required:
            return ANONYMOUS

        if call.path == "/mcp/tools":
            # The MCP tools controller validates the key itself, with its own message.
            if api_key_value is not None and store_down:
                return _Reply.json({"error": "API key metadata unavailable"}, 503)
            if api_key is None or api_key.revoked:
                return _Reply.json({"error": "x-api-key does not exist or is invalid"}, 401)
            return _Caller(api_key.label, api_key.capabilities)

        if api_key_value is not None:
            if store_down:
                return _Reply.json({"error": "API key metadata unavailable"}, 503)
            if api_key is None or api_key.revoked:
                return _Reply.json({"error": "API key is revoked or invalid"}, 401)
            caller = _Caller(api_key.label, api_key.capabilities)
            required = _ROUTE_CAPABILITIES[(call.method, _route_template(call.path))]
            if required is not None and not caller.holds(required):
                return _Reply.json(
                    {
                        "error": "capability denied",
                        "errorKind": "capability_denied",
                        "key": caller.label,
                        "required": required,
                        "route": f"{call.method} {call.full_path}",
                        "message": (
                            f"API key '{caller.label}' does not hold capability '{required}'. "
                            "Grant the capability to this key or call with a key that holds it."
                        ),
                    },
                    403,
                )
            return caller

        # No key: the interceptors let the call through and the controller's validate() throws,
        # except in the lineage controller, which never calls validate().
        if _route_template(call.path) in _LINEAGE_TEMPLATES:
            return ANONYMOUS
        if self.error_style == "json":
            return _Reply.json({"error": "Authentication required"}, 401)
        return self._controller_error("x-api-key does not exist or is invalid", call)

    # ---------------------------------------------------------------- error bodies

    def _controller_error(
        self,
        message: str,
        call: _Call,
        status: int = 500,
        exception_class: str = "ai.datris.model.DatrisException",
    ) -> _Reply:
        """An exception caught by a controller: ``{"error": ...}`` (newer) or a stack trace (older).

        Older controllers answer 500 for everything; only the newer ``ApiErrors`` maps validation
        problems to 400.
        """
        if self.error_style == "json":
            return _Reply.json({"error": message.splitlines()[0] if message else ""}, status)
        return _Reply(500, _stack_trace_text(exception_class, message, call.path))

    def _spring_error(self, status: int, call: _Call) -> _Reply:
        """Spring Boot's default error JSON (the same in both generations)."""
        timestamp = datetime.now(tz=timezone.utc).isoformat(timespec="milliseconds")
        return _Reply.json(
            {"timestamp": timestamp, "status": status, "error": _status_phrase(status), "path": call.full_path},
            status,
        )

    def _json_object_body(self, call: _Call) -> dict[str, Any] | _Reply:
        """The body as a JSON object, or Spring's 400 when it is missing or not an object."""
        parsed = call.parsed_json()
        if not isinstance(parsed, dict):
            return self._spring_error(400, call)
        return parsed

    # ---------------------------------------------------------------- POST /tap/run

    def _run_tap(self, call: _Call, caller: _Caller) -> _Reply:
        body = self._json_object_body(call)
        if isinstance(body, _Reply):
            return body
        raw_name = body.get("name")
        name = "" if raw_name is None else str(raw_name)
        if not name.strip():
            raise _ControllerError("Tap name is required")
        raw_mode = body.get("mode")
        mode = str(raw_mode).strip().lower() if raw_mode not in (None, "") else "test"
        # Anything but a JSON object is silently ignored, like the server does.
        raw_params = body.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        test_limit = self._test_limit(body.get("testLimit")) if mode == "test" else None
        # Building the script environment is where an invalid param key fails the run.
        env, param_error = _param_env(params)

        with self._lock:
            tap = self._taps.get(name)
            if tap is None:
                raise _ControllerError(f"Tap: {name} not found")
            if not caller.owner_allowed("tap", "run", tap.owner):
                raise _ControllerError(
                    f"capability denied: key '{caller.label}' does not hold capability 'tap:run' "
                    f"for the targeted resource (scope: owner={tap.owner})"
                )
            if mode == "run":
                debounced = self._debounce(tap, mode)
                if debounced is not None:
                    return debounced
            generation = self._generation
            start_ms = now_epoch_ms()
            run = ScriptRun(
                tap_name=tap.name,
                mode=mode,
                params=dict(params),
                env=env,
                test_limit=test_limit,
                run_time=format_datris_time(start_ms),
            )
            self._script_runs.append(run)
            if mode == "run":
                tap.last_run_status = "running"
                tap.last_run_time = run.run_time
                tap.last_run_trigger = "manual"
            self._running_runs[tap.name] = self._running_runs.get(tap.name, 0) + 1
            self._state_changed.notify_all()
            # Copy what the script phase needs, so it never reads shared state without the lock.
            settings = dataclasses.replace(tap)

        error = param_error
        try:
            if error is None:
                error = self._run_script(settings, mode, start_ms)
        finally:
            with self._state_changed:
                if generation == self._generation:
                    self._running_runs[tap.name] -= 1
                self._state_changed.notify_all()
        return self._finish_run(
            tap, settings, run, mode, error, start_ms, generation, script_started=param_error is None
        )

    def _test_limit(self, raw: Any) -> int | None:
        """``testLimit`` for test runs: absent → 20; 0 or negative → no limit; not a number → 400."""
        if raw is None:
            return DEFAULT_TEST_LIMIT
        number: float | None
        if isinstance(raw, bool):
            number = None
        elif isinstance(raw, (int, float)):
            number = float(raw)
        else:
            try:
                number = float(str(raw).strip())
            except ValueError:
                number = None
        if number is None or math.isnan(number):
            if self.error_style == "stacktrace":
                return DEFAULT_TEST_LIMIT  # older controllers do not read testLimit at all
            raise _ControllerError(f"testLimit must be a number, got '{raw}'", status=400)
        return int(number) if number > 0 else None

    def _debounce(self, tap: StandInTap, mode: str) -> _Reply | None:
        """The atomic check-and-set of the debounce map (the caller holds the lock)."""
        if self.debounce_seconds <= 0:
            return None
        now = self.debounce_clock()
        last_start = self._debounce_started.get(tap.name)
        if last_start is not None and now - last_start < self.debounce_seconds:
            ago_ms = int((now - last_start) * 1000)
            window_ms = int(self.debounce_seconds * 1000)
            return _Reply.json(
                _drop_nulls(
                    {
                        "tap": tap.name,
                        "description": tap.description,
                        "status": "skipped",
                        "mode": mode,
                        "targetPipeline": tap.target_pipeline,
                        "persisted": False,
                        "persistedReason": "debounced",
                        "recordCount": 0,
                        "error": (
                            f"Tap '{tap.name}' was triggered {ago_ms} ms ago; ignoring this duplicate "
                            f"request (debounce window: {window_ms} ms). Wait for the window to pass "
                            "before triggering the tap again."
                        ),
                    }
                )
            )
        self._debounce_started[tap.name] = now
        return None

    def _script_limit_seconds(self, mode: str) -> float:
        if self.legacy_version or mode == "test":
            return self.tap_script_timeout_seconds
        return self.tap_run_timeout_seconds

    def _run_script(self, tap: StandInTap, mode: str, start_ms: int) -> str | None:
        """The script phase: block like the real script would. Returns an error text or None."""
        limit = self._script_limit_seconds(mode)
        started = time.monotonic()
        timed_out = False
        if tap.gate is not None and not tap.gate.wait(limit):
            timed_out = True
        remaining = limit - (time.monotonic() - started)
        if not timed_out:
            if tap.script_seconds > remaining:
                self._sleep(max(0.0, remaining))
                timed_out = True
            else:
                self._sleep(tap.script_seconds)
        if timed_out:
            limit_name = (
                "TAP_SCRIPT_TIMEOUT_SECONDS" if mode == "test" or self.legacy_version else "TAP_RUN_TIMEOUT_SECONDS"
            )
            return (
                f"Tap script timed out after {_seconds_text(limit)} seconds ({mode} mode; raise {limit_name}, "
                "or chunk the source range via run_tap params)"
            )
        return tap.error

    def _finish_run(
        self,
        tap: StandInTap,
        settings: StandInTap,
        run: ScriptRun,
        mode: str,
        error: str | None,
        start_ms: int,
        generation: int,
        *,
        script_started: bool,
    ) -> _Reply:
        is_document_tap = settings.tap_type == "document"
        data_type = "document" if is_document_tap else settings.data_type
        returned = 0 if error is not None else settings.records
        if mode == "test" and run.test_limit is not None:
            returned = min(returned, run.test_limit)
        persisted = mode == "run" and bool(settings.target_pipeline) and error is None and returned > 0

        persisted_reason: str | None = None
        if not persisted:
            if mode != "run":
                persisted_reason = "test_mode"
            elif error is not None:
                persisted_reason = "run_error"
            elif returned == 0:
                persisted_reason = "no_records"
            elif not settings.target_pipeline:
                persisted_reason = "no_target_pipeline"
            else:
                persisted_reason = "unknown"

        run_status = "failure" if error is not None else ("no_records" if returned == 0 else "success")
        logs = self._script_logs(settings, returned, error, start_ms, data_type) if script_started else None
        columns = ["id", "amount", "status"] if data_type == "csv" and error is None else None

        preview: list[dict[str, Any]] | None = None
        truncated: bool | None = None
        if mode != "run" and error is None:
            preview = _preview_records(settings, min(returned, PREVIEW_RECORDS_MAX))
            # The preview is "cut" when the script had more records than it shows.
            truncated = True if settings.records > len(preview) else None

        publisher_token: str | None = None
        pipeline_tokens: list[str] = []
        with self._lock:
            if generation != self._generation:
                stale = True
            else:
                stale = False
                if persisted:
                    job_count = settings.documents if is_document_tap else 1
                    if job_count > 0:
                        publisher_token = str(uuid.uuid4())
                        for index in range(job_count):
                            pipeline_tokens.append(
                                self._submit_job(settings, publisher_token, index, returned, data_type)
                            )
                duration_ms = max(0, now_epoch_ms() - start_ms)
                submitted = len(pipeline_tokens) if (is_document_tap and mode == "run") else returned
                self._write_run_log(
                    settings.name,
                    start_ms,
                    {
                        "tapName": settings.name,
                        "runTime": run.run_time,
                        "status": run_status,
                        "recordCount": submitted,
                        "dataType": data_type,
                        "logs": logs,
                        "error": error,
                        "mode": mode,
                        "durationMs": duration_ms,
                        "publisherToken": publisher_token,
                    },
                )
                live_tap = self._taps.get(settings.name, tap)
                self._update_tap_after_run(live_tap, mode, run, run_status, returned, error, data_type, columns)
                run.status = run_status
                run.publisher_token = publisher_token
                run.error = error
        if stale:
            return _Reply.json({"tap": settings.name, "status": "failure", "error": "server state was reset"})

        response = {
            "tap": settings.name,
            "description": settings.description,
            "status": "failure" if error is not None else "success",
            "mode": mode,
            "targetPipeline": settings.target_pipeline,
            "persisted": persisted,
            "persistedReason": persisted_reason,
            "publisherToken": publisher_token,
            "pipelineTokens": pipeline_tokens or None,
            "records": preview,
            "recordsTruncated": truncated,
            "recordCount": returned,
            "error": error,
            "logs": logs,
            "dataType": data_type,
            "columns": columns,
        }
        return _Reply.json(_drop_nulls(response))

    def _script_logs(
        self,
        tap: StandInTap,
        returned: int,
        error: str | None,
        start_ms: int,
        data_type: str,
    ) -> str | None:
        if tap.logs is not None:
            return "\n".join(tap.logs)
        lines = ["[wrapper] loading tap script", "[wrapper] calling fetch()"]
        seconds = max(0, now_epoch_ms() - start_ms) / 1000
        if error is not None:
            lines.append(f"[wrapper] fetch() failed after {seconds:.2f}s: {error}")
        elif data_type == "document":
            lines.append(f"[wrapper] fetch() returned {returned} document(s) in {seconds:.2f}s")
        else:
            lines.append(f"[wrapper] fetch() returned {returned} {data_type} record(s) in {seconds:.2f}s")
        return "\n".join(lines)

    def _update_tap_after_run(
        self,
        tap: StandInTap,
        mode: str,
        run: ScriptRun,
        run_status: str,
        returned: int,
        error: str | None,
        data_type: str,
        columns: list[str] | None,
    ) -> None:
        if mode == "run":
            tap.last_run_status = run_status
            tap.last_run_time = run.run_time
            tap.last_run_record_count = returned
            tap.last_run_error = error
            tap.last_run_data_type = data_type
            tap.last_run_columns = columns
        else:
            tap.last_test_run_status = "failure" if error is not None else "success"
            tap.last_test_run_time = run.run_time
            tap.last_test_run_record_count = returned
            tap.last_test_run_error = error
            tap.last_test_run_data_type = data_type

    def _write_run_log(self, tap_name: str, start_ms: int, fields: dict[str, Any]) -> None:
        self._run_log_sequence += 1
        self._run_logs.setdefault(tap_name, []).append(
            _RunLogRow(tap_name, start_ms, self._run_log_sequence, _drop_nulls(fields))
        )

    @staticmethod
    def _sorted_rows(rows: list[_RunLogRow]) -> list[_RunLogRow]:
        # Newest first by run time (the server sorts "<tap>|<runTime>" keys in reverse); rows with the
        # same second stay newest-written first.
        return sorted(rows, key=lambda row: (format_datris_time(row.started_ms), row.sequence), reverse=True)

    # ---------------------------------------------------------------- jobs and events

    def _submit_job(self, tap: StandInTap, publisher_token: str, index: int, returned: int, data_type: str) -> str:
        """StreamNotifier's work inside the run request: three events and a queued job."""
        pipeline = str(tap.target_pipeline)
        job = StandInJob(
            pipeline_token=str(uuid.uuid4()),
            publisher_token=publisher_token,
            pipeline=pipeline,
            tap_name=tap.name,
            record_count=1 if data_type == "document" else returned,
            data_type=data_type,
            outcome=tap.pipeline_outcome,
            pipeline_error=tap.pipeline_error,
            pipeline_warning=tap.pipeline_warning,
            loader=tap.loader,
            polls_until_start=tap.polls_until_start,
            polls_until_end=tap.polls_until_end,
        )
        self._jobs[job.pipeline_token] = job
        self._jobs_by_publisher.setdefault(publisher_token, []).append(job.pipeline_token)
        if data_type == "document":
            staged_name = f"{tap.name}-document-{index + 1}.pdf"
            payload_size = 20_480 * (index + 1)
        else:
            staged_name = f"tap-{tap.name}.json"
            payload_size = len(_gson_dumps(_preview_records(tap, returned)))
        self._stage_job(job, staged_name, payload_size)
        return job.pipeline_token

    def _stage_job(self, job: StandInJob, staged_name: str, payload_size: int) -> None:
        """StreamNotifier's three staging events, then the job is queued for the JobRunner (lock held)."""
        self._emit(
            job,
            "StreamNotifier",
            "begin",
            "info",
            f"Stream data received, pipeline: {job.pipeline}, filename: {staged_name}",
        )
        self._emit(job, "StreamNotifier", "processing", "info", f"Total data size: {payload_size}")
        self._emit(job, "StreamNotifier", "end", "info", "Process completed successfully")
        self._advance(job)  # polls_until_start=0 means the JobRunner picks the job up at once

    def _next_epoch(self) -> int:
        # Keep epochs non-decreasing so the stored order and the epoch order never disagree.
        epoch = max(now_epoch_ms(), self._last_event_ms)
        self._last_event_ms = epoch
        return epoch

    def _emit(
        self, job: StandInJob, process_name: str, state: str, code: str, description: str, detail: str | None = None
    ) -> None:
        epoch = self._next_epoch()
        event = _drop_nulls(
            {
                "id": 0,
                "dateTime": format_datris_time(epoch),
                "pipeline": job.pipeline,
                "processName": process_name,
                "publisherToken": job.publisher_token,
                "pipelineToken": job.pipeline_token,
                "filename": f"stream: {job.pipeline}",
                "state": state,
                "code": code,
                "description": description,
                "epoch": epoch,
                "detail": detail,
            }
        )
        self._events_by_publisher.setdefault(job.publisher_token, []).append(event)
        self._events_by_pipeline.setdefault(job.pipeline_token, []).append(event)

    def _poll(self, job: StandInJob) -> None:
        job.polls += 1
        self._advance(job)

    def _advance(self, job: StandInJob) -> None:
        """Move a job along its lifecycle according to the polls it has seen (lock held)."""
        if job.state == JOB_INITIALIZED and job.polls >= job.polls_until_start:
            job.state = JOB_PROCESSING
            self._emit(job, "JobRunner", "begin", "info", "Process started")
        if job.state == JOB_PROCESSING and job.polls_until_end is not None and job.polls >= job.polls_until_end:
            self._finish_job(job)

    def _finish_job(self, job: StandInJob) -> None:
        loader = job.loader or "PostgresLoader"
        if job.outcome == "error":
            self._emit(job, loader, "end", "error", job.pipeline_error)
            # Newer servers (the JSON error generation) put the failed job's stack trace in `detail`.
            detail = _job_failure_detail(job.pipeline_error) if self.error_style == "json" else None
            self._emit(job, "JobRunner", "end", "error", job.pipeline_error, detail)
        else:
            if job.outcome == "warning":
                self._emit(job, "DataQuality", "processing", "warning", job.pipeline_warning)
            if job.loader is not None:
                self._emit(job, job.loader, "processing", "info", f"Loaded {job.record_count} records")
            self._emit(job, "JobRunner", "end", "info", "Process completed")
        job.state = JOB_COMPLETED

    # ---------------------------------------------------------------- GET /tap, /taps

    def _tap_config(self, tap: StandInTap, *, integers_as_doubles: bool) -> dict[str, Any]:
        def number(value: int | None) -> int | float | None:
            if value is None:
                return None
            return float(value) if integers_as_doubles else value

        return _drop_nulls(
            {
                "name": tap.name,
                "description": tap.description,
                "scriptPath": tap.script_path,
                "targetPipeline": tap.target_pipeline,
                "packages": [],
                "cronExpression": tap.cron,
                "enabled": tap.enabled,
                "tapType": tap.tap_type,
                "lastRunStatus": tap.last_run_status,
                "lastRunTime": tap.last_run_time,
                "lastRunRecordCount": number(tap.last_run_record_count),
                "lastRunError": tap.last_run_error,
                "lastRunDataType": tap.last_run_data_type,
                "lastRunColumns": tap.last_run_columns,
                "lastRunTrigger": tap.last_run_trigger,
                "lastTestRunStatus": tap.last_test_run_status,
                "lastTestRunTime": tap.last_test_run_time,
                "lastTestRunRecordCount": number(tap.last_test_run_record_count),
                "lastTestRunError": tap.last_test_run_error,
                "lastTestRunDataType": tap.last_test_run_data_type,
                "createdAt": tap.created_at,
                "updatedAt": tap.updated_at,
                "createdByKeyLabel": tap.owner,
                "version": number(tap.version),
                "retryCount": number(tap.retry_count),
                "scriptKind": "python",
            }
        )

    def _get_tap(self, call: _Call, caller: _Caller) -> _Reply:
        name = call.query.get("name")
        if name is None:
            return self._spring_error(400, call)
        with self._lock:
            tap = self._taps.get(name)
            if tap is None:
                raise _ControllerError(f"Tap: {name} not found")
            # The endpoint re-serialises the config through a Gson map: every integer becomes a double.
            config = self._tap_config(tap, integers_as_doubles=True)
        config["script"] = f"def fetch():\n    # stand-in script of tap {name}\n    return []\n"
        return _Reply.json(config)

    def _get_taps(self, call: _Call, caller: _Caller) -> _Reply:
        with self._lock:
            taps = list(self._taps.values())
            configs = [
                self._tap_config(tap, integers_as_doubles=False)
                for tap in taps
                if caller.owner_allowed("tap", "read", tap.owner)
            ]
        return _Reply.json(configs)

    # ---------------------------------------------------------------- GET /tap/logs

    def _get_tap_logs(self, call: _Call, caller: _Caller) -> _Reply:
        name = call.query.get("name")
        if name is None:
            return self._spring_error(400, call)
        now_ms = now_epoch_ms()
        with self._lock:
            rows = self._sorted_rows(self._run_logs.get(name, []))[:RUN_LOG_ROWS_RETURNED]
            entries = []
            for row in rows:
                entry = dict(row.fields)
                token = entry.get("publisherToken")
                events = self._events_by_publisher.get(token, []) if token else []
                # Always written, even as null (the one exception to "nulls left out").
                entry["pipelineRollup"] = build_rollup(events, now_ms) if token else None
                entries.append(entry)
        return _Reply(200, _gson_dumps(entries))

    def _get_all_tap_logs(self, call: _Call, caller: _Caller) -> _Reply:
        now_ms = now_epoch_ms()
        try:
            since = int(call.query.get("since", now_ms - LOGS_ALL_DEFAULT_WINDOW_MS))
            limit = int(call.query.get("limit", LOGS_ALL_DEFAULT_LIMIT))
        except ValueError:
            return self._spring_error(400, call)
        limit = max(0, min(limit, LOGS_ALL_MAX_LIMIT))
        with self._lock:
            rows = [row for tap_rows in self._run_logs.values() for row in tap_rows if row.started_ms >= since]
            entries = [dict(row.fields) for row in self._sorted_rows(rows)[:limit]]
        return _Reply.json(entries)

    # ---------------------------------------------------------------- GET /pipeline/status

    def _get_pipeline_status(self, call: _Call, caller: _Caller) -> _Reply:
        # Spring request params are case-sensitive: only the lower-case names are read.
        publisher_token = call.query.get("publishertoken")
        pipeline_token = call.query.get("pipelinetoken")
        with_rollup = call.query.get("withrollup", "").lower() == "true"
        if not publisher_token and not pipeline_token:
            return self._status_summary_page(call)
        with self._lock:
            if publisher_token:
                for token in self._jobs_by_publisher.get(publisher_token, []):
                    self._poll(self._jobs[token])
                events = [dict(event) for event in self._events_by_publisher.get(publisher_token, [])]
            else:
                job = self._jobs.get(str(pipeline_token))
                if job is not None:
                    self._poll(job)
                events = [dict(event) for event in self._events_by_pipeline.get(str(pipeline_token), [])]
        if with_rollup:
            return _Reply.json({"rollup": build_rollup(events), "events": events})
        return _Reply.json(events)

    def _status_summary_page(self, call: _Call) -> _Reply:
        try:
            page = max(0, int(call.query.get("page", "0")))
        except ValueError:
            return self._spring_error(400, call)
        now_ms = now_epoch_ms()
        with self._lock:
            summaries = []
            for job in self._jobs.values():
                job_events = self._events_by_pipeline.get(job.pipeline_token, [])
                if not job_events:
                    continue
                rolled = _job_rollup(job_events, now_ms)
                status = "error" if rolled["status"] == "timed_out" else rolled["status"]
                summaries.append(
                    _drop_nulls(
                        {
                            "createdAtTimestamp": job_events[0]["epoch"],
                            "createdAt": job_events[0]["dateTime"],
                            "updatedAt": job_events[-1]["dateTime"],
                            "pipeline": job.pipeline,
                            "pipelineToken": job.pipeline_token,
                            "process": job_events[-1]["processName"],
                            "startTime": job_events[0]["dateTime"],
                            "endTime": job_events[-1]["dateTime"] if status != "processing" else None,
                            "totalTime": rolled["elapsed"],
                            "status": status,
                            "recordCount": job.record_count,
                            "dataType": job.data_type,
                        }
                    )
                )
        summaries.sort(key=lambda row: row["createdAtTimestamp"], reverse=True)
        start = page * STATUS_SUMMARY_PAGE_SIZE
        return _Reply.json(summaries[start : start + STATUS_SUMMARY_PAGE_SIZE])

    # ---------------------------------------------------------------- POST /job/kill

    def _kill_job(self, call: _Call, caller: _Caller) -> _Reply:
        body = self._json_object_body(call)
        if isinstance(body, _Reply):
            return body
        token = body.get("pipelineToken")
        if token in (None, ""):
            raise _ControllerError("'pipelineToken' parameter is required")
        token = str(token)
        with self._lock:
            job = self._jobs.get(token)
            if job is None:
                raise _ControllerError(f"Job not found for pipeline token: {token}")
            if job.state != JOB_PROCESSING:
                raise _ControllerError(f"Job is not running (state: {job.state})")
            self._emit(job, "JobRunner", "end", "error", "Job cancelled by user")
            job.state = JOB_CANCELLED
            self.kills.append(token)
        return _Reply.json({"status": "cancelled", "pipelineToken": token})

    # ---------------------------------------------------------------- POST /pipeline/upload

    def _upload_file(self, call: _Call, caller: _Caller) -> _Reply:
        """FileUploadAPIController.uploadRawFile: stage the file through StreamNotifier, queue jobs.

        Spring binds the parameters before the method runs, so a missing ``file`` part or ``pipeline``
        parameter is its default 400 and writes nothing. Everything the method itself throws is a 500
        and also writes an error event whose ``filename`` is the pipeline name and whose tokens are
        empty (the controller has no job yet), so it cannot be found by polling a token.
        """
        if not call.multipart:
            # Binding a MultipartFile on a request that is not multipart raises MultipartException,
            # which Spring Boot's default handling answers with a 500 error JSON.
            return self._spring_error(500, call)
        if call.multipart_error or call.file_part is None:
            return self._spring_error(400, call)  # MissingServletRequestPartException
        pipeline_name = call.param("pipeline")
        if pipeline_name is None:
            return self._spring_error(400, call)  # MissingServletRequestParameterException
        # Spring passes an empty optional parameter on as "", and StreamNotifier only replaces null.
        publisher_param = call.param("publishertoken")
        part = call.file_part

        with self._lock:
            self._register_tap_pipelines()
            pipeline = self._pipelines.get(pipeline_name)
            if pipeline is None:
                self._upload_failed(
                    pipeline_name,
                    f"Pipeline '{pipeline_name}' is not registered. Use POST /api/v1/pipeline to register it first.",
                    "java.lang.IllegalArgumentException",
                )
            entries = _archive_entries(part, pipeline) if _is_archive(part.filename) else None
            if entries is not None and not entries:
                self._upload_failed(pipeline_name, f"No files found in archive: {part.filename}")

            if entries is None:
                records = pipeline.records if pipeline.records is not None else _counted_records(part, pipeline)
                token = self._submit_upload_job(pipeline, publisher_param, part.filename, part.size, records)
                return _Reply(200, token.encode("utf-8"))
            records = pipeline.records if pipeline.records is not None else 0
            if pipeline.data_type.lower() == "csv" and len(entries) > 1:
                # CSV batch mode: the entries are joined into one payload and one job.
                token = self._submit_upload_job(pipeline, publisher_param, entries[0], part.size, records)
                return _Reply(200, token.encode("utf-8"))
            # Anything else in an archive (even a single entry) is one job per entry, and no token.
            entry_size = part.size // len(entries)
            for entry in entries:
                self._submit_upload_job(pipeline, publisher_param, entry, entry_size, records)
            return _Reply(200, f"{len(entries)} file(s) submitted".encode())

    def _submit_upload_job(
        self, pipeline: StandInPipeline, publisher_param: str | None, staged_name: str, size: int, records: int
    ) -> str:
        pipeline_token = str(uuid.uuid4())
        publisher_token = pipeline_token if publisher_param is None else publisher_param
        job = StandInJob(
            pipeline_token=pipeline_token,
            publisher_token=publisher_token,
            pipeline=pipeline.name,
            tap_name="",
            record_count=records,
            data_type=pipeline.data_type,
            outcome=pipeline.outcome,
            pipeline_error=pipeline.error,
            pipeline_warning=pipeline.warning,
            loader=pipeline.loader,
            polls_until_start=pipeline.polls_until_start,
            polls_until_end=pipeline.polls_until_end,
            filename=staged_name,
        )
        self._jobs[pipeline_token] = job
        self._jobs_by_publisher.setdefault(publisher_token, []).append(pipeline_token)
        self._stage_job(job, staged_name, size)
        return pipeline_token

    def _upload_failed(
        self, pipeline_name: str, message: str, exception_class: str = "ai.datris.model.DatrisException"
    ) -> NoReturn:
        """The controller's catch: an error event with ``filename=<pipeline>``, then a 500 (lock held)."""
        epoch = self._next_epoch()
        event = {
            "id": 0,
            "dateTime": format_datris_time(epoch),
            "processName": "FileUploadAPIController",
            "publisherToken": "",
            "pipelineToken": "",
            "filename": pipeline_name,
            "state": "end",
            "code": "error",
            "description": message,
            "epoch": epoch,
        }
        self._events_by_publisher.setdefault("", []).append(event)
        self._events_by_pipeline.setdefault("", []).append(event)
        raise _ControllerError(message, exception_class=exception_class)

    # ---------------------------------------------------------------- GET /lineage

    def _lineage_graph(self) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """LineageService.build from the current configuration (lock held): nodes and edges, in order.

        Taps first (each with its source), then pipelines with their dataset and catalog. Edges whose
        end is not a node are dropped, like the server does for a tap pointing at a missing pipeline.
        """
        self._register_tap_pipelines()
        nodes: dict[str, dict[str, Any]] = {}
        edges: list[dict[str, str]] = []

        def add_node(node_type: str, name: str, **attributes: Any) -> str:
            node_id = f"{node_type}:{name}"
            if node_id not in nodes:
                nodes[node_id] = _drop_nulls({"id": node_id, "type": node_type, "name": name, **attributes})
            return node_id

        def add_edge(source_id: str, target_id: str) -> None:
            edge = {"from": source_id, "to": target_id}
            if edge not in edges:
                edges.append(edge)

        for tap in self._taps.values():
            tap_id = add_node("tap", tap.name)
            source_id = add_node("source", tap.lineage_source)
            add_edge(source_id, tap_id)
            if tap.target_pipeline:
                add_edge(tap_id, f"pipeline:{tap.target_pipeline}")

        # A dataset written by one pipeline is authoritative; two claiming it make it undeclared.
        writers: dict[str, int] = {}
        for pipeline in self._pipelines.values():
            if pipeline.dataset:
                writers[pipeline.dataset] = writers.get(pipeline.dataset, 0) + 1
        for pipeline in self._pipelines.values():
            pipeline_id = add_node("pipeline", pipeline.name, catalog=pipeline.catalog)
            if not pipeline.dataset:
                continue
            authority = "authoritative" if writers[pipeline.dataset] == 1 else "undeclared"
            dataset_id = add_node("dataset", pipeline.dataset, catalog=pipeline.catalog, authority=authority)
            add_edge(pipeline_id, dataset_id)
            if pipeline.catalog:
                add_edge(dataset_id, add_node("catalog", pipeline.catalog))

        edges = [edge for edge in edges if edge["from"] in nodes and edge["to"] in nodes]
        return list(nodes.values()), edges

    def _get_lineage(self, call: _Call, caller: _Caller) -> _Reply:
        with self._lock:
            nodes, edges = self._lineage_graph()
        return _Reply.json({"nodes": nodes, "edges": edges})

    def _get_lineage_path(self, call: _Call, caller: _Caller) -> _Reply:
        segments = call.path[len(_LINEAGE_ROOT) + 1 :].split("/")
        if len(segments) != 2 or not all(segments):
            return self._spring_error(404, call)
        first, name = segments
        if first == "columns":
            return self._get_column_lineage(call, name)
        return self._get_lineage_node(call, first, name)

    def _get_lineage_node(self, call: _Call, raw_type: str, name: str) -> _Reply:
        depth_text = call.query.get("depth")
        runs_text = call.query.get("runs")
        try:
            depth = int(depth_text) if depth_text not in (None, "") else 0
            runs = int(runs_text) if runs_text not in (None, "") else 0
        except ValueError:
            return self._spring_error(400, call)  # type mismatch while binding an Integer parameter
        node_type = raw_type.strip().lower()
        if node_type not in LINEAGE_NODE_TYPES:
            return _lineage_error(400, "type must be one of source, tap, pipeline, dataset, catalog")
        raw_direction = call.query.get("direction")
        direction = raw_direction.strip().lower() if raw_direction is not None else "both"
        if direction not in LINEAGE_DIRECTIONS:
            return _lineage_error(400, "direction must be one of up, down, both")

        node_id = f"{node_type}:{name}"
        with self._lock:
            nodes, edges = self._lineage_graph()
            by_id = {node["id"]: node for node in nodes}
            if node_id not in by_id:
                return _lineage_error(404, "no such node: " + node_id.replace('"', "'"))
            forward: dict[str, list[str]] = {}
            backward: dict[str, list[str]] = {}
            for edge in edges:
                forward.setdefault(edge["from"], []).append(edge["to"])
                backward.setdefault(edge["to"], []).append(edge["from"])
            max_hops = depth if depth > 0 else math.inf
            upstream = [] if direction == "down" else _walk(node_id, backward, max_hops)
            downstream = [] if direction == "up" else _walk(node_id, forward, max_hops)
            relevant = {node_id, *upstream, *downstream}
            result: dict[str, Any] = {
                "node": by_id[node_id],
                "upstream": [by_id[item] for item in upstream],
                "downstream": [by_id[item] for item in downstream],
                "edges": [edge for edge in edges if edge["from"] in relevant and edge["to"] in relevant],
            }
            if node_type == "pipeline":
                fed_pipeline: str | None = name
            else:
                fed_pipeline = next(
                    (item[len("pipeline:") :] for item in [*upstream, *downstream] if item.startswith("pipeline:")),
                    None,
                )
            if fed_pipeline is not None:
                result["freshness"] = self._freshness(fed_pipeline)
        if runs > 0:
            result["runs"] = []  # recorded run lineage is not modelled
        return _Reply.json(result)

    def _freshness(self, pipeline_name: str) -> dict[str, Any]:
        """The last successful landing of a pipeline within 30 days, from its job summaries (lock held)."""
        now_ms = now_epoch_ms()
        landed: list[tuple[int, StandInJob]] = []
        for job in self._jobs.values():
            job_events = self._events_by_pipeline.get(job.pipeline_token, [])
            if job.pipeline != pipeline_name or not job_events:
                continue
            created_ms = int(job_events[0]["epoch"])
            if created_ms < now_ms - LINEAGE_FRESHNESS_WINDOW_MS:
                continue
            if _job_rollup(job_events, now_ms)["status"] in ("success", "warning"):
                landed.append((created_ms, job))
        if not landed:
            return {"state": "unknown"}
        created_ms, job = max(landed, key=lambda item: item[0])
        return {
            "lastLandedAt": _iso_instant(created_ms),
            "recordCount": job.record_count,
            "latestRunId": job.pipeline_token,
            "state": "fresh",
        }

    def _get_column_lineage(self, call: _Call, pipeline_name: str) -> _Reply:
        version_text = call.query.get("version")
        try:
            version = int(version_text) if version_text not in (None, "") else None
        except ValueError:
            return self._spring_error(400, call)
        with self._lock:
            self._register_tap_pipelines()
            known = pipeline_name in self._pipelines
        if not known or (version is not None and version > 1):
            label = "no such pipeline version: " if version is not None else "no such pipeline: "
            return _lineage_error(404, label + pipeline_name.replace('"', "'"))
        # The deterministic tier of a pipeline with no declared schema: nothing to map.
        return _Reply.json(
            {
                "pipeline": pipeline_name,
                "version": 1,
                "versionSource": "current",
                "sourceFields": [],
                "destinationFields": [],
                "destinationSchema": "none",
                "transformation": {"kind": "none"},
                "edges": [],
                "unresolved": [],
            }
        )

    # ---------------------------------------------------------------- GET /version, /mcp/tools

    def _get_version(self, call: _Call, caller: _Caller) -> _Reply:
        with self._lock:
            keys_required = self._keys_required
        info = {
            "version": self.version,
            "environment": "oss",
            "multiTenant": "false",
            "hosted": "false",
            "useUserAuth": "false",
            "useApiKeys": "true" if keys_required else "false",
            "useAuditLog": "true",
            "postgresDatabase": "datris",
            "mongodbDatabase": "datris",
            "useTapRunner": "true",
        }
        if not self.legacy_version:
            run_limit, script_limit = self.tap_run_timeout_seconds, self.tap_script_timeout_seconds
            info.update(
                {
                    "useAgentPolicy": "false",
                    "recoveryAgentEnabled": "false",
                    "tapRunTimeoutSeconds": _seconds_text(run_limit),
                    "tapRunTimeoutSecondsSource": _limit_source(run_limit, DEFAULT_TAP_RUN_TIMEOUT_SECONDS),
                    "tapScriptTimeoutSeconds": _seconds_text(script_limit),
                    "tapScriptTimeoutSecondsSource": _limit_source(script_limit, DEFAULT_TAP_SCRIPT_TIMEOUT_SECONDS),
                    "pipelineMaxPayloadMB": "4096",
                    "pipelineMaxPayloadMBSource": "default",
                    "oidcEnabled": "false",
                }
            )
        return _Reply.json(info)

    def _get_mcp_tools(self, call: _Call, caller: _Caller) -> _Reply:
        tools = [name for name, needed in _MCP_TOOLS if needed is None or caller.holds(needed)]
        return _Reply.json({"filtered": len(tools) < len(_MCP_TOOLS), "tools": tools})


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


class _ControllerError(Exception):
    """A ``DatrisException`` thrown inside a controller (answered per the error style)."""

    def __init__(
        self, message: str, status: int = 500, exception_class: str = "ai.datris.model.DatrisException"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.exception_class = exception_class


def _route_template(path: str) -> str:
    """The route-table key of a path: lineage sub-paths share one template."""
    if path.startswith(_LINEAGE_ROOT + "/"):
        return _LINEAGE_SUBTREE
    return path


def _normalise_route(route: str) -> str:
    """``"post /api/v1/tap/run"`` → ``"POST /tap/run"``."""
    method, _, path = route.strip().partition(" ")
    path = path.strip()
    if path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX) :]
    if not method or not path.startswith("/"):
        raise ValueError(f"route must look like 'POST /tap/run', not {route!r}")
    return f"{method.upper()} {path}"


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _limit_source(value: float, default: float) -> str:
    return "default" if value == default else "env"


def _stack_trace_text(exception_class: str, message: str, path: str) -> bytes:
    """A Java stack trace like the one older controllers put in the body of their 500s."""
    controller, method = _ROUTE_CONTROLLERS.get(path, ("TapAPIController", "handle"))
    lines = [
        f"{exception_class}: {message}",
        f"\tat ai.datris.api.{controller}.$anonfun${method}$1({controller}.scala:148)",
        "\tat scala.util.Try$.apply(Try.scala:217)",
        f"\tat ai.datris.api.{controller}.{method}({controller}.scala:141)",
        "\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
        "\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _job_failure_detail(error: str) -> str:
    return (
        f"ai.datris.model.DatrisException: {error}\n"
        "\tat ai.datris.controller.JobRunner.runLoaders(JobRunner.scala:287)\n"
        "\tat ai.datris.controller.JobRunner.run(JobRunner.scala:118)\n"
        "\tat java.base/java.lang.Thread.run(Thread.java:1583)\n"
    )


def _param_env(params: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """Build the ``DATRIS_TAP_PARAM_<key>`` variables; an invalid key fails the run."""
    env: dict[str, str] = {}
    for raw_key, value in params.items():
        key = str(raw_key).strip()
        if not key:
            continue  # empty keys are skipped, not refused
        if not PARAM_KEY_PATTERN.match(key):
            return env, (
                f"Invalid tap param key '{key}': keys must match {PARAM_KEY_PATTERN.pattern} "
                "because they become environment variable names"
            )
        env[f"DATRIS_TAP_PARAM_{key}"] = _param_value_text(value)
    return env, None


def _preview_records(tap: StandInTap, count: int) -> list[dict[str, Any]]:
    if tap.tap_type == "document":
        return [
            {"documentName": f"{tap.name}-document-{index + 1}.pdf", "sizeBytes": 20_480 * (index + 1)}
            for index in range(count)
        ]
    return [{"id": index + 1, "amount": round(9.5 + index * 1.25, 2), "status": "paid"} for index in range(count)]


def _is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_entries(part: _FilePart, pipeline: StandInPipeline) -> list[str]:
    """The entry names an uploaded archive "holds" (the stand-in never unpacks the bytes)."""
    if part.filename.lower().endswith(".gz"):
        return [part.filename[: -len(".gz")]]
    if isinstance(pipeline.archive_entries, list):
        return list(pipeline.archive_entries)
    stem = part.filename.rsplit(".", 1)[0]
    return [f"{stem}-{index + 1}.{pipeline.data_type}" for index in range(pipeline.archive_entries)]


def _counted_records(part: _FilePart, pipeline: StandInPipeline) -> int:
    """Records of an uploaded file: its lines, less the header line for a CSV pipeline."""
    if pipeline.data_type.lower() == "csv":
        return max(0, part.lines - 1)
    return part.lines


def _walk(start: str, neighbours: Mapping[str, list[str]], max_hops: float) -> list[str]:
    """Breadth-first ids reachable from ``start`` within ``max_hops`` hops, in discovery order."""
    seen: dict[str, None] = {}
    frontier = list(neighbours.get(start, []))
    hops = 1
    while frontier and hops <= max_hops:
        fresh = [item for item in dict.fromkeys(frontier) if item not in seen]
        seen.update(dict.fromkeys(fresh))
        frontier = [following for item in fresh for following in neighbours.get(item, [])]
        hops += 1
    return list(seen)


def _lineage_error(status: int, message: str) -> _Reply:
    """The lineage controller writes its error bodies by hand (no Gson escaping)."""
    body = json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False)
    return _Reply(status, body.encode("utf-8"))


def _iso_instant(epoch_ms: int) -> str:
    """Java's ``Instant.toString``: ISO-8601 UTC, with milliseconds only when there are any."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    millis = epoch_ms % 1000
    fraction = f".{millis:03d}" if millis else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
