"""The busy-tap rule and the retry rule of the core, driven with a scripted Datris (no HTTP, no Airflow).

Each test plays the server's answers in order and checks what the task would do: which calls it makes,
whether it posts its own run, what it reports, and how it fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from datris_provider.client.errors import DatrisConfigError, DatrisRunAmbiguousError, DatrisTapBusyError
from datris_provider.client.models import RunLogEntry, ServerVersion, TapConfig, TapRunResponse
from datris_provider.core.busy import resolve_if_busy
from datris_provider.core.notes import NoteCollector
from datris_provider.core.steps import drive
from datris_provider.core.tap_run import TapRunSpec, plan_run, start_run

TOKEN = "5b0e8f4e-6a71-4c0e-9a55-0f3c2d1e9b11"


def tap(running: bool = False) -> TapConfig:
    data: dict[str, Any] = {"name": "orders", "targetPipeline": "orders", "enabled": True}
    if running:
        data["lastRunStatus"] = "running"
    return TapConfig.parse(data)


def row(run_time: str, token: str | None = TOKEN, records: int = 5) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tapName": "orders",
        "runTime": run_time,
        "status": "success",
        "recordCount": records,
        "mode": "run",
        "durationMs": 100,
        "pipelineRollup": None,
    }
    if token:
        data["publisherToken"] = token
        data["pipelineRollup"] = {"allDone": False, "status": "processing", "jobs": []}
    return data


def accepted() -> TapRunResponse:
    return TapRunResponse.parse(
        {
            "tap": "orders",
            "status": "success",
            "mode": "run",
            "persisted": True,
            "publisherToken": TOKEN,
            "pipelineTokens": ["c2d7a3f0-1b2c-4d5e-8f90-a1b2c3d4e5f6"],
            "recordCount": 5,
            "targetPipeline": "orders",
        }
    )


def debounced() -> TapRunResponse:
    return TapRunResponse.parse(
        {
            "tap": "orders",
            "status": "skipped",
            "mode": "run",
            "persisted": False,
            "persistedReason": "debounced",
            "recordCount": 0,
            "error": "Tap 'orders' was triggered 1200 ms ago; ignoring this duplicate request",
        }
    )


class ScriptedDatris:
    """Answers each client method from its own queue; the last answer of a queue repeats."""

    def __init__(self, **answers: list[Any]) -> None:
        self.answers = {name: list(values) for name, values in answers.items()}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in self.answers:
            raise AttributeError(name)

        def answer(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args))
            queue = self.answers[name]
            return queue.pop(0) if len(queue) > 1 else queue[0]

        return answer

    def count(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)


def version() -> ServerVersion:
    return ServerVersion.parse({"version": "1.53.0", "tapRunTimeoutSeconds": "3600"})


def run(spec: TapRunSpec, datris: ScriptedDatris, notes: NoteCollector | None = None, sleeps=None) -> Any:
    notes = notes or NoteCollector()
    sleeps = [] if sleeps is None else sleeps
    plan = drive(plan_run(spec, notes), datris, sleeps.append)
    return drive(start_run(spec, plan, notes, recheck=False), datris, sleeps.append), notes


def test_params_pick_wait_and_no_params_pick_join():
    assert resolve_if_busy(None, {"since": "2026-01-01"}, owner="t") == "wait"
    assert resolve_if_busy(None, {}, owner="t") == "join"
    assert resolve_if_busy("fail", {"since": "x"}, owner="t") == "fail"
    with pytest.raises(DatrisConfigError, match="if_busy must be one of 'wait', 'join', 'fail'"):
        resolve_if_busy("queue", None, owner="t")


def test_a_window_waits_for_a_busy_tap_then_posts_its_own_run():
    datris = ScriptedDatris(
        get_version=[version()],
        get_tap=[tap(running=True)] * 4 + [tap()],
        get_tap_logs=[[], [RunLogEntry.parse(row("2026-05-04 14:00:00 UTC", token="other"))]],
        run_tap=[accepted()],
    )
    spec = TapRunSpec(tap_name="orders", params={"since": "2026-05-04"}, if_busy="wait", poll_interval=30)

    outcome, notes = run(spec, datris)

    assert outcome.publisher_token == TOKEN
    assert datris.count("run_tap") == 1
    warnings = [text for level, text in notes.notes if level == "warning"]
    assert any("is busy: a run of the tap is in flight" in text for text in warnings)
    assert any("Still waiting for tap 'orders' to be idle: 60 s" in text for text in warnings)


def test_a_debounced_window_posts_again_once_the_tap_is_idle():
    datris = ScriptedDatris(
        get_version=[version()],
        get_tap=[tap(), tap()],
        get_tap_logs=[[]],
        run_tap=[debounced(), accepted()],
    )
    spec = TapRunSpec(tap_name="orders", params={"since": "2026-05-04"}, if_busy="wait")

    outcome, notes = run(spec, datris)

    assert outcome.publisher_token == TOKEN
    assert datris.count("run_tap") == 2
    assert any("debounced this task's run call" in text for _, text in notes.notes)


def test_a_debounced_window_sleeps_past_the_window_the_answer_reports():
    answer = debounced()
    windowed = TapRunResponse.parse(
        {
            "tap": "orders",
            "status": "skipped",
            "mode": "run",
            "persisted": False,
            "persistedReason": "debounced",
            "recordCount": 0,
            "error": f"{answer.error} (debounce window: 5000 ms). Wait for the window to pass.",
        }
    )
    datris = ScriptedDatris(get_version=[version()], get_tap=[tap()], get_tap_logs=[[]], run_tap=[windowed, accepted()])
    sleeps: list[float] = []

    run(TapRunSpec(tap_name="orders", params={"since": "x"}, if_busy="wait", poll_interval=1), datris, sleeps=sleeps)

    assert sleeps == [pytest.approx(3.8)]
    assert datris.count("run_tap") == 2


def test_a_busy_wait_past_its_bound_fails_with_an_error_a_retry_can_act_on():
    datris = ScriptedDatris(get_version=[version()], get_tap=[tap(running=True)], get_tap_logs=[[]], run_tap=[])
    spec = TapRunSpec(tap_name="orders", params={"since": "x"}, if_busy="wait", poll_interval=10, busy_timeout=30)

    with pytest.raises(DatrisTapBusyError, match="stayed busy for 30 s") as raised:
        run(spec, datris)

    assert raised.value.retryable is True
    assert datris.count("run_tap") == 0


def test_fail_refuses_a_busy_tap_before_posting():
    datris = ScriptedDatris(get_version=[version()], get_tap=[tap(running=True)], get_tap_logs=[[]], run_tap=[])

    with pytest.raises(DatrisTapBusyError, match="if_busy='fail'"):
        run(TapRunSpec(tap_name="orders", if_busy="fail"), datris)

    assert datris.count("run_tap") == 0


def test_join_without_params_follows_the_run_in_flight():
    datris = ScriptedDatris(
        get_version=[version()],
        get_tap=[tap(running=True), tap(running=True), tap()],
        get_tap_logs=[[], [RunLogEntry.parse(row("2026-05-04 14:00:00 UTC"))]],
        run_tap=[],
    )

    outcome, _notes = run(TapRunSpec(tap_name="orders", if_busy="join"), datris)

    assert outcome.publisher_token == TOKEN
    assert datris.count("run_tap") == 0


def test_a_cut_call_with_two_new_runs_is_not_guessed_for_a_window():
    from datris_provider.client.errors import DatrisRunCallInterrupted

    class CutDatris(ScriptedDatris):
        def run_tap(self, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(("run_tap", args))
            raise DatrisRunCallInterrupted("The run call was cut by a proxy (HTTP 504).")

    two_runs = [RunLogEntry.parse(row("2026-05-04 14:00:09 UTC")), RunLogEntry.parse(row("2026-05-04 14:00:02 UTC"))]
    datris = CutDatris(get_version=[version()], get_tap=[tap()], get_tap_logs=[[], two_runs])

    with pytest.raises(DatrisRunAmbiguousError, match="2 new runs"):
        run(TapRunSpec(tap_name="orders", params={"since": "x"}, if_busy="wait"), datris)


def test_a_retry_with_task_state_follows_only_the_run_its_earlier_try_posted():
    earlier = RunLogEntry.parse(row("2026-05-04 13:00:00 UTC", token="an-older-run"))
    posted = RunLogEntry.parse(row("2026-05-04 14:00:00 UTC"))
    datris = ScriptedDatris(get_version=[version()], get_tap=[tap()], get_tap_logs=[[posted, earlier]], run_tap=[])
    spec = TapRunSpec(
        tap_name="orders",
        params={"since": "x"},
        if_busy="wait",
        is_retry=True,
        keeps_task_state=True,
        previous_attempt={"state": "posting", "try_number": 1, "known_run_times": [earlier.run_time]},
    )

    outcome, _notes = run(spec, datris)

    assert outcome.publisher_token == TOKEN
    assert datris.count("run_tap") == 0


def test_a_windowed_retry_without_task_state_starts_its_own_run():
    processing = RunLogEntry.parse(row("2026-05-04 14:00:00 UTC", token="someone-elses"))
    datris = ScriptedDatris(get_version=[version()], get_tap=[tap()], get_tap_logs=[[processing]], run_tap=[accepted()])
    spec = TapRunSpec(tap_name="orders", params={"since": "x"}, if_busy="wait", is_retry=True)

    outcome, notes = run(spec, datris)

    assert outcome.publisher_token == TOKEN
    assert datris.count("run_tap") == 1
    assert any("cannot prove which run" in text for _, text in notes.notes)
