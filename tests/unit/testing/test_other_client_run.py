"""Another client's runs of a tap, as a DAG sees them: busy taps, debounced calls, runs in the log.

The server runs on a manual clock, so a run's script phase lasts exactly until the test advances it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from collections.abc import Iterator

    from datris_provider.testing import StandInDatris

SCRIPT_SECONDS = 10.0


@pytest.fixture
def datris(shared_server: StandInDatris) -> Iterator[StandInDatris]:
    shared_server.reset_state()
    shared_server.add_tap(name="orders", script_seconds=SCRIPT_SECONDS, records=7)
    yield shared_server
    shared_server.clock.advance(3600)  # let every script still held by the clock finish
    shared_server.wait_until_idle()


def get_tap(datris: StandInDatris, name: str = "orders") -> dict[str, Any]:
    response = requests.get(datris.api_url + "/tap", params={"name": name}, timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def post_run(datris: StandInDatris, **body: Any) -> dict[str, Any]:
    response = requests.post(datris.api_url + "/tap/run", json={"name": "orders", "mode": "run", **body}, timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def finished_rows(datris: StandInDatris) -> list[dict[str, Any]]:
    return [row for row in datris.run_logs("orders") if row["mode"] == "run"]


def test_now_starts_a_run_in_the_background_that_an_arriving_post_is_debounced_by(datris: StandInDatris) -> None:
    run = datris.other_client_run("orders", {"since": "2026-05-01"})

    assert run is not None and (run.client, run.mode, run.params) == ("other", "run", {"since": "2026-05-01"})
    assert run.env == {"DATRIS_TAP_PARAM_since": "2026-05-01"}
    datris.wait_until_running("orders")
    tap = get_tap(datris)
    assert (tap["lastRunStatus"], tap["lastRunTrigger"]) == ("running", "manual")
    assert post_run(datris)["persistedReason"] == "debounced"

    datris.clock.advance(SCRIPT_SECONDS)
    datris.wait_for(lambda: len(finished_rows(datris)) == 1)
    (row,) = finished_rows(datris)
    assert row["status"] == "success" and row["recordCount"] == 7 and row["durationMs"] == 10_000
    assert [job.tap_name for job in datris.jobs(row["publisherToken"])] == ["orders"]
    assert get_tap(datris)["lastRunStatus"] == "success"
    assert [r.client for r in datris.script_runs("orders")] == ["other"]


def test_now_is_turned_away_inside_the_debounce_window_like_any_post(datris: StandInDatris) -> None:
    datris.tap("orders").script_seconds = 0
    post_run(datris)
    assert datris.other_client_run("orders") is None
    assert [r.client for r in datris.script_runs("orders")] == ["airflow"]


def test_on_tap_read_starts_while_answering_the_next_get_tap(datris: StandInDatris) -> None:
    datris.other_client_run("orders", when="on_tap_read")
    assert datris.script_runs("orders") == []

    assert get_tap(datris)["lastRunStatus"] == "running"  # this very answer shows the run
    (run,) = datris.script_runs("orders")
    assert run.client == "other"
    # Only the next read: a later read finds the same run, no second one.
    get_tap(datris)
    assert len(datris.script_runs("orders")) == 1


def test_before_next_run_makes_the_arriving_post_debounced(datris: StandInDatris) -> None:
    datris.other_client_run("orders", {"window": {"days": 1}}, when="before_next_run")
    assert datris.script_runs("orders") == []

    answer = post_run(datris, params={"mine": True})

    assert answer["status"] == "skipped" and answer["persistedReason"] == "debounced"
    assert "publisherToken" not in answer
    (run,) = datris.script_runs("orders")
    assert run.client == "other" and run.env == {"DATRIS_TAP_PARAM_window": '{"days":1}'}
    datris.clock.advance(SCRIPT_SECONDS)
    datris.wait_for(lambda: len(finished_rows(datris)) == 1)


def test_before_next_run_waits_for_a_run_call_not_a_test_call(datris: StandInDatris) -> None:
    datris.tap("orders").script_seconds = 0
    datris.other_client_run("orders", when="before_next_run")
    assert post_run(datris, mode="test")["mode"] == "test"
    assert [r.client for r in datris.script_runs("orders")] == ["airflow"]


def test_after_starts_the_run_when_the_clock_gets_there(datris: StandInDatris) -> None:
    datris.other_client_run("orders", when="after", after_seconds=30)

    datris.clock.advance(29.9)
    assert datris.script_runs("orders") == []
    datris.clock.advance(0.1)
    datris.wait_for(lambda: len(datris.script_runs("orders")) == 1)
    assert datris.script_runs("orders")[0].client == "other"
    assert get_tap(datris)["lastRunStatus"] == "running"


def test_reset_state_forgets_runs_that_wait_for_their_moment(datris: StandInDatris) -> None:
    datris.other_client_run("orders", when="on_tap_read")
    datris.other_client_run("orders", when="after", after_seconds=1)
    datris.reset_state()
    datris.add_tap(name="orders")
    datris.clock.advance(5)
    get_tap(datris)
    assert datris.script_runs("orders") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"when": "later"}, "when must be one of"),
        ({"when": "after"}, 'when="after" needs after_seconds'),
        ({"when": "now", "after_seconds": 3}, "after_seconds goes with"),
        ({"when": "after", "after_seconds": -1}, "cannot be negative"),
    ],
)
def test_bad_arguments_say_what_to_fix(datris: StandInDatris, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        datris.other_client_run("orders", **kwargs)


def test_an_unknown_tap_is_refused(datris: StandInDatris) -> None:
    with pytest.raises(KeyError, match="no tap named 'nope'"):
        datris.other_client_run("nope")
