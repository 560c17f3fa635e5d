"""The run watcher's cursor: which runs fire, once each, across restarts and a moving run-log window."""

from __future__ import annotations

import json

import pytest

from datris_provider.client.errors import DatrisConfigError, DatrisProtocolError, DatrisTransientError
from datris_provider.client.models import PipelineStatus, Rollup, RunLogEntry
from datris_provider.core.run_watch import (
    FAILED,
    LANDED,
    NO_RECORDS,
    RunCursor,
    RunLogRead,
    RunWatch,
    poll_runs,
    run_start_ms,
)
from datris_provider.core.steps import drive

TAP = "orders_nightly"
T0 = run_start_ms("2026-05-04 06:00:00 UTC")
MINUTE = 60_000
HOUR = 60 * MINUTE


def _time(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def row(started_ms: int, *, token: str | None = None, status: str = "success", tap: str = TAP, **extra) -> RunLogEntry:
    data = {"tapName": tap, "runTime": _time(started_ms), "status": status, "mode": "run", "recordCount": 42}
    if token:
        data["publisherToken"] = token
    data.update(extra)
    return RunLogEntry.parse(data)


def rollup(status: str = "success", *, done: bool = True, token: str = "job-1") -> Rollup:
    job_status = status if done else "processing"
    return Rollup.parse(
        {"allDone": done, "status": status if done else "processing", "jobs": [_job(token, job_status)]}
    )


def _job(token: str, status: str) -> dict:
    job = {"pipelineToken": token, "pipeline": "orders", "status": status}
    if status == "error":
        job["lastError"] = {"processName": "PostgresLoader", "description": "column amount is numeric"}
    return job


WATCH = RunWatch(tap_name=TAP, lookback_seconds=3600)


def started_watch(rows=(), rollups=None, *, watch=WATCH, now=T0):
    """A watcher that made its first read at ``now`` (history does not fire)."""
    return watch.observe(None, list(rows), rollups or {}, now)


def test_a_run_that_landed_after_the_first_start_fires_once_with_its_details():
    first = started_watch()
    run = row(T0 + MINUTE, token="pub-1")

    landed = WATCH.observe(first.cursor, [run], {"pub-1": rollup("success")}, T0 + 2 * MINUTE)
    again = WATCH.observe(landed.cursor, [run], {"pub-1": rollup("success")}, T0 + 3 * MINUTE)

    assert [r.to_event() for r in landed.fired] == [
        {
            "tap": TAP,
            "run_time": _time(T0 + MINUTE),
            "run_key": f"{TAP}|{_time(T0 + MINUTE)}|pub-1",
            "publisher": "pub-1",
            "pipeline_jobs": ["job-1"],
            "pipelines": ["orders"],
            "record_count": 42,
            "status": "success",
            "outcome": LANDED,
            "error": None,
        }
    ]
    assert again.fired == ()


def test_a_row_seen_while_its_pipeline_loads_fires_when_it_lands_not_before():
    cursor = started_watch().cursor
    run = row(T0 + MINUTE, token="pub-1")

    loading = WATCH.observe(cursor, [run], {"pub-1": rollup(done=False)}, T0 + 2 * MINUTE)
    read_failed = WATCH.observe(loading.cursor, [run], {}, T0 + 3 * MINUTE)
    landed = WATCH.observe(read_failed.cursor, [run], {"pub-1": rollup("warning")}, T0 + 4 * MINUTE)

    assert loading.fired == () and read_failed.fired == ()
    assert list(read_failed.cursor.pending) == [f"{TAP}|{_time(T0 + MINUTE)}|pub-1"]
    assert [(r.outcome, r.status) for r in landed.fired] == [(LANDED, "warning")]
    assert landed.cursor.pending == {}


def test_the_rollup_of_a_pending_run_is_asked_for_even_when_its_row_is_no_longer_shown():
    cursor = started_watch().cursor
    loading = WATCH.observe(cursor, [row(T0 + MINUTE, token="pub-1")], {"pub-1": rollup(done=False)}, T0 + MINUTE)

    # Sixty newer runs (test runs included) pushed the row out of what the log returns.
    newer = [row(T0 + MINUTE + i * 1000, mode="test", status="success") for i in range(1, 61)]
    assert WATCH.new_tokens(loading.cursor, newer) == ["pub-1"]
    landed = WATCH.observe(loading.cursor, newer, {"pub-1": rollup("success")}, T0 + 2 * MINUTE)

    assert [r.publisher_token for r in landed.fired] == ["pub-1"]


def test_a_run_that_ends_late_fires_although_newer_runs_were_reported_first():
    cursor = started_watch().cursor
    quick = row(T0 + 10 * MINUTE, token="pub-quick")
    first = WATCH.observe(cursor, [quick], {"pub-quick": rollup()}, T0 + 11 * MINUTE)
    # The slow run started before the quick one but its row appears only when its script ends.
    slow = row(T0 + MINUTE, token="pub-slow")
    second = WATCH.observe(first.cursor, [slow, quick], {"pub-slow": rollup()}, T0 + 40 * MINUTE)

    assert [r.publisher_token for r in first.fired] == ["pub-quick"]
    assert [r.publisher_token for r in second.fired] == ["pub-slow"]


def test_history_rolling_out_of_the_window_never_fires_again_and_the_cursor_stays_small():
    cursor = started_watch().cursor
    fired: list[str] = []
    # Two days of hourly runs; each read shows only the 50 newest rows.
    runs = [row(T0 + h * HOUR + MINUTE, token=f"pub-{h}") for h in range(48)]
    for h in range(48):
        now = T0 + h * HOUR + 2 * MINUTE
        window = sorted(runs[: h + 1], key=lambda r: r.run_time, reverse=True)[:50]
        result = WATCH.observe(cursor, window, {r.publisher_token: rollup() for r in window}, now)
        fired.extend(r.publisher_token for r in result.fired)
        cursor = result.cursor

    assert fired == [f"pub-{h}" for h in range(48)]
    assert len(cursor.seen) <= 2
    assert len(json.dumps(cursor.to_json())) < 1000


def test_a_restart_from_the_saved_cursor_fires_what_landed_while_down_and_nothing_twice():
    cursor = started_watch().cursor
    one = row(T0 + MINUTE, token="pub-1")
    before = WATCH.observe(cursor, [one], {"pub-1": rollup()}, T0 + 2 * MINUTE)
    saved = json.loads(json.dumps(before.cursor.to_json()))

    two = row(T0 + 30 * MINUTE, token="pub-2")
    after = WATCH.observe(RunCursor.from_json(saved), [two, one], {"pub-2": rollup()}, T0 + 50 * MINUTE)

    assert [r.publisher_token for r in before.fired] == ["pub-1"]
    assert [r.publisher_token for r in after.fired] == ["pub-2"]


def test_a_restart_long_after_the_last_read_still_sees_the_runs_since_then():
    cursor = started_watch().cursor
    saved = RunCursor.from_json(json.loads(json.dumps(cursor.to_json())))
    missed = row(T0 + 5 * HOUR, token="pub-late")

    assert WATCH.since_ms(saved, T0 + 9 * HOUR) == saved.horizon_ms
    after = WATCH.observe(saved, [missed], {"pub-late": rollup()}, T0 + 9 * HOUR)

    assert [r.publisher_token for r in after.fired] == ["pub-late"]


def test_the_first_start_fires_nothing_of_the_history_but_follows_a_run_still_loading():
    done = row(T0 - 10 * MINUTE, token="pub-old")
    loading = row(T0 - MINUTE, token="pub-loading")
    failed = row(T0 - 20 * MINUTE, status="failure", error="KeyError 'page'")

    first = WATCH.observe(None, [loading, done, failed], {"pub-old": rollup(), "pub-loading": rollup(done=False)}, T0)
    later = WATCH.observe(first.cursor, [loading, done, failed], {"pub-loading": rollup()}, T0 + MINUTE)

    assert first.fired == ()
    assert [r.publisher_token for r in later.fired] == ["pub-loading"]


def test_catch_up_fires_the_newest_landed_runs_already_there_at_the_first_start():
    watch = RunWatch(tap_name=TAP, lookback_seconds=3600, catch_up_runs=2)
    history = [row(T0 - h * HOUR, token=f"pub-{h}") for h in range(1, 5)]
    failed = row(T0 - 30 * MINUTE, status="failure")

    assert watch.since_ms(None, T0) is None  # the server's whole history (30 days)
    first = watch.observe(None, [failed, *history], {r.publisher_token: rollup() for r in history}, T0)
    again = watch.observe(first.cursor, [failed, *history], {}, T0 + MINUTE)

    assert [r.publisher_token for r in first.fired] == ["pub-2", "pub-1"]
    assert again.fired == ()


def test_by_default_a_failed_run_or_one_without_records_fires_nothing():
    cursor = started_watch().cursor
    rows = [
        row(T0 + MINUTE, status="failure", error="Traceback: KeyError 'page'"),
        row(T0 + 2 * MINUTE, token="pub-bad"),
        row(T0 + 3 * MINUTE, status="no_records", recordCount=0),
    ]
    result = WATCH.observe(cursor, rows, {"pub-bad": rollup("error")}, T0 + 5 * MINUTE)

    assert result.fired == ()
    assert sorted(r.outcome for r in result.decided) == sorted([FAILED, FAILED, NO_RECORDS])


def test_failed_runs_and_runs_without_records_fire_when_asked_for():
    watch = RunWatch(tap_name=TAP, lookback_seconds=3600, fire_on=frozenset({FAILED, NO_RECORDS}))
    cursor = watch.observe(None, [], {}, T0).cursor
    rows = [
        row(T0 + MINUTE, status="failure", error="Traceback: KeyError 'page'"),
        row(T0 + 2 * MINUTE, token="pub-bad"),
        row(T0 + 3 * MINUTE, status="no_records", recordCount=0),
        row(T0 + 4 * MINUTE, token="pub-good"),
    ]
    result = watch.observe(cursor, rows, {"pub-bad": rollup("error"), "pub-good": rollup()}, T0 + 5 * MINUTE)

    assert [(r.outcome, r.status) for r in result.fired] == [
        (FAILED, "failure"),
        (FAILED, "error"),
        (NO_RECORDS, "no_records"),
    ]
    assert result.fired[1].error == "PostgresLoader: column amount is numeric"


def test_other_taps_and_test_runs_are_not_this_watchers_runs():
    cursor = started_watch().cursor
    rows = [row(T0 + MINUTE, token="pub-other", tap="another_tap"), row(T0 + MINUTE, token="pub-test", mode="test")]

    assert WATCH.new_tokens(cursor, rows) == []
    assert WATCH.observe(cursor, rows, {}, T0 + 2 * MINUTE).fired == ()


def test_a_run_that_overwrote_a_row_in_the_same_second_is_a_new_run():
    cursor = started_watch().cursor
    first = WATCH.observe(cursor, [row(T0 + MINUTE, token="pub-a")], {"pub-a": rollup()}, T0 + MINUTE)
    second = WATCH.observe(first.cursor, [row(T0 + MINUTE, token="pub-b")], {"pub-b": rollup()}, T0 + 2 * MINUTE)

    assert [r.publisher_token for r in second.fired] == ["pub-b"]


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"tap_name": " "}, "tap_name"),
        ({"tap_name": TAP, "fire_on": frozenset({"succeeded"})}, "fire_on"),
        ({"tap_name": TAP, "fire_on": frozenset()}, "fire_on"),
        ({"tap_name": TAP, "catch_up_runs": -1}, "catch_up_runs"),
        ({"tap_name": TAP, "lookback_seconds": 0}, "lookback_seconds"),
    ],
)
def test_bad_watcher_arguments_say_what_to_fix(kwargs, fix):
    with pytest.raises(DatrisConfigError, match=fix):
        RunWatch(**kwargs)


def test_an_unreadable_saved_cursor_counts_as_a_first_start():
    assert RunCursor.from_json(None) is None
    assert RunCursor.from_json({"version": 99}) is None
    assert RunCursor.from_json({"version": 1, "horizon_ms": "soon"}) is None


def test_a_run_time_in_another_shape_is_refused_clearly():
    with pytest.raises(DatrisProtocolError, match="runTime"):
        run_start_ms("04/05/2026 06:00")


class _Client:
    def __init__(self, rows, statuses):
        self.rows, self.statuses, self.calls = rows, statuses, []

    def get_all_tap_logs(self, *, since_ms, limit):
        self.calls.append(("logs", since_ms))
        return self.rows

    def get_pipeline_status(self, token):
        self.calls.append(("status", token))
        answer = self.statuses[token]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _status(rollup_: Rollup) -> PipelineStatus:
    return PipelineStatus(rollup=rollup_, events=())


def test_one_poll_reads_the_log_since_the_horizon_and_only_the_rollups_it_needs():
    cursor = started_watch().cursor
    client = _Client(
        [row(T0 + MINUTE, token="pub-1"), row(T0 + MINUTE, tap="another_tap", token="pub-x")],
        {"pub-1": _status(rollup())},
    )

    result = drive(poll_runs(WATCH, cursor, clock=lambda: (T0 + 2 * MINUTE) / 1000), client, sleep=lambda s: None)

    assert client.calls == [("logs", cursor.horizon_ms), ("status", "pub-1")]
    assert [r.publisher_token for r in result.fired] == ["pub-1"]


def test_a_failed_rollup_read_keeps_the_run_pending_instead_of_dropping_it():
    cursor = started_watch().cursor
    client = _Client([row(T0 + MINUTE, token="pub-1")], {"pub-1": DatrisTransientError("503")})

    result = drive(poll_runs(WATCH, cursor, clock=lambda: (T0 + 2 * MINUTE) / 1000), client, sleep=lambda s: None)

    assert result.fired == ()
    assert [run.publisher_token for run in result.cursor.pending.values()] == ["pub-1"]


def test_a_shared_read_that_reaches_back_far_enough_saves_the_watchers_own_read():
    cursor = started_watch().cursor
    client = _Client([], {"pub-1": _status(rollup())})
    shared = RunLogRead((row(T0 + MINUTE, token="pub-1"),), since_ms=cursor.horizon_ms - 1, read_at_ms=T0 + 2 * MINUTE)

    result = drive(poll_runs(WATCH, cursor, shared=shared), client, sleep=lambda s: None)

    assert client.calls == [("status", "pub-1")]
    assert [r.publisher_token for r in result.fired] == ["pub-1"]


def test_a_watcher_behind_the_shared_read_reads_from_its_own_horizon():
    cursor = started_watch().cursor
    client = _Client([row(T0 + MINUTE, token="pub-1")], {"pub-1": _status(rollup())})
    shared = RunLogRead((), since_ms=cursor.horizon_ms + HOUR, read_at_ms=T0 + 2 * HOUR)

    result = drive(poll_runs(WATCH, cursor, shared=shared), client, sleep=lambda s: None)

    assert client.calls == [("logs", cursor.horizon_ms), ("status", "pub-1")]
    assert [r.publisher_token for r in result.fired] == ["pub-1"]


def test_a_run_whose_token_never_shows_a_job_is_given_up_as_failed_after_the_lookback():
    cursor = started_watch().cursor
    no_jobs = Rollup.parse({"allDone": False, "status": "processing", "jobs": []})
    run = row(T0 + MINUTE, token="pub-ghost")

    waiting = WATCH.observe(cursor, [run], {"pub-ghost": no_jobs}, T0 + 30 * MINUTE)
    given_up = WATCH.observe(waiting.cursor, [], {"pub-ghost": no_jobs}, T0 + 2 * HOUR)

    assert waiting.fired == () and list(waiting.cursor.pending)
    assert [(r.outcome, r.publisher_token) for r in given_up.decided] == [(FAILED, "pub-ghost")]
    assert given_up.fired == () and given_up.cursor.pending == {}
