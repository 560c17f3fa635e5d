"""The journal and its assertions: what a DAG test checks about what reached Datris."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from collections.abc import Iterator

    from datris_provider.testing import StandInDatris


@pytest.fixture
def datris(shared_server: StandInDatris) -> Iterator[StandInDatris]:
    shared_server.reset_state()
    shared_server.add_tap(name="orders", records=4)
    yield shared_server
    shared_server.clock.advance(3600)
    shared_server.wait_until_idle()


def post(datris: StandInDatris, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    response = requests.post(datris.api_url + "/tap/run", json={"name": "orders", **body}, headers=headers, timeout=10)
    return dict(response.json())


def kill(datris: StandInDatris, token: str) -> int:
    return requests.post(datris.api_url + "/job/kill", json={"pipelineToken": token}, timeout=10).status_code


def test_a_script_run_record_says_who_ran_what_when(datris: StandInDatris) -> None:
    started = datris.clock.now_ms()
    answer = post(datris, mode="run", params={"since": "2026-05-01", "limit": 10})

    (run,) = datris.journal.script_runs("orders")
    assert (run.tap_name, run.client, run.mode) == ("orders", "airflow", "run")
    assert run.params == {"since": "2026-05-01", "limit": 10}
    assert run.env == {"DATRIS_TAP_PARAM_since": "2026-05-01", "DATRIS_TAP_PARAM_limit": "10"}
    assert (run.started_at_ms, run.ended_at_ms) == (started, started)
    assert (run.status, run.record_count, run.publisher_token) == ("success", 4, answer["publisherToken"])
    assert datris.journal.script_runs(client="cron") == []
    # The old accessors read the same records.
    assert datris.script_runs("orders") == [run]
    assert [request.json for request in datris.calls("POST /tap/run")] == [
        {"name": "orders", "mode": "run", "params": {"since": "2026-05-01", "limit": 10}}
    ]


def test_assert_posted_once_checks_the_count_and_the_params(datris: StandInDatris) -> None:
    post(datris)  # mode defaults to test: not a run call
    with pytest.raises(AssertionError, match="expected one mode=run POST /tap/run for tap 'orders', got 0"):
        datris.journal.assert_posted_once("orders")

    post(datris, mode="run", params={"since": "2026-05-01"})
    request = datris.journal.assert_posted_once("orders", params={"since": "2026-05-01"})
    assert request.json["params"] == {"since": "2026-05-01"}
    with pytest.raises(AssertionError, match=r"posted with params \{'since': '2026-05-01'\}, not \{'since': 'x'\}"):
        datris.journal.assert_posted_once("orders", params={"since": "x"})

    datris.clock.advance(10)  # out of the debounce window
    post(datris, mode="RUN")
    with pytest.raises(AssertionError, match="got 2"):
        datris.journal.assert_posted_once("orders")


def test_assert_nothing_killed_ignores_refused_kills(datris: StandInDatris) -> None:
    datris.tap("orders").job_seconds = None
    token = post(datris, mode="run")["pipelineTokens"][0]
    assert kill(datris, token) == 500  # still queued: refused, not a kill
    datris.journal.assert_nothing_killed()

    datris.clock.advance(5)
    assert kill(datris, token) == 200
    with pytest.raises(AssertionError, match=f"these jobs were killed: {token} \\(tap 'orders'\\)$"):
        datris.journal.assert_nothing_killed()
    (record,) = datris.journal.kills()
    assert (record.pipeline_token, record.tap_name) == (token, "orders")
    assert datris.kills == [token]


def test_assert_no_overlapping_runs_counts_a_run_until_its_jobs_are_done(datris: StandInDatris) -> None:
    datris.debounce_seconds = 0
    post(datris, mode="run")
    datris.clock.advance(6)  # the job started at the 5 s tick and runs 2 s: still in flight
    post(datris, mode="run")
    with pytest.raises(AssertionError, match="runs of tap 'orders' overlapped: a airflow run started at"):
        datris.journal.assert_no_overlapping_runs("orders")


def test_runs_one_after_the_other_do_not_overlap(datris: StandInDatris) -> None:
    post(datris, mode="run")
    datris.clock.advance(7)  # tick plus the 2 s job: done
    post(datris, mode="run")
    datris.journal.assert_no_overlapping_runs("orders")
    assert [end is not None for _, _, end in datris.journal.run_spans("orders")] == [True, False]


def test_assert_no_key_sent(datris: StandInDatris) -> None:
    post(datris)
    datris.journal.assert_no_key_sent()
    post(datris, headers={"x-api-key": "dk_live_secret"})
    with pytest.raises(AssertionError, match=r"1 request\(s\) carried an x-api-key header") as failure:
        datris.journal.assert_no_key_sent()
    assert "dk_live_secret" not in str(failure.value)


def test_to_json_shows_every_section_and_hides_key_values(datris: StandInDatris) -> None:
    post(datris, headers={"x-api-key": "dk_live_secret"}, mode="run", params={"a": 1})
    exported = datris.journal.to_json()

    assert set(exported) == {"requests", "script_runs", "kills", "uploads"}
    assert exported["requests"][0]["headers"]["x-api-key"] == "<set>"
    assert "dk_live_secret" not in str(exported)
    (run,) = exported["script_runs"]
    assert (run["tap_name"], run["client"], run["params"], run["env"]) == (
        "orders",
        "airflow",
        {"a": 1},
        {"DATRIS_TAP_PARAM_a": "1"},
    )
    assert datris.journal.to_json("other_tap")["script_runs"] == []


def test_reset_state_empties_the_journal(datris: StandInDatris) -> None:
    post(datris, mode="run")
    datris.reset_state()
    assert datris.journal.to_json() == {"requests": [], "script_runs": [], "kills": [], "uploads": []}
