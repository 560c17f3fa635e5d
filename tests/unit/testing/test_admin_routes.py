"""The admin routes a serving stand-in offers to the CLI: faults, other clients, cron, clock, journal."""

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
    shared_server.add_tap(name="orders", records=5)
    yield shared_server
    shared_server.clock.advance(3600)
    shared_server.wait_until_idle()


def admin(datris: StandInDatris, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, datris.url + "/_stand_in" + path, json=body, timeout=10)


def test_admin_routes_need_no_key_and_are_not_journaled(datris: StandInDatris) -> None:
    datris.require_api_keys()
    assert admin(datris, "GET", "/journal").status_code == 200
    assert datris.requests == []


def test_other_run_and_the_journal_show_the_params_over_http(datris: StandInDatris) -> None:
    answer = admin(datris, "POST", "/other-run", {"tap": "orders", "params": {"since": "2026-05-01"}})
    assert answer.status_code == 200
    assert answer.json()["started"] is True and answer.json()["run"]["client"] == "other"
    datris.wait_for(lambda: datris.tap("orders").last_run_status == "success")

    journal = admin(datris, "GET", "/journal", None).json()
    (run,) = journal["script_runs"]
    assert run["params"] == {"since": "2026-05-01"} and run["env"] == {"DATRIS_TAP_PARAM_since": "2026-05-01"}
    assert run["client"] == "other" and run["status"] == "success"
    assert requests.get(datris.url + "/_stand_in/journal", params={"tap": "x"}, timeout=10).json()["script_runs"] == []


def test_other_run_later_and_the_clock_route(datris: StandInDatris) -> None:
    body = {"tap": "orders", "when": "after", "after_seconds": 10}
    assert admin(datris, "POST", "/other-run", body).json()["started"] is False
    before = admin(datris, "GET", "/clock").json()
    assert before["mode"] == "manual"
    after = admin(datris, "POST", "/clock/advance", {"seconds": 10}).json()
    assert after["now_ms"] - before["now_ms"] == 10_000
    datris.wait_for(lambda: len(datris.journal.script_runs("orders")) == 1)


def test_cron_tick_fires_one_cron_run(datris: StandInDatris) -> None:
    answer = admin(datris, "POST", "/cron-tick", {"tap": "orders"}).json()
    assert answer["fired"] is True and answer["run"]["client"] == "cron"


def test_fault_queues_any_fault_kind_with_its_arguments(datris: StandInDatris) -> None:
    assert admin(datris, "POST", "/fault", {"route": "GET /version", "kind": "fail", "status": 503}).status_code == 200
    assert requests.get(datris.api_url + "/version", timeout=10).status_code == 503
    admin(datris, "POST", "/fault", {"route": "GET /version", "kind": "html", "status": 502, "times": 2})
    assert [requests.get(datris.api_url + "/version", timeout=10).status_code for _ in range(3)] == [502, 502, 200]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/other-run", {"tap": "nope"}, "no tap named 'nope'"),
        ("/other-run", {"tap": "orders", "when": "soon"}, "when must be one of"),
        ("/other-run", {"tap": "orders", "who": "me"}, "unknown field(s) ['who']"),
        ("/other-run", {}, "'tap' is required"),
        ("/cron-tick", {"tap": "nope"}, "no tap named 'nope'"),
        ("/fault", {"route": "GET /version", "kind": "explode"}, "'kind' must be one of"),
        ("/fault", {"route": "GET /version", "kind": "fail"}, "missing a required argument: 'status'"),
        ("/fault", {"route": "GET /version", "kind": "reset", "status": 500}, "a reset fault takes route, times"),
        ("/fault", {"route": "nonsense", "kind": "reset"}, "route must look like 'POST /tap/run'"),
        ("/clock/advance", {"seconds": -1}, "the clock only moves forward"),
        ("/clock/advance", {"seconds": "ten"}, "'seconds' has the wrong type"),
    ],
)
def test_a_refused_command_says_what_to_fix(datris: StandInDatris, path: str, body: Any, message: str) -> None:
    answer = admin(datris, "POST", path, body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_an_unknown_admin_route_lists_the_routes(datris: StandInDatris) -> None:
    answer = admin(datris, "GET", "/nothing")
    assert answer.status_code == 404
    assert "POST /_stand_in/other-run" in answer.json()["error"]
