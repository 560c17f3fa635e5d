"""Tap routes: ``GET /tap``, ``GET /taps``, ``POST /tap/run``, ``POST /tap/test`` and the run history
``GET /tap/logs``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datris_provider.testing.auth import ANONYMOUS
from datris_provider.testing.model import DatrisError, StandInTap
from datris_provider.testing.routes.base import json_object_body
from datris_provider.testing.runs import parse_test_limit, preview_records
from datris_provider.testing.wire import Reply, drop_nulls, gson_dumps, spring_error

if TYPE_CHECKING:
    from datris_provider.testing.auth import Caller
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call

__all__ = ["get_all_tap_logs", "get_tap", "get_tap_logs", "get_taps", "run_tap", "tap_config", "test_tap"]

RUN_LOG_ROWS_RETURNED = 50
LOGS_ALL_DEFAULT_LIMIT = 2000
LOGS_ALL_MAX_LIMIT = 5000
LOGS_ALL_DEFAULT_WINDOW_MS = 30 * 24 * 60 * 60 * 1000


def tap_config(tap: StandInTap, *, integers_as_doubles: bool) -> dict[str, Any]:
    """The stored TapConfig as the server serialises it (nulls left out)."""

    def number(value: int | None) -> int | float | None:
        if value is None:
            return None
        return float(value) if integers_as_doubles else value

    return drop_nulls(
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


def get_tap(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /tap?name=``: one tap config, every integer written as a double."""
    name = call.query.get("name")
    if name is None:
        return spring_error(400, call.full_path)
    # Another client's run waiting for this read starts first, so this answer already shows it.
    context.runner.start_waiting_on_read(name)
    with context.state.lock:
        tap = context.state.taps.get(name)
        if tap is None:
            raise DatrisError(f"Tap: {name} not found")
        # The endpoint re-serialises the config through a Gson map: every integer becomes a double.
        config = tap_config(tap, integers_as_doubles=True)
    config["script"] = f"def fetch():\n    # stand-in script of tap {name}\n    return []\n"
    return Reply.json(config)


def get_taps(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /taps``: every tap the caller may read (``owner=self`` keys see their own)."""
    with context.state.lock:
        configs = [
            tap_config(tap, integers_as_doubles=False)
            for tap in context.state.taps.values()
            if caller.owner_allowed("tap", "read", tap.owner)
        ]
    return Reply.json(configs)


def run_tap(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``POST /tap/run``: blocks while the script runs, answers HTTP 200 even for a failed run."""
    body = json_object_body(call)
    if isinstance(body, Reply):
        return body
    raw_name = body.get("name")
    name = "" if raw_name is None else str(raw_name)
    if not name.strip():
        raise DatrisError("Tap name is required")
    raw_mode = body.get("mode")
    mode = str(raw_mode).strip().lower() if raw_mode not in (None, "") else "test"
    # Anything but a JSON object is silently ignored, like the server does.
    raw_params = body.get("params")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    test_limit = parse_test_limit(body.get("testLimit"), context.settings.error_style) if mode == "test" else None
    return Reply.json(context.runner.run(name, mode, params, test_limit, caller))


def test_tap(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``POST /tap/test``: run the tap configuration in the body in test mode (nothing is persisted).

    The body is a TapConfig; a stored tap of that name runs with its stand-in behaviour, an unsaved
    one with the defaults. ``testLimit`` is a query parameter here: above 0 it caps the records,
    otherwise there is no cap. The answer has the records, their count, the logs and ``durationMs``.
    """
    body = json_object_body(call)
    if isinstance(body, Reply):
        return body
    raw_limit = call.query.get("testLimit")
    try:
        limit = int(raw_limit) if raw_limit not in (None, "") else 0
    except ValueError:
        return spring_error(400, call.full_path)  # the Integer parameter does not bind
    name = str(body.get("name") or "")
    script_path = body.get("scriptPath")
    if not script_path:
        raise DatrisError("Script path is required for testing")
    unsaved = StandInTap(name=name or "unsaved_tap", target_pipeline=body.get("targetPipeline"))
    started_ms = context.state.now_ms()
    # The test route does not check the owner scope; tap:run was checked by the interceptor.
    answer = context.runner.run(unsaved.name, "test", {}, limit if limit > 0 else None, ANONYMOUS, unsaved=unsaved)
    with context.state.lock:
        tap = context.state.taps.get(unsaved.name, unsaved)
        records = preview_records(tap, int(answer.get("recordCount", 0))) if "error" not in answer else None
    return Reply.json(
        drop_nulls(
            {
                "records": records,
                "recordCount": answer.get("recordCount", 0),
                "error": answer.get("error"),
                "logs": answer.get("logs"),
                "dataType": answer.get("dataType"),
                "columns": answer.get("columns"),
                "durationMs": max(0, context.state.now_ms() - started_ms),
            }
        )
    )


def get_tap_logs(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /tap/logs?name=``: the newest 50 runs, each with its ``pipelineRollup`` (or null)."""
    name = call.query.get("name")
    if name is None:
        return spring_error(400, call.full_path)
    state = context.state
    with state.lock:
        rows = state.sorted_rows(state.run_logs.get(name, []))[:RUN_LOG_ROWS_RETURNED]
        entries = []
        for row in rows:
            entry = dict(row.fields)
            token = entry.get("publisherToken")
            # Always written, even as null (the one exception to "nulls left out").
            entry["pipelineRollup"] = state.rollup_locked(token) if token else None
            entries.append(entry)
    return Reply(200, gson_dumps(entries))


def get_all_tap_logs(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /tap/logs/all?since=&limit=``: flat run logs of every tap, no rollup."""
    state = context.state
    now_ms = state.now_ms()
    try:
        since = int(call.query.get("since", now_ms - LOGS_ALL_DEFAULT_WINDOW_MS))
        limit = int(call.query.get("limit", LOGS_ALL_DEFAULT_LIMIT))
    except ValueError:
        return spring_error(400, call.full_path)
    limit = max(0, min(limit, LOGS_ALL_MAX_LIMIT))
    with state.lock:
        rows = [row for tap_rows in state.run_logs.values() for row in tap_rows if row.started_ms >= since]
        entries = [dict(row.fields) for row in state.sorted_rows(rows)[:limit]]
    return Reply.json(entries)
