"""Typed views of Datris answers, parsed once at the client boundary.

The parsers fail closed: a missing field, a wrong type or a status value the server contract does
not list raises :class:`DatrisProtocolError` instead of being guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datris_provider.client.errors import DatrisProtocolError

TAP_RUN_STATUSES = frozenset({"success", "failure", "skipped"})
RUN_LOG_STATUSES = frozenset({"success", "failure", "no_records"})
JOB_STATUSES = frozenset({"processing", "success", "warning", "error", "timed_out"})
ROLLUP_STATUSES = frozenset({"processing", "success", "warning", "error"})
JOB_TERMINAL_STATUSES = frozenset({"success", "warning", "error", "timed_out"})


def _require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in data:
        raise DatrisProtocolError(f"{what} has no '{key}' field; the answer cannot be trusted.")
    value = data[key]
    kinds = _as_tuple(kind)
    # bool is an int subclass: True must not pass for a count.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise DatrisProtocolError(f"{what}: '{key}' should be {_kind_name(kind)}, got {type(value).__name__}.")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if data.get(key) is None:
        return None
    return _require(data, key, kind, what)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _expect_object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise DatrisProtocolError(f"{what} should be a JSON object, got {type(data).__name__}.")
    return data


def _expect_list(data: Any, what: str) -> Sequence[Any]:
    if not isinstance(data, list):
        raise DatrisProtocolError(f"{what} should be a JSON array, got {type(data).__name__}.")
    return data


def _whole_number(value: Any) -> int:
    # GET /tap serialises integers as doubles (1532.0).
    return int(value)


def _string_list(data: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    values = _optional(data, key, list, what) or []
    if not all(isinstance(v, str) for v in values):
        raise DatrisProtocolError(f"{what}: '{key}' should hold strings only.")
    return tuple(values)


@dataclass(frozen=True)
class ServerVersion:
    """What ``GET /version`` says about the server (every value arrives as a string)."""

    version: str
    use_api_keys: bool | None
    tap_run_timeout_seconds: int | None
    tap_script_timeout_seconds: int | None

    @classmethod
    def parse(cls, data: Any) -> ServerVersion:
        what = "GET /version"
        obj = _expect_object(data, what)

        def seconds(key: str) -> int | None:
            raw = obj.get(key)
            if raw is None:
                return None
            try:
                return int(float(str(raw)))
            except ValueError:
                raise DatrisProtocolError(f"{what}: '{key}' is not a number: {raw!r}.") from None

        use_keys = obj.get("useApiKeys")
        return cls(
            version=str(obj.get("version", "unknown")),
            use_api_keys=None if use_keys is None else str(use_keys).lower() == "true",
            tap_run_timeout_seconds=seconds("tapRunTimeoutSeconds"),
            tap_script_timeout_seconds=seconds("tapScriptTimeoutSeconds"),
        )

    @property
    def run_script_limit_seconds(self) -> int:
        """How long the server lets a ``mode=run`` script take.

        Newer servers report ``tapRunTimeoutSeconds``; older ones apply one limit to every mode, the
        script limit (default 300 s). A server that reports neither is assumed to use the newest
        default, 3600 s.
        """
        if self.tap_run_timeout_seconds is not None:
            return self.tap_run_timeout_seconds
        if self.tap_script_timeout_seconds is not None:
            return self.tap_script_timeout_seconds
        return 3600


@dataclass(frozen=True)
class TapConfig:
    """The parts of ``GET /tap`` the provider acts on."""

    name: str
    cron_expression: str | None
    enabled: bool
    target_pipeline: str | None
    tap_type: str | None
    last_run_status: str | None
    last_run_time: str | None

    @property
    def scheduled_by_datris(self) -> bool:
        """Datris's scheduler fires a tap that has a cron and is enabled."""
        return bool(self.cron_expression and self.cron_expression.strip()) and self.enabled

    @property
    def is_running(self) -> bool:
        return self.last_run_status == "running"

    @classmethod
    def parse(cls, data: Any) -> TapConfig:
        what = "GET /tap"
        obj = _expect_object(data, what)
        enabled = obj.get("enabled", True)
        return cls(
            name=_require(obj, "name", str, what),
            cron_expression=_optional(obj, "cronExpression", str, what),
            enabled=bool(enabled) if isinstance(enabled, bool) else str(enabled).lower() != "false",
            target_pipeline=_optional(obj, "targetPipeline", str, what),
            tap_type=_optional(obj, "tapType", str, what),
            last_run_status=_optional(obj, "lastRunStatus", str, what),
            last_run_time=_optional(obj, "lastRunTime", str, what),
        )


@dataclass(frozen=True)
class TapRunResponse:
    """The answer of ``POST /tap/run`` (HTTP 200 for every handled outcome, failures included)."""

    tap: str
    status: str
    mode: str
    persisted: bool
    persisted_reason: str | None
    target_pipeline: str | None
    publisher_token: str | None
    pipeline_tokens: tuple[str, ...]
    record_count: int
    error: str | None
    logs: str | None

    @classmethod
    def parse(cls, data: Any) -> TapRunResponse:
        what = "POST /tap/run"
        obj = _expect_object(data, what)
        status = _require(obj, "status", str, what)
        if status not in TAP_RUN_STATUSES:
            raise DatrisProtocolError(
                f"{what}: status '{status}' is not one of {sorted(TAP_RUN_STATUSES)}; refusing to guess."
            )
        return cls(
            tap=_require(obj, "tap", str, what),
            status=status,
            mode=str(obj.get("mode", "")),
            persisted=bool(_require(obj, "persisted", bool, what)),
            persisted_reason=_optional(obj, "persistedReason", str, what),
            target_pipeline=_optional(obj, "targetPipeline", str, what),
            publisher_token=_optional(obj, "publisherToken", str, what),
            pipeline_tokens=_string_list(obj, "pipelineTokens", what),
            record_count=_whole_number(_optional(obj, "recordCount", (int, float), what) or 0),
            error=_optional(obj, "error", str, what),
            logs=_optional(obj, "logs", str, what),
        )


@dataclass(frozen=True)
class JobError:
    """The first error a pipeline job reported."""

    process_name: str
    description: str


@dataclass(frozen=True)
class PipelineJob:
    """One pipeline job in a rollup."""

    pipeline_token: str
    pipeline: str
    status: str
    elapsed: str | None = None
    last_error: JobError | None = None

    @property
    def finished(self) -> bool:
        return self.status in JOB_TERMINAL_STATUSES

    @classmethod
    def parse(cls, data: Any) -> PipelineJob:
        what = "a pipeline job in the rollup"
        obj = _expect_object(data, what)
        status = _require(obj, "status", str, what)
        if status not in JOB_STATUSES:
            raise DatrisProtocolError(f"{what}: status '{status}' is not one of {sorted(JOB_STATUSES)}.")
        raw_error = _optional(obj, "lastError", dict, what)
        last_error = None
        if raw_error is not None:
            last_error = JobError(
                process_name=str(raw_error.get("processName", "unknown process")),
                description=str(raw_error.get("description", "no description")),
            )
        return cls(
            pipeline_token=_require(obj, "pipelineToken", str, what),
            pipeline=str(obj.get("pipeline", "")),
            status=status,
            elapsed=_optional(obj, "elapsed", str, what),
            last_error=last_error,
        )


@dataclass(frozen=True)
class Rollup:
    """The aggregate state of every job under one publisher token."""

    all_done: bool
    status: str
    jobs: tuple[PipelineJob, ...]

    def to_json(self) -> dict[str, Any]:
        """The rollup in the server's own shape, so :meth:`parse` reads it back (trigger events)."""
        jobs = []
        for job in self.jobs:
            entry: dict[str, Any] = {
                "pipelineToken": job.pipeline_token,
                "pipeline": job.pipeline,
                "status": job.status,
            }
            if job.elapsed is not None:
                entry["elapsed"] = job.elapsed
            if job.last_error is not None:
                entry["lastError"] = {
                    "processName": job.last_error.process_name,
                    "description": job.last_error.description,
                }
            jobs.append(entry)
        return {"allDone": self.all_done, "status": self.status, "jobs": jobs}

    @classmethod
    def parse(cls, data: Any) -> Rollup:
        what = "the pipeline rollup"
        obj = _expect_object(data, what)
        status = _require(obj, "status", str, what)
        if status not in ROLLUP_STATUSES:
            raise DatrisProtocolError(f"{what}: status '{status}' is not one of {sorted(ROLLUP_STATUSES)}.")
        jobs = tuple(PipelineJob.parse(j) for j in _expect_list(obj.get("jobs", []), f"{what} jobs"))
        return cls(all_done=_require(obj, "allDone", bool, what), status=status, jobs=jobs)


@dataclass(frozen=True)
class PipelineEvent:
    """One status event. Its ``id`` is always 0 on the server, so identity is built from its fields."""

    pipeline_token: str
    pipeline: str
    process_name: str
    state: str
    code: str
    description: str
    epoch: int

    @property
    def identity(self) -> tuple[str, int, str, str, str, str]:
        return (self.pipeline_token, self.epoch, self.process_name, self.state, self.code, self.description)

    @classmethod
    def parse(cls, data: Any) -> PipelineEvent:
        what = "a pipeline status event"
        obj = _expect_object(data, what)
        return cls(
            pipeline_token=_require(obj, "pipelineToken", str, what),
            pipeline=str(obj.get("pipeline", "")),
            process_name=str(obj.get("processName", "")),
            state=str(obj.get("state", "")),
            code=str(obj.get("code", "info")),
            description=str(obj.get("description", "")),
            epoch=_whole_number(_require(obj, "epoch", (int, float), what)),
        )


@dataclass(frozen=True)
class PipelineStatus:
    """``GET /pipeline/status?publishertoken=…&withrollup=true``."""

    rollup: Rollup
    events: tuple[PipelineEvent, ...]

    @classmethod
    def parse(cls, data: Any) -> PipelineStatus:
        what = "GET /pipeline/status"
        obj = _expect_object(data, what)
        if "rollup" not in obj:
            raise DatrisProtocolError(f"{what} has no rollup; was withrollup=true sent?")
        events = tuple(PipelineEvent.parse(e) for e in _expect_list(obj.get("events", []), f"{what} events"))
        return cls(rollup=Rollup.parse(obj["rollup"]), events=events)


@dataclass(frozen=True)
class RunLogEntry:
    """One row of ``GET /tap/logs`` (written when a run finishes, newest first)."""

    tap_name: str
    run_time: str
    status: str
    mode: str
    record_count: int
    duration_ms: int | None
    publisher_token: str | None
    error: str | None
    logs: str | None
    rollup: Rollup | None = field(default=None)

    @classmethod
    def parse(cls, data: Any) -> RunLogEntry:
        what = "a GET /tap/logs row"
        obj = _expect_object(data, what)
        rollup_raw = obj.get("pipelineRollup")
        duration = _optional(obj, "durationMs", (int, float), what)
        return cls(
            tap_name=_require(obj, "tapName", str, what),
            run_time=_require(obj, "runTime", str, what),
            status=_require(obj, "status", str, what),
            mode=str(obj.get("mode", "")),
            record_count=_whole_number(_optional(obj, "recordCount", (int, float), what) or 0),
            duration_ms=None if duration is None else _whole_number(duration),
            publisher_token=_optional(obj, "publisherToken", str, what),
            error=_optional(obj, "error", str, what),
            logs=_optional(obj, "logs", str, what),
            rollup=None if rollup_raw is None else Rollup.parse(rollup_raw),
        )

    @staticmethod
    def parse_list(data: Any) -> list[RunLogEntry]:
        return [RunLogEntry.parse(row) for row in _expect_list(data, "GET /tap/logs")]


@dataclass(frozen=True)
class KillAnswer:
    """What ``POST /job/kill`` said for one pipeline token.

    ``answered`` is false when Datris could not be reached (no answer, 429, 502/503/504): the job may
    still be running. A 500 such as "Job is not running" is an answer: the job was not running.
    """

    pipeline_token: str
    killed: bool
    detail: str
    answered: bool = True


@dataclass(frozen=True)
class LineageNode:
    """A node of Datris's lineage graph: ``source``, ``tap``, ``pipeline``, ``dataset`` or ``catalog``."""

    id: str
    type: str
    name: str

    @classmethod
    def parse(cls, data: Any) -> LineageNode:
        what = "a lineage node"
        obj = _expect_object(data, what)
        node_id = _require(obj, "id", str, what)
        node_type, _, node_name = node_id.partition(":")
        return cls(id=node_id, type=str(obj.get("type", node_type)), name=str(obj.get("name", node_name)))


@dataclass(frozen=True)
class LineageView:
    """``GET /lineage/{type}/{name}``: one node with what is upstream and downstream of it."""

    node: LineageNode
    upstream: tuple[LineageNode, ...]
    downstream: tuple[LineageNode, ...]

    @classmethod
    def parse(cls, data: Any) -> LineageView:
        what = "GET /lineage"
        obj = _expect_object(data, what)
        return cls(
            node=LineageNode.parse(obj.get("node")),
            upstream=tuple(LineageNode.parse(n) for n in _expect_list(obj.get("upstream", []), f"{what} upstream")),
            downstream=tuple(
                LineageNode.parse(n) for n in _expect_list(obj.get("downstream", []), f"{what} downstream")
            ),
        )
