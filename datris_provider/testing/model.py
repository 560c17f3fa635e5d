"""What the stand-in Datris holds: taps, pipelines, jobs, script runs and recorded requests.

Plain data classes with no HTTP and no behaviour beyond checking their own settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from datris_provider.testing.cron import CronExpression

if TYPE_CHECKING:
    import threading

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_JOB_SECONDS",
    "DEFAULT_PIPELINE_ERROR",
    "DEFAULT_PIPELINE_WARNING",
    "JOB_CANCELLED",
    "JOB_COMPLETED",
    "JOB_INITIALIZED",
    "JOB_PROCESSING",
    "PIPELINE_OUTCOMES",
    "TAP_TYPES",
    "DatrisError",
    "RecordedKill",
    "RecordedRequest",
    "RecordedUpload",
    "ScriptRun",
    "SettingField",
    "Settings",
    "StandInJob",
    "StandInPipeline",
    "StandInTap",
]

DEFAULT_PIPELINE_ERROR = 'Process completed, error: column "amount" is of type numeric but expression is of type text'
DEFAULT_PIPELINE_WARNING = "Data quality rule 'amount_not_negative' flagged 1 record(s)"

PIPELINE_OUTCOMES = ("success", "warning", "error")
TAP_TYPES = ("structured", "document")

# JobState names of the server's in-memory GlobalJobContext.
JOB_INITIALIZED = "INITIALIZED"
JOB_PROCESSING = "PROCESSING"
JOB_COMPLETED = "COMPLETED"
JOB_CANCELLED = "CANCELLED"

# The dataset a pipeline lands into unless add_pipeline says otherwise; "{name}" is the pipeline name.
DEFAULT_DATASET = "postgres:datris.public.{name}"

# How long a started job runs unless the tap or pipeline says otherwise (stand-in seconds).
DEFAULT_JOB_SECONDS = 2.0


def _check_job_times(job_start_seconds: float, job_seconds: float | None) -> None:
    if job_start_seconds < 0:
        raise ValueError("job_start_seconds cannot be negative")
    if job_seconds is not None and job_seconds < 0:
        raise ValueError("job_seconds cannot be negative (None: the job never ends on its own)")


class DatrisError(Exception):
    """A ``DatrisException`` thrown inside a controller; the routes answer it per the error style.

    :param message: the exception message (its first line is what the newer servers send).
    :param status: the status the newer ``ApiErrors`` mapping gives (older controllers always say 500).
    :param exception_class: the Java class named in an older server's stack trace.
    """

    def __init__(
        self, message: str, status: int = 500, exception_class: str = "ai.datris.model.DatrisException"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.exception_class = exception_class


@dataclass
class StandInTap:
    """One tap known to the stand-in server, with the knobs that decide how its runs behave.

    The fields after ``owner`` are maintained by the server (they are what ``GET /tap`` reports);
    they can be preset to simulate history.

    :param name: the tap name.
    :param target_pipeline: the pipeline the run feeds; None means nothing is persisted
        (``persistedReason: no_target_pipeline``).
    :param cron: a 6-field Quartz expression such as ``0 0 6 * * ?``. An enabled cron tap is fired by
        the stand-in's scheduler on its clock. The server does not refuse manual runs of cron taps.
    :param enabled: a disabled tap is not fired by cron; like the real server, it still runs when asked.
    :param tap_type: ``structured`` (one job per run) or ``document`` (one job per new document).
    :param records: how many records (documents, for a document tap) the script returns.
    :param documents: for a document tap, how many of the returned documents are new and become jobs.
        ``0`` with ``records > 0`` gives ``persisted: true`` with no publisherToken (all already ingested).
    :param logs: the script output lines; by default realistic ``[wrapper]`` lines are generated.
    :param script_seconds: how long (stand-in seconds) ``POST /tap/run`` blocks while the script "runs".
    :param error: a script failure message; the run answers ``status: failure`` / ``run_error``.
    :param pipeline_outcome: how the jobs end: ``success``, ``warning`` or ``error``.
    :param pipeline_error: the description of the loader's error event for the ``error`` outcome.
    :param pipeline_warning: the description of the DataQuality warning for the ``warning`` outcome.
    :param loader: the loader process name used in events (None: no loader event on success).
    :param data_type: ``json`` or ``csv`` for a structured tap (document taps report ``document``).
    :param job_start_seconds: stand-in seconds a submitted job waits before the scheduler may start
        it, on top of the wait for the next 5 s scheduler tick.
    :param job_seconds: stand-in seconds a started job runs (it is killable meanwhile); None means it
        never ends by itself.
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
    job_start_seconds: float = 0.0
    job_seconds: float | None = DEFAULT_JOB_SECONDS
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
        if self.records < 0 or self.documents < 0:
            raise ValueError("records and documents cannot be negative")
        if self.script_seconds < 0:
            raise ValueError("script_seconds cannot be negative")
        _check_job_times(self.job_start_seconds, self.job_seconds)
        if self.cron:
            CronExpression.parse(self.cron)


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
    :param job_start_seconds: stand-in seconds an upload job waits before the scheduler may start it
        (on top of the wait for the next scheduler tick).
    :param job_seconds: stand-in seconds a started upload job runs; None means it never ends by itself.
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
    job_start_seconds: float = 0.0
    job_seconds: float | None = DEFAULT_JOB_SECONDS
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
        _check_job_times(self.job_start_seconds, self.job_seconds)
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


@dataclass(frozen=True)
class RecordedKill:
    """One successful ``POST /job/kill``.

    :param pipeline_token: the killed job.
    :param tap_name: the tap whose run submitted it (``""`` for an upload job).
    :param at_ms: when (stand-in epoch ms).
    """

    pipeline_token: str
    tap_name: str
    at_ms: int


@dataclass
class StandInJob:
    """One pipeline job (the server's in-memory ``JobContext``).

    :param pipeline_token: the job id.
    :param publisher_token: the token shared by every job of the tap run.
    :param pipeline: the pipeline name.
    :param tap_name: the tap whose run submitted the job (``""`` for a job submitted by an upload).
    :param state: ``INITIALIZED`` (queued), ``PROCESSING`` (JobRunner running, killable),
        ``COMPLETED`` or ``CANCELLED``.
    :param polls: how many status polls have read the job so far (polls only observe).
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
    job_start_seconds: float = 0.0
    job_seconds: float | None = DEFAULT_JOB_SECONDS
    # When it was queued and when the scheduler starts it (stand-in epoch ms); how far its timeline got.
    queued_at_ms: int = 0
    starts_at_ms: int = 0
    steps_done: int = 0
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
    :param client: who started it: ``airflow`` (arrived over HTTP), ``other`` (:meth:`other_client_run`)
        or ``cron`` (the stand-in's cron scheduler).
    :param started_at_ms: when the script started (stand-in epoch ms).
    :param ended_at_ms: when the run finished (None while it runs).
    :param record_count: the records the script returned (None while it runs).
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
    client: str = "airflow"
    started_at_ms: int = 0
    ended_at_ms: int | None = None
    record_count: int | None = None


@dataclass
class Settings:
    """The server-wide switches of the stand-in (see :class:`~datris_provider.testing.StandInDatris`)."""

    error_style: str = "json"
    debounce_seconds: float = 5.0
    tap_run_timeout_seconds: float = 3600
    tap_script_timeout_seconds: float = 300
    version: str = "1.38.3"
    has_mcp_tools: bool = True
    legacy_version: bool = False
    has_lineage: bool = True
    max_upload_bytes: int = 1024**3
    request_log_limit: int | None = None
    scheduler_tick_seconds: float = 5.0


_T = TypeVar("_T")


class SettingField(Generic[_T]):
    """A server switch read and written as an attribute of an object that holds its :class:`Settings`
    as ``settings`` (the stand-in's facade)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type) -> _T:
        value: _T = getattr(instance.settings, self.name)
        return value

    def __set__(self, instance: Any, value: _T) -> None:
        setattr(instance.settings, self.name, value)
