"""The run-tracking core against the stand-in Datris, with no Airflow in the loop."""

from __future__ import annotations

import threading
import time

import pytest

from datris_provider.client.api import DatrisClient
from datris_provider.client.errors import DatrisRunNotFoundError, DatrisRunStoppedError, DatrisWaitTimeoutError
from datris_provider.client.settings import ClientSettings, RetryPolicy
from datris_provider.core.pipeline import kill_jobs
from datris_provider.core.steps import drive
from datris_provider.core.tap_run import TapRunSpec, TapRunTracker
from datris_provider.testing import StandInTap


class RecordingListener:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.tokens: list[tuple[str | None, list[str]]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def error(self, message: str) -> None:
        self.lines.append(("error", message))

    def tokens_known(self, publisher_token, pipeline_tokens, pipeline=None) -> None:
        self.tokens.append((publisher_token, list(pipeline_tokens)))

    def pipeline_ended(self, publisher_token) -> None:
        self.lines.append(("info", f"ended {publisher_token}"))

    def posting(self, known_run_times) -> None:
        self.lines.append(("info", f"posting after {len(known_run_times)} known run(s)"))

    def text(self) -> str:
        return "\n".join(message for _, message in self.lines)


@pytest.fixture
def client(datris_stand_in) -> DatrisClient:
    settings = ClientSettings(base_url=datris_stand_in.url, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    return DatrisClient(settings)


def _tracker(client, tap_name: str, listener: RecordingListener, **spec) -> TapRunTracker:
    return TapRunTracker(client, TapRunSpec(tap_name=tap_name, poll_interval=0.02, **spec), listener)


def _kill_unfinished(tracker: TapRunTracker, client, listener: RecordingListener):
    return drive(kill_jobs(tracker.unfinished_tokens(), listener, clock=time.monotonic), client, time.sleep)


def test_tokens_are_reported_before_the_wait(datris_stand_in, client):
    datris_stand_in.add_tap(StandInTap(name="orders", job_seconds=4.0))
    listener = RecordingListener()

    result = _tracker(client, "orders", listener).run()

    assert listener.tokens == [(result.publisher_token, result.pipeline_tokens)]
    assert result.status == "success"


def test_a_run_already_in_flight_is_joined_not_repeated(datris_stand_in, client):
    datris_stand_in.add_tap(StandInTap(name="orders", script_seconds=30.0))
    other = threading.Thread(target=lambda: _tracker(client, "orders", RecordingListener()).run())
    other.start()
    datris_stand_in.wait_until_running("orders")
    listener = RecordingListener()

    result = _tracker(client, "orders", listener).run()
    other.join()

    assert len(datris_stand_in.calls("POST /tap/run")) == 1
    assert result.publisher_token == datris_stand_in.run_logs("orders")[0]["publisherToken"]
    assert "is busy: a run of the tap is in flight on Datris" in listener.text()
    assert "follows that run instead of starting a second one" in listener.text()


def test_a_run_call_that_never_reached_datris_is_reported_as_not_found(datris_stand_in, client):
    datris_stand_in.add_tap(StandInTap(name="orders"))
    datris_stand_in.reset("POST /tap/run")

    with pytest.raises(DatrisRunNotFoundError, match="never started") as err:
        _tracker(client, "orders", RecordingListener()).run()

    assert err.value.retryable
    assert datris_stand_in.run_logs("orders") == []


def test_stop_ends_the_wait(datris_stand_in, client):
    datris_stand_in.add_tap(StandInTap(name="orders", job_seconds=None))
    listener = RecordingListener()
    tracker = _tracker(client, "orders", listener)
    original = listener.tokens_known
    listener.tokens_known = lambda *args: (original(*args), tracker.signal.stop())  # type: ignore[method-assign]

    with pytest.raises(DatrisRunStoppedError):
        tracker.run()


def test_kill_asks_once_per_unfinished_job_and_takes_not_running_calmly(datris_stand_in, client):
    datris_stand_in.add_tap(StandInTap(name="docs", tap_type="document", documents=2, job_seconds=None))
    listener = RecordingListener()
    tracker = _tracker(client, "docs", listener, timeout=0.3)
    with pytest.raises(DatrisWaitTimeoutError, match="did not finish in time"):
        tracker.run()

    first = _kill_unfinished(tracker, client, listener)
    second = _kill_unfinished(tracker, client, listener)

    assert [answer.killed for answer in first] == [True, True]
    assert sorted(datris_stand_in.kills) == sorted(answer.pipeline_token for answer in first)
    assert [answer.killed for answer in second] == [False, False]
    assert "normal if it ended" in listener.text()


def test_kill_before_any_job_exists_says_the_script_cannot_be_cancelled(client):
    listener = RecordingListener()
    assert _kill_unfinished(_tracker(client, "orders", listener), client, listener) == []
    assert "cannot be cancelled" in listener.text()


def test_wait_for_completion_false_stops_after_submission(datris_stand_in, client):
    datris_stand_in.add_tap(StandInTap(name="orders"))
    result = _tracker(client, "orders", RecordingListener(), wait_for_completion=False).run()
    assert result.status == "submitted"
    assert datris_stand_in.calls("GET /pipeline/status") == []
