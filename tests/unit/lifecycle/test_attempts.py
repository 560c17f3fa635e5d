"""The attempt record in the task state: which try owns the run, and what a stopped try may kill."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from datris_provider.lifecycle.attempts import AttemptLedger
from datris_provider.lifecycle.wait import stop_and_kill


class TaskState:
    """Airflow's task state store for one task instance: it survives the task's tries."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def context(state: TaskState | None, try_number: int) -> Any:
    return {"ti": SimpleNamespace(try_number=try_number), "task_state_store": state}


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warning = error = info


class NoKills:
    """A hook whose client must not be asked to kill anything."""

    @property
    def client(self) -> Any:
        raise AssertionError("a kill was attempted")


def test_a_retry_claims_the_run_before_anything_else_and_the_stopped_try_leaves_it_alone():
    state = TaskState()
    first = AttemptLedger(context(state, 1))
    first.posting(["2026-05-04 13:00:00 UTC"])
    first.write("following", publisher_token="tok-1")

    second = AttemptLedger(context(state, 2))
    previous = second.claim()
    notes = Notes()
    stop_and_kill(None, NoKills(), ["job-1"], notes, first)  # type: ignore[arg-type]

    assert previous is not None and previous["publisher_token"] == "tok-1" and previous["try_number"] == 1
    assert state.values["datris_run"]["try_number"] == 2
    assert state.values["datris_run"]["publisher_token"] == "tok-1"
    assert first.why_not_kill() == "try 2 of this task has taken over its Datris run; this try stops without killing it"
    assert notes.lines == ["Try 2 of this task has taken over its Datris run; this try stops without killing it."]


def test_the_owning_try_still_kills_on_its_own_stop():
    state = TaskState()
    ledger = AttemptLedger(context(state, 1))
    ledger.write("following", publisher_token="tok-1")
    killed: list[str] = []

    class Client:
        def kill_job(self, token: str, *, timeout: float) -> Any:
            from datris_provider.client.models import KillAnswer

            killed.append(token)
            return KillAnswer(pipeline_token=token, killed=True, detail="cancelled")

    stop_and_kill(None, SimpleNamespace(client=Client()), ["job-1"], Notes(), ledger)  # type: ignore[arg-type]

    assert killed == ["job-1"]


def test_a_judged_run_is_not_claimed_so_a_cleared_task_runs_anew():
    state = TaskState()
    AttemptLedger(context(state, 1)).write("judged", publisher_token="tok-1")

    AttemptLedger(context(state, 2)).claim()

    assert state.values["datris_run"]["try_number"] == 1


def test_without_task_state_nothing_is_recorded_and_nothing_is_owned():
    ledger = AttemptLedger(context(None, 3))
    ledger.posting([])

    assert not ledger.available
    assert ledger.read() is None
    assert ledger.claim() is None
    assert ledger.why_not_kill() is None


def test_a_try_that_can_no_longer_read_its_own_record_kills_nothing():
    class ReplacedTry(TaskState):
        """Airflow answers 404 for a try once a newer try has replaced it."""

        replaced = False

        def get(self, key: str, default: Any = None) -> Any:
            if self.replaced:
                raise KeyError(key)
            return super().get(key, default)

    state = ReplacedTry()
    ledger = AttemptLedger(context(state, 1))
    ledger.write("following", publisher_token="tok-1")
    notes = Notes()

    state.replaced = True
    stop_and_kill(None, NoKills(), ["job-1"], notes, ledger)  # type: ignore[arg-type]

    (line,) = notes.lines
    assert line.startswith("This try can no longer read its attempt record")


def test_a_try_that_never_recorded_anything_still_kills_its_jobs():
    ledger = AttemptLedger(context(TaskState(), 1))

    assert ledger.why_not_kill() is None
