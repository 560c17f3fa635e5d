"""Datris-scheduled taps: the stand-in's cron scheduler fires enabled cron taps on its clock."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pytest
import requests

from datris_provider.testing import StandInDatris
from datris_provider.testing.cron import CronExpression, next_fire_ms

if TYPE_CHECKING:
    from collections.abc import Iterator


def utc_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 6 * * ?", (2026, 5, 4, 6, 0, 0), (2026, 5, 5, 6, 0, 0)),
        ("0 0 6 * * ?", (2026, 5, 4, 5, 59, 59), (2026, 5, 4, 6, 0, 0)),
        ("0 */15 * * * ?", (2026, 5, 4, 10, 7, 3), (2026, 5, 4, 10, 15, 0)),
        ("30 0 12 ? * MON-FRI", (2026, 5, 8, 12, 0, 30), (2026, 5, 11, 12, 0, 30)),  # Friday -> Monday
        ("0 0 0 1 JAN ? 2027", (2026, 5, 4, 0, 0, 0), (2027, 1, 1, 0, 0, 0)),
        ("0 0 9 ? * 1", (2026, 5, 4, 0, 0, 0), (2026, 5, 10, 9, 0, 0)),  # 1 is Sunday in Quartz
    ],
)
def test_next_fire_times(expression: str, after: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert next_fire_ms(expression, utc_ms(*after)) == utc_ms(*expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 6 * * *", "needs 6 fields"),
        ("0 0 6 L * ?", "does not model Quartz's L, W or #"),
        ("0 0 25 * * ?", "outside 0-23"),
        ("0 0 x * * ?", "'x' is not a number"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronExpression.parse(expression)


def test_a_tap_with_a_bad_cron_is_refused_when_added() -> None:
    with pytest.raises(ValueError, match="needs 6 fields"):
        StandInDatris().add_tap(name="t", cron="0 6 * * *")


@pytest.fixture
def datris(shared_server: StandInDatris) -> Iterator[StandInDatris]:
    shared_server.reset_state()
    yield shared_server
    shared_server.clock.advance(3600)
    shared_server.wait_until_idle()


def seconds_to_next_fire(datris: StandInDatris, tap_name: str, expression: str) -> float:
    basis = datris.tap(tap_name).last_run_time or datris.tap(tap_name).created_at
    moment = datetime.strptime(str(basis), "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc)
    basis_ms = int(moment.timestamp() * 1000)
    due = next_fire_ms(expression, basis_ms)
    assert due is not None
    return (due - datris.clock.now_ms()) / 1000


def test_an_enabled_cron_tap_is_fired_on_the_clock_and_its_run_shows_in_the_logs(datris: StandInDatris) -> None:
    datris.add_tap(name="nightly", cron="0 * * * * ?", records=12)
    wait = seconds_to_next_fire(datris, "nightly", "0 * * * * ?")

    datris.clock.advance(wait - 0.5)
    assert datris.journal.script_runs("nightly") == []
    datris.clock.advance(0.5)
    datris.wait_for(lambda: len(datris.run_logs("nightly")) == 1)

    (run,) = datris.journal.script_runs("nightly")
    assert (run.client, run.mode, run.params, run.env) == ("cron", "run", {}, {})
    assert datris.tap("nightly").last_run_trigger == "cron"
    datris.clock.advance(7)  # the job ends on its own
    (row,) = requests.get(datris.api_url + "/tap/logs", params={"name": "nightly"}, timeout=10).json()
    assert row["mode"] == "run" and row["recordCount"] == 12
    assert row["pipelineRollup"]["allDone"] is True and row["pipelineRollup"]["status"] == "success"


def test_cron_runs_skip_the_debounce(datris: StandInDatris) -> None:
    datris.add_tap(name="nightly", cron="0 * * * * ?")
    datris.clock.advance(seconds_to_next_fire(datris, "nightly", "0 * * * * ?") - 1)
    manual = requests.post(datris.api_url + "/tap/run", json={"name": "nightly", "mode": "run"}, timeout=10).json()
    assert manual["status"] == "success"
    # The manual run moved the schedule: the next fire is counted from its run time.
    datris.clock.advance(seconds_to_next_fire(datris, "nightly", "0 * * * * ?"))
    datris.wait_for(lambda: len(datris.journal.script_runs("nightly", client="cron")) == 1)


def test_disabled_taps_and_taps_without_a_cron_are_not_fired(datris: StandInDatris) -> None:
    datris.add_tap(name="disabled", cron="0 * * * * ?", enabled=False)
    datris.add_tap(name="manual_only")
    datris.clock.advance(600)
    assert datris.journal.script_runs() == []


def test_fire_cron_runs_a_tap_now_and_skips_a_running_one(datris: StandInDatris) -> None:
    datris.add_tap(name="held", cron="0 0 6 * * ?", script_seconds=30)
    run = datris.fire_cron("held")
    assert run is not None and run.client == "cron"
    datris.wait_until_running("held")
    assert datris.fire_cron("held") is None  # the scheduler skips a running tap
    datris.clock.advance(30)
    datris.wait_for(lambda: datris.tap("held").last_run_status == "success")
    with pytest.raises(KeyError, match="no tap named 'nope'"):
        datris.fire_cron("nope")
