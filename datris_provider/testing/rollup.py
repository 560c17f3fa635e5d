"""The rollup of ``/pipeline/status?withrollup=true``: job and aggregate statuses computed from events.

The rules are the server's ``PipelineStatusUtil``; they read events only, never the in-memory jobs.
"""

from __future__ import annotations

import time
from typing import Any

from datris_provider.testing.wire import drop_nulls, format_elapsed

__all__ = ["TERMINAL_JOB_STATUSES", "TIMED_OUT_AFTER_MS", "build_rollup", "job_rollup"]

# A job with no terminal event is reported as timed_out once its first event is this old.
TIMED_OUT_AFTER_MS = 8 * 60 * 60 * 1000
TERMINAL_JOB_STATUSES = frozenset({"success", "warning", "error", "timed_out"})


def job_rollup(job_events: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
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
        job["lastError"] = drop_nulls(
            {"processName": first_error.get("processName"), "description": first_error.get("description")}
        )
    return drop_nulls(job)


def build_rollup(events: list[dict[str, Any]], now_ms: int | None = None) -> dict[str, Any]:
    """Compute the ``rollup`` object of ``/pipeline/status?withrollup=true`` from status events.

    One job per distinct ``pipelineToken`` (sorted by its ``startedAt`` text); ``allDone`` is true when
    there is at least one job and every job is terminal; the aggregate status is ``processing`` with
    no jobs, else ``error`` if any job is error or timed_out, else ``warning`` if any job is warning,
    else ``success`` if all jobs succeeded, else ``processing``.

    :param events: the stored events in ascending order, as ``/pipeline/status`` returns them.
    :param now_ms: the current time in epoch ms (used for processing jobs and the 8 h time-out).
    """
    current_ms = int(time.time() * 1000) if now_ms is None else now_ms
    events_by_job: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        events_by_job.setdefault(str(event.get("pipelineToken")), []).append(event)
    jobs = [job_rollup(job_events, current_ms) for job_events in events_by_job.values()]
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
