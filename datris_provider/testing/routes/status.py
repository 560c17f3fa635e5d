"""``GET /pipeline/status``: the events of a publisher or pipeline token, with or without the rollup.

A poll only observes: it reads what the job lifecycle has written so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datris_provider.testing.rollup import build_rollup, job_rollup
from datris_provider.testing.wire import Reply, drop_nulls, spring_error

if TYPE_CHECKING:
    from datris_provider.testing.auth import Caller
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call

__all__ = ["get_pipeline_status"]

STATUS_SUMMARY_PAGE_SIZE = 20


def get_pipeline_status(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """Token queries answer every event; without a token, a page of job summaries."""
    # Spring request params are case-sensitive: only the lower-case names are read.
    publisher_token = call.query.get("publishertoken")
    pipeline_token = call.query.get("pipelinetoken")
    with_rollup = call.query.get("withrollup", "").lower() == "true"
    if not publisher_token and not pipeline_token:
        return _summary_page(context, call)
    state = context.state
    with state.lock:
        if publisher_token:
            for token in state.jobs_by_publisher.get(publisher_token, []):
                state.observe_locked(state.jobs[token])
            events = [dict(event) for event in state.events_by_publisher.get(publisher_token, [])]
        else:
            job = state.jobs.get(str(pipeline_token))
            if job is not None:
                state.observe_locked(job)
            events = [dict(event) for event in state.events_by_pipeline.get(str(pipeline_token), [])]
        now_ms = state.now_ms()
    if with_rollup:
        return Reply.json({"rollup": build_rollup(events, now_ms), "events": events})
    return Reply.json(events)


def _summary_page(context: RouteContext, call: Call) -> Reply:
    try:
        page = max(0, int(call.query.get("page", "0")))
    except ValueError:
        return spring_error(400, call.full_path)
    state = context.state
    with state.lock:
        now_ms = state.now_ms()
        summaries = []
        for job in state.jobs.values():
            job_events = state.events_by_pipeline.get(job.pipeline_token, [])
            if not job_events:
                continue
            rolled = job_rollup(job_events, now_ms)
            status = "error" if rolled["status"] == "timed_out" else rolled["status"]
            summaries.append(
                drop_nulls(
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
    return Reply.json(summaries[start : start + STATUS_SUMMARY_PAGE_SIZE])
