"""The stand-in's state model: taps, pipelines, jobs, events, run logs and script runs. No HTTP here.

One re-entrant lock guards everything; :attr:`StandInState.changed` is its condition, notified on
every change a waiter may care about (a run starting or ending, a job moving, the state reset).
Methods whose names end in ``_locked`` expect the caller to hold the lock.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from datris_provider.testing.model import (
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_PROCESSING,
    DatrisError,
    RecordedKill,
    ScriptRun,
    Settings,
    StandInJob,
    StandInPipeline,
    StandInTap,
)
from datris_provider.testing.rollup import build_rollup
from datris_provider.testing.wire import drop_nulls, format_datris_time, job_failure_detail

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_SERVICE_HEALTH", "RunLogRow", "StandInState"]

# The backends GET /health/services reports, and what a default install says of each.
DEFAULT_SERVICE_HEALTH: tuple[tuple[str, str], ...] = (
    ("postgres", "up"),
    ("mongodb", "up"),
    ("minio", "up"),
    ("activemq", "up"),
    ("kafka", "not_configured"),
    ("qdrant", "not_configured"),
    ("weaviate", "not_configured"),
    ("milvus", "not_configured"),
    ("chroma", "not_configured"),
    ("pgvector", "up"),
)


@dataclass
class RunLogRow:
    """One ``/tap/logs`` row, with what sorting it needs."""

    tap_name: str
    started_ms: int
    sequence: int
    fields: dict[str, Any]


class StandInState:
    """Everything the stand-in server knows, and the job lifecycle that changes it.

    :param settings: the server-wide switches (read, never changed here).
    :param now_ms: the clock, in epoch milliseconds.
    :param condition: the condition (and lock) shared with the clock.
    """

    def __init__(
        self, settings: Settings, now_ms: Callable[[], int], condition: threading.Condition | None = None
    ) -> None:
        self.settings = settings
        self.now_ms = now_ms
        self.changed = condition if condition is not None else threading.Condition(threading.RLock())
        # The condition doubles as the lock (``with state.lock:``).
        self.lock = self.changed
        self.generation = 0
        # None: the debounce window runs on the stand-in clock.
        self.debounce_clock: Callable[[], float] | None = None
        self.tick_origin_ms = 0
        self.reset()

    def reset(self) -> None:
        """Forget taps, pipelines, jobs, events, run logs, script runs and the debounce map."""
        with self.lock:
            self.taps: dict[str, StandInTap] = {}
            self.pipelines: dict[str, StandInPipeline] = {}
            # tap name -> debounce-clock start of the last accepted mode=run call
            self.debounce_started: dict[str, float] = {}
            self.jobs: dict[str, StandInJob] = {}
            self.jobs_by_publisher: dict[str, list[str]] = {}
            self.events_by_publisher: dict[str, list[dict[str, Any]]] = {}
            self.events_by_pipeline: dict[str, list[dict[str, Any]]] = {}
            self.last_event_ms = 0
            self.run_logs: dict[str, list[RunLogRow]] = {}
            self.run_log_sequence = 0
            self.script_runs: list[ScriptRun] = []
            self.running_runs: dict[str, int] = {}
            self.kills: list[str] = []
            self.kill_records: list[RecordedKill] = []
            # GET /health/services: backend name -> {"status": ..., "message"?: ...}
            self.service_health: dict[str, dict[str, str]] = {
                name: {"status": status} for name, status in DEFAULT_SERVICE_HEALTH
            }
            # Jobs the scheduler still has to move (queued or processing), in submission order.
            self.active_jobs: dict[str, StandInJob] = {}
            # Scheduler ticks fall on tick_origin_ms + k * tick: a reset restarts them now, so a job
            # queued right after a reset on a manual clock starts exactly one tick later.
            self.tick_origin_ms = self.now_ms()
            # Bumped so runs started before a reset do not write into the new state.
            self.generation += 1
            self.changed.notify_all()

    # ---------------------------------------------------------------- taps and pipelines

    def add_tap(self, tap: StandInTap) -> StandInTap:
        """Register (or replace) a validated tap; its target pipeline is registered with the defaults."""
        tap.validate()
        now_text = format_datris_time(self.now_ms())
        tap.created_at = tap.created_at or now_text
        tap.updated_at = tap.updated_at or tap.created_at
        tap.script_path = tap.script_path or f"tap-scripts/{tap.name}.py"
        with self.lock:
            self.taps[tap.name] = tap
            self.register_tap_pipelines_locked()
            self.changed.notify_all()
        return tap

    def add_pipeline(self, pipeline: StandInPipeline) -> StandInPipeline:
        """Register (or replace) a validated pipeline."""
        pipeline.validate()
        with self.lock:
            self.pipelines[pipeline.name] = pipeline
        return pipeline

    def register_tap_pipelines_locked(self) -> None:
        """Register every tap's target pipeline that is not registered yet.

        Called again where pipelines are read, so a tap whose ``target_pipeline`` was changed on the
        live object still feeds a registered pipeline.
        """
        for tap in self.taps.values():
            if tap.target_pipeline and tap.target_pipeline not in self.pipelines:
                self.pipelines[tap.target_pipeline] = StandInPipeline(tap.target_pipeline)

    # ---------------------------------------------------------------- events

    def next_epoch_locked(self, at_ms: int | None = None) -> int:
        """The time stamp of a new event; never earlier than the last one, so order and epochs agree."""
        epoch = max(self.now_ms() if at_ms is None else at_ms, self.last_event_ms)
        self.last_event_ms = epoch
        return epoch

    def emit_locked(
        self,
        job: StandInJob,
        process_name: str,
        state: str,
        code: str,
        description: str,
        detail: str | None = None,
        *,
        at_ms: int | None = None,
    ) -> None:
        """Store one status event of a job (``StatusUtil.send``), stamped now or at ``at_ms``."""
        epoch = self.next_epoch_locked(at_ms)
        event = drop_nulls(
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
        self.events_by_publisher.setdefault(job.publisher_token, []).append(event)
        self.events_by_pipeline.setdefault(job.pipeline_token, []).append(event)
        self.changed.notify_all()

    def upload_failed_locked(
        self, pipeline_name: str, message: str, exception_class: str = "ai.datris.model.DatrisException"
    ) -> NoReturn:
        """The upload controller's catch: an error event with ``filename=<pipeline>``, then a 500.

        The tokens are empty (the controller has no job yet), so the event cannot be found by polling.
        """
        epoch = self.next_epoch_locked()
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
        self.events_by_publisher.setdefault("", []).append(event)
        self.events_by_pipeline.setdefault("", []).append(event)
        raise DatrisError(message, exception_class=exception_class)

    def events_of_publisher(self, publisher_token: str) -> list[dict[str, Any]]:
        """Copies of the stored events of a publisher token, ascending."""
        with self.lock:
            self.catch_up_locked()
            return [dict(event) for event in self.events_by_publisher.get(publisher_token, [])]

    def events_of_pipeline(self, pipeline_token: str) -> list[dict[str, Any]]:
        """Copies of the stored events of one job, ascending."""
        with self.lock:
            self.catch_up_locked()
            return [dict(event) for event in self.events_by_pipeline.get(pipeline_token, [])]

    def rollup_locked(self, publisher_token: str) -> dict[str, Any]:
        """The rollup of a publisher token at the current time."""
        return build_rollup(self.events_by_publisher.get(publisher_token, []), self.now_ms())

    # ---------------------------------------------------------------- jobs

    def stage_job_locked(self, job: StandInJob, staged_name: str, payload_size: int) -> None:
        """StreamNotifier's three staging events, then the job is queued for the scheduler."""
        self.jobs[job.pipeline_token] = job
        self.jobs_by_publisher.setdefault(job.publisher_token, []).append(job.pipeline_token)
        self.emit_locked(
            job,
            "StreamNotifier",
            "begin",
            "info",
            f"Stream data received, pipeline: {job.pipeline}, filename: {staged_name}",
        )
        self.emit_locked(job, "StreamNotifier", "processing", "info", f"Total data size: {payload_size}")
        self.emit_locked(job, "StreamNotifier", "end", "info", "Process completed successfully")
        job.queued_at_ms = self.last_event_ms
        job.starts_at_ms = self.next_tick_ms(job.queued_at_ms + int(job.job_start_seconds * 1000))
        self.active_jobs[job.pipeline_token] = job
        self.changed.notify_all()

    def next_tick_ms(self, eligible_ms: int) -> int:
        """The first scheduler tick after ``eligible_ms`` (``findJobsToStart`` runs every few seconds)."""
        tick_ms = int(self.settings.scheduler_tick_seconds * 1000)
        if tick_ms <= 0:
            return eligible_ms
        ticks = (eligible_ms - self.tick_origin_ms) // tick_ms + 1
        return self.tick_origin_ms + ticks * tick_ms

    def new_job(self, publisher_token: str, pipeline: str, tap_name: str, **fields: Any) -> StandInJob:
        """A queued job with a fresh pipeline token (not stored until it is staged)."""
        return StandInJob(
            pipeline_token=str(uuid.uuid4()),
            publisher_token=publisher_token,
            pipeline=pipeline,
            tap_name=tap_name,
            **fields,
        )

    def observe_locked(self, job: StandInJob) -> None:
        """A status poll read the job (it changes nothing)."""
        job.polls += 1

    # ---------------------------------------------------------------- the job timeline

    @staticmethod
    def job_timeline(job: StandInJob) -> list[tuple[int, str]]:
        """A job's steps after staging, each with its due time: start, progress events, end."""
        steps = [(job.starts_at_ms, "start")]
        if job.job_seconds is None:
            return steps
        duration_ms = int(job.job_seconds * 1000)
        if job.outcome == "warning":
            steps.append((job.starts_at_ms + duration_ms // 2, "warning"))
        if job.outcome != "error" and job.loader is not None:
            steps.append((job.starts_at_ms + duration_ms * 9 // 10, "loaded"))
        steps.append((job.starts_at_ms + duration_ms, "end"))
        return steps

    def next_due_locked(self) -> int | None:
        """When the next job step is due (stand-in epoch ms), or None when no job has one."""
        due_times = []
        for job in self.active_jobs.values():
            timeline = self.job_timeline(job)
            if job.steps_done < len(timeline):
                due_times.append(timeline[job.steps_done][0])
        return min(due_times, default=None)

    def catch_up_locked(self) -> None:
        """Take every job step due by now, in time order, each stamped with its own due time.

        The scheduler thread calls this when a step falls due; readers call it too, so what they
        see never lags behind the clock.
        """
        now_ms = self.now_ms()
        while True:
            best: tuple[int, StandInJob, str] | None = None
            for job in self.active_jobs.values():
                timeline = self.job_timeline(job)
                if job.steps_done >= len(timeline):
                    continue
                due_ms, step = timeline[job.steps_done]
                if due_ms <= now_ms and (best is None or due_ms < best[0]):
                    best = (due_ms, job, step)
            if best is None:
                return
            due_ms, job, step = best
            job.steps_done += 1
            self._take_step_locked(job, step, due_ms)

    def _take_step_locked(self, job: StandInJob, step: str, at_ms: int) -> None:
        if step == "start":
            job.state = JOB_PROCESSING  # the JobRunner thread runs: the job is killable now
            self.emit_locked(job, "JobRunner", "begin", "info", "Process started", at_ms=at_ms)
        elif step == "warning":
            self.emit_locked(job, "DataQuality", "processing", "warning", job.pipeline_warning, at_ms=at_ms)
        elif step == "loaded":
            loader = str(job.loader)
            self.emit_locked(job, loader, "processing", "info", f"Loaded {job.record_count} records", at_ms=at_ms)
        else:
            self._finish_job_locked(job, at_ms)
            self.active_jobs.pop(job.pipeline_token, None)

    def _finish_job_locked(self, job: StandInJob, at_ms: int) -> None:
        """The JobRunner ends the job with its outcome's events."""
        if job.outcome == "error":
            loader = job.loader or "PostgresLoader"
            if self.settings.error_style == "json":
                # Newer servers keep the description to one line and put the stack trace in `detail`.
                description, detail = job.pipeline_error, job_failure_detail(job.pipeline_error)
            else:
                # Older servers put the whole stack trace in the description.
                description, detail = job.pipeline_error + "\n" + job_failure_detail(job.pipeline_error), None
            self.emit_locked(job, loader, "end", "error", description, at_ms=at_ms)
            self.emit_locked(job, "JobRunner", "end", "error", description, detail, at_ms=at_ms)
        else:
            self.emit_locked(job, "JobRunner", "end", "info", "Process completed", at_ms=at_ms)
        job.state = JOB_COMPLETED

    def kill_locked(self, pipeline_token: str) -> None:
        """``POST /job/kill``: only a PROCESSING job can be cancelled; anything else is a 500."""
        self.catch_up_locked()
        job = self.jobs.get(pipeline_token)
        if job is None:
            raise DatrisError(f"Job not found for pipeline token: {pipeline_token}")
        if job.state != JOB_PROCESSING:
            raise DatrisError(f"Job is not running (state: {job.state})")
        self.emit_locked(job, "JobRunner", "end", "error", "Job cancelled by user")
        job.state = JOB_CANCELLED
        self.active_jobs.pop(pipeline_token, None)
        self.kills.append(pipeline_token)
        self.kill_records.append(RecordedKill(pipeline_token, job.tap_name, self.now_ms()))

    def jobs_of_publisher(self, publisher_token: str) -> list[StandInJob]:
        """Snapshots of the jobs submitted under a publisher token, in submission order."""
        with self.lock:
            self.catch_up_locked()
            return [dataclasses.replace(self.jobs[token]) for token in self.jobs_by_publisher.get(publisher_token, [])]

    # ---------------------------------------------------------------- run logs

    def write_run_log_locked(self, tap_name: str, start_ms: int, fields: dict[str, Any]) -> None:
        """Write the row of a finished run (``/tap/logs`` shows it from now on)."""
        self.run_log_sequence += 1
        self.run_logs.setdefault(tap_name, []).append(
            RunLogRow(tap_name, start_ms, self.run_log_sequence, drop_nulls(fields))
        )
        self.changed.notify_all()

    @staticmethod
    def sorted_rows(rows: list[RunLogRow]) -> list[RunLogRow]:
        """Newest first by run time (the server sorts ``<tap>|<runTime>`` keys in reverse); rows of the
        same second stay newest-written first."""
        return sorted(rows, key=lambda row: (format_datris_time(row.started_ms), row.sequence), reverse=True)

    def run_log_fields(self, tap_name: str) -> list[dict[str, Any]]:
        """Every run-log row of a tap, newest first, without ``pipelineRollup`` (not capped at 50)."""
        with self.lock:
            return [dict(row.fields) for row in self.sorted_rows(self.run_logs.get(tap_name, []))]

    # ---------------------------------------------------------------- waiting

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` holds (checked under the lock after every change)."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout=timeout)
