"""``python -m datris_provider.testing admin``: steering a serving stand-in through its admin routes."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

import pytest
import requests

from datris_provider.testing import StandInDatris
from datris_provider.testing.__main__ import main

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "cli-admin-key-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_nothing_serving_at_the_url_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"

    assert main(["admin", "--url", url, "advance", "5"]) == 3

    error = capsys.readouterr().err
    assert error.startswith(f"error: no stand-in Datris answers at {url} (")
    assert "start one with `python -m datris_provider.testing serve`, or pass --url" in error


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["GET /version", "delay", "--status", "503"], "error: delay takes --seconds, --times; not --status"),
        (["GET /version", "delay"], "error: delay needs --seconds"),
        (["GET /version", "fail"], "error: fail needs --status"),
        (["GET /version", "fail", "--status", "429", "--header", "Retry-After"], "error: --header must look like"),
    ],
)
def test_fault_options_that_do_not_fit_the_kind_are_refused_before_any_call(
    capsys: pytest.CaptureFixture[str], arguments: list[str], expected: str
) -> None:
    # Nothing listens at this URL: the command must fail on its own options first.
    assert main(["admin", "--url", f"http://127.0.0.1:{_free_port()}", "fault", *arguments]) == 2

    assert capsys.readouterr().err.startswith(expected)


def test_when_after_needs_after_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "--url", "http://127.0.0.1:1", "other-run", "my_orders", "--when", "after"]) == 2

    assert "--when after goes with --after-seconds S" in capsys.readouterr().err


def test_params_must_be_a_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["admin", "other-run", "my_orders", "--params", json.dumps([1, 2])])

    assert exited.value.code == 2
    assert "must be a JSON object" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Against a serving stand-in
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _serving() -> Iterator[StandInDatris]:
    with StandInDatris(clock="manual") as stand_in:
        yield stand_in


@pytest.fixture
def serving(_serving: StandInDatris) -> Iterator[StandInDatris]:
    _serving.reset_state()
    _serving.add_tap(name="my_orders", records=5)
    _serving.add_tap(name="nightly", cron="0 0 6 * * ?")
    yield _serving
    _serving.clock.advance(3600)  # let whatever was started end before the next test resets
    _serving.wait_until_idle()


def admin(stand_in: StandInDatris, capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, Any]:
    code = main(["admin", "--url", stand_in.url, *arguments])
    captured = capsys.readouterr()
    # In this process the stand-in's own request log may share stdout and stderr (once Airflow set up logging).
    if code != 0:
        return code, [line for line in captured.err.splitlines() if line.startswith("error: ")][-1]
    lines = captured.out.splitlines()
    start, end = lines.index("{"), len(lines) - lines[::-1].index("}")
    return code, json.loads("\n".join(lines[start:end]))


def test_fault_makes_the_next_calls_of_the_route_fail(serving, capsys) -> None:
    code, answer = admin(serving, capsys, "fault", "GET /version", "fail", "--status", "503", "--times", "2")

    assert code == 0
    assert answer == {"queued": "fail", "route": "GET /version"}
    statuses = [requests.get(f"{serving.api_url}/version", timeout=10).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_other_run_starts_another_clients_run_with_its_params(serving, capsys) -> None:
    code, answer = admin(serving, capsys, "other-run", "my_orders", "--params", '{"day": "2026-05-01"}')

    assert code == 0 and answer["started"] is True
    serving.wait_for(lambda: serving.journal.script_runs("my_orders", client="other") != [])
    (run,) = serving.journal.script_runs("my_orders")
    assert (run.client, run.params, run.env) == ("other", {"day": "2026-05-01"}, {"DATRIS_TAP_PARAM_day": "2026-05-01"})
    serving.journal.assert_nothing_killed()
    assert serving.journal.posts("my_orders") == []  # nothing arrived over HTTP


def test_other_run_before_the_next_post_debounces_that_post(serving, capsys) -> None:
    code, _ = admin(serving, capsys, "other-run", "my_orders", "--when", "before_next_run")
    answer = requests.post(f"{serving.api_url}/tap/run", json={"name": "my_orders", "mode": "run"}, timeout=30)

    assert code == 0
    assert answer.json()["persistedReason"] == "debounced"


def test_cron_tick_fires_one_cron_run(serving, capsys) -> None:
    code, answer = admin(serving, capsys, "cron-tick", "nightly")

    assert code == 0 and answer["fired"] is True
    assert [run.client for run in serving.journal.script_runs("nightly")] == ["cron"]


def test_advance_moves_the_stand_in_clock(serving, capsys) -> None:
    before = serving.clock.now()

    code, answer = admin(serving, capsys, "advance", "90")

    assert code == 0
    assert serving.clock.now() == before + 90
    assert answer["mode"] == "manual"


def test_journal_prints_what_arrived_without_key_values(serving, capsys) -> None:
    serving.require_api_keys()
    serving.add_api_key(KEY, label="airflow")
    requests.post(
        f"{serving.api_url}/tap/run",
        json={"name": "my_orders", "mode": "test"},
        headers={"x-api-key": KEY},
        timeout=30,
    )

    code, journal = admin(serving, capsys, "journal", "--tap", "my_orders")

    assert code == 0
    (request,) = [entry for entry in journal["requests"] if entry["path"] == "/tap/run"]
    assert request["json"] == {"name": "my_orders", "mode": "test"}
    assert request["headers"]["x-api-key"] == "<set>"
    assert [run["mode"] for run in journal["script_runs"]] == ["test"]
    assert KEY not in json.dumps(journal)


def test_a_refused_command_says_why(serving, capsys) -> None:
    code, error = admin(serving, capsys, "other-run", "no_such_tap")

    assert code == 1
    assert error.startswith("error: the stand-in refused: HTTP 400: no tap named 'no_such_tap'")
