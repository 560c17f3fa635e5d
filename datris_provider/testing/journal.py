"""The journal: what the stand-in received and did, in order, and assertions that read like a DAG test.

It records the requests (with their headers, query and body), the uploads, the script runs (who
started them, with which params and environment, when they started and ended, what they returned)
and the kills. The assertion helpers raise ``AssertionError`` with what was seen, so a failing test
says what happened::

    outcome = datris_dag_runner.run("daily_orders")
    datris_stand_in.journal.assert_posted_once("orders_api", params={"since": "2026-05-01"})
    datris_stand_in.journal.assert_nothing_killed()
    datris_stand_in.journal.assert_no_key_sent()
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import TYPE_CHECKING, Any

from datris_provider.testing.injection import normalise_route
from datris_provider.testing.model import RecordedKill, RecordedRequest, RecordedUpload, ScriptRun
from datris_provider.testing.rollup import build_rollup

if TYPE_CHECKING:
    from collections.abc import Mapping

    from datris_provider.testing.serving import Call
    from datris_provider.testing.state import StandInState

__all__ = ["Journal"]

RUN_ROUTE = "POST /tap/run"
# The key header is never shown, only whether one was sent.
_KEY_HEADER = "x-api-key"


class Journal:
    """What the stand-in received and did.

    :param state: the server state (it holds the script runs and the kills).
    :param limit: keep at most this many requests (and uploads); None keeps all.
    """

    def __init__(self, state: StandInState, limit: int | None = None) -> None:
        self._lock = threading.Lock()
        self._state = state
        self.limit = limit
        self.requests: list[RecordedRequest] = []
        self.uploads: list[RecordedUpload] = []

    def clear(self) -> None:
        """Forget the recorded requests and uploads (the state forgets its runs and kills itself)."""
        with self._lock:
            self.requests.clear()
            self.uploads.clear()

    def record_request(self, call: Call, fault: str | None) -> bool:
        """Record one request; returns True when old entries were dropped to respect the limit."""
        upload: RecordedUpload | None = None
        with self._lock:
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
                    fault=fault,
                    upload=upload,
                    form=dict(call.form),
                )
            )
            if self.limit is None or len(self.requests) <= self.limit:
                return False
            del self.requests[: len(self.requests) - self.limit]
            if len(self.uploads) > self.limit:
                del self.uploads[: len(self.uploads) - self.limit]
            return True

    # ---------------------------------------------------------------- reading

    def calls(self, route: str) -> list[RecordedRequest]:
        """The requests of one route, e.g. ``calls("POST /tap/run")`` (``/api/v1`` may be included)."""
        wanted = normalise_route(route)
        with self._lock:
            return [request for request in self.requests if request.route == wanted]

    def posts(self, tap_name: str, mode: str | None = "run") -> list[RecordedRequest]:
        """The ``POST /tap/run`` calls for one tap that asked for ``mode`` (None: any mode).

        A call without ``mode`` is a test run, as on the server.
        """
        posts = []
        for request in self.calls(RUN_ROUTE):
            body = request.json if isinstance(request.json, dict) else {}
            if body.get("name") != tap_name:
                continue
            asked = str(body.get("mode") or "test").strip().lower()
            if mode is None or asked == mode:
                posts.append(request)
        return posts

    def script_runs(self, tap_name: str | None = None, *, client: str | None = None) -> list[ScriptRun]:
        """The accepted runs (snapshots), oldest first; optionally one tap's, or one client's
        (``airflow``, ``other`` or ``cron``)."""
        with self._state.lock:
            return [
                dataclasses.replace(run)
                for run in self._state.script_runs
                if (tap_name is None or run.tap_name == tap_name) and (client is None or run.client == client)
            ]

    def kills(self) -> list[RecordedKill]:
        """The successful kills, in order."""
        with self._state.lock:
            return list(self._state.kill_records)

    def run_spans(self, tap_name: str) -> list[tuple[ScriptRun, int, int | None]]:
        """Each ``mode=run`` run of a tap with when it started and when it was done (stand-in ms):
        after its script and every job it submitted; None while it is still in flight."""
        spans: list[tuple[ScriptRun, int, int | None]] = []
        with self._state.lock:
            self._state.catch_up_locked()
            now_ms = self._state.now_ms()
            for run in self._state.script_runs:
                if run.tap_name != tap_name or run.mode != "run":
                    continue
                end = run.ended_at_ms
                if end is not None and run.publisher_token:
                    events = self._state.events_by_publisher.get(run.publisher_token, [])
                    rollup = build_rollup(events, now_ms)
                    end = max(end, max(int(e["epoch"]) for e in events)) if rollup["allDone"] else None
                spans.append((dataclasses.replace(run), run.started_at_ms, end))
        return spans

    # ---------------------------------------------------------------- assertions

    def assert_posted_once(self, tap_name: str, params: Mapping[str, Any] | None = None) -> RecordedRequest:
        """Exactly one ``POST /tap/run`` with ``mode=run`` arrived for the tap (and, when ``params`` is
        given, it carried exactly these params). Returns that request."""
        posts = self.posts(tap_name)
        if len(posts) != 1:
            seen = [_body_of(request) for request in posts]
            raise AssertionError(f"expected one mode=run POST /tap/run for tap {tap_name!r}, got {len(posts)}: {seen}")
        (post,) = posts
        if params is not None:
            sent = _body_of(post).get("params")
            if sent != dict(params):
                raise AssertionError(f"tap {tap_name!r} was posted with params {sent!r}, not {dict(params)!r}")
        return post

    def assert_nothing_killed(self) -> None:
        """No job was killed (a refused kill of a job that was not running does not count)."""
        kills = self.kills()
        if kills:
            described = [f"{kill.pipeline_token} (tap {kill.tap_name!r})" for kill in kills]
            raise AssertionError(f"expected no kills, but these jobs were killed: {', '.join(described)}")

    def assert_no_overlapping_runs(self, tap_name: str) -> None:
        """No two ``mode=run`` runs of the tap were in flight at the same time (a run lasts from its
        script's start until its last job is done)."""
        spans = sorted(self.run_spans(tap_name), key=lambda span: span[1])
        for (first, _, first_end), (second, second_start, _) in itertools.pairwise(spans):
            if first_end is None or second_start < first_end:
                raise AssertionError(
                    f"runs of tap {tap_name!r} overlapped: a {second.client} run started at "
                    f"{second.run_time} while the {first.client} run of {first.run_time} was still in flight"
                )

    def assert_no_key_sent(self) -> None:
        """No request carried an ``x-api-key`` header (for a connection that has no key)."""
        carrying = [request.route for request in self.requests if _KEY_HEADER in request.headers]
        if carrying:
            raise AssertionError(f"{len(carrying)} request(s) carried an x-api-key header: {carrying[:5]}")

    # ---------------------------------------------------------------- export

    def to_json(self, tap_name: str | None = None) -> dict[str, Any]:
        """The journal as plain JSON data (the admin route serves it). Key values are not shown."""
        requests = [
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "json": request.json,
                "form": request.form,
                "headers": {
                    name: ("<set>" if name == _KEY_HEADER else value) for name, value in request.headers.items()
                },
                "fault": request.fault,
                "upload": dataclasses.asdict(request.upload) if request.upload else None,
            }
            for request in list(self.requests)
        ]
        script_runs = [
            {
                "tap_name": run.tap_name,
                "client": run.client,
                "mode": run.mode,
                "params": run.params,
                "env": run.env,
                "test_limit": run.test_limit,
                "run_time": run.run_time,
                "started_at_ms": run.started_at_ms,
                "ended_at_ms": run.ended_at_ms,
                "status": run.status,
                "publisher_token": run.publisher_token,
                "record_count": run.record_count,
                "error": run.error,
            }
            for run in self.script_runs(tap_name)
        ]
        kills = [dataclasses.asdict(kill) for kill in self.kills() if tap_name in (None, kill.tap_name)]
        uploads = [dataclasses.asdict(upload) for upload in list(self.uploads)]
        return {"requests": requests, "script_runs": script_runs, "kills": kills, "uploads": uploads}


def _shown_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: ("<set>" if name == _KEY_HEADER else value) for name, value in headers.items()}


def _body_of(request: RecordedRequest) -> dict[str, Any]:
    return dict(request.json) if isinstance(request.json, dict) else {}
