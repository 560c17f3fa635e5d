"""The Datris REST API behaviours the provider relies on, checked on the stand-in and, when asked, a live Datris.

Each test states one rule of ``datris-api.md`` that a client gets wrong if it trusts the public docs.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.contract

TERMINAL_JOB_STATUSES = {"success", "warning", "error", "timed_out"}


def _unknown(kind: str) -> str:
    return f"no_such_{kind}_{uuid.uuid4().hex[:12]}"


def _rollup(backend: Any, publisher_token: str) -> dict[str, Any]:
    answer = backend.get("/pipeline/status", publishertoken=publisher_token, withrollup="true")
    assert answer.status_code == 200, answer.text[:500]
    rollup: dict[str, Any] = answer.json()["rollup"]
    return rollup


def test_a_run_writes_a_run_log_row_with_its_publisher_token(backend: Any) -> None:
    run = backend.run_tap()

    assert run["status"] == "success" and run["mode"] == "run", run
    logs = backend.get("/tap/logs", name=backend.tap)
    assert logs.status_code == 200
    rows = [row for row in logs.json() if row.get("publisherToken") == run["publisherToken"]]
    assert len(rows) == 1, "the run's row is written before its answer goes out"
    row = rows[0]
    assert (row["tapName"], row["mode"], row["status"]) == (backend.tap, "run", "success")
    assert isinstance(row["durationMs"], int)
    assert "pipelineRollup" in row  # always written, null when there is no rollup


def test_a_second_run_within_the_window_is_debounced_without_a_token(backend: Any) -> None:
    tap = backend.runnable_tap()
    answers: list[dict[str, Any]] = []

    def post() -> None:
        answer = backend.post("/tap/run", {"name": tap, "mode": "run"}, timeout=backend.run_timeout)
        assert answer.status_code == 200
        answers.append(answer.json())

    backend.leave_debounce_window()
    first = threading.Thread(target=post)
    first.start()
    post()  # whichever arrives second is debounced: the window starts when a run is accepted
    first.join()

    debounced = [answer for answer in answers if answer.get("persistedReason") == "debounced"]
    accepted = [answer for answer in answers if answer.get("persistedReason") != "debounced"]
    assert len(debounced) == 1 and len(accepted) == 1, answers
    answer = debounced[0]
    assert (answer["status"], answer["persisted"], answer["recordCount"], answer["tap"], answer["mode"]) == (
        "skipped",
        False,
        0,
        tap,
        "run",
    )
    assert isinstance(answer["error"], str) and answer["error"]
    assert "publisherToken" not in answer
    assert "pipelineTokens" not in answer


def test_an_unknown_tap_is_a_500_not_a_404(backend: Any) -> None:
    name = _unknown("tap")

    run = backend.post("/tap/run", {"name": name, "mode": "run"})
    config = backend.get("/tap", name=name)
    logs = backend.get("/tap/logs", name=name)

    for answer in (run, config):
        assert answer.status_code == 500, answer.status_code
        assert f"Tap: {name} not found" in answer.text  # a JSON error or a Java stack trace
    assert (logs.status_code, logs.json()) == (200, [])


def test_an_unknown_publisher_token_is_processing_with_no_jobs_forever(backend: Any) -> None:
    token = str(uuid.uuid4())

    with_rollup = backend.get("/pipeline/status", publishertoken=token, withrollup="true")
    raw = backend.get("/pipeline/status", publishertoken=token)

    assert (with_rollup.status_code, with_rollup.json()) == (
        200,
        {"rollup": {"allDone": False, "status": "processing", "jobs": []}, "events": []},
    )
    assert (raw.status_code, raw.json()) == (200, [])


def test_killing_a_finished_job_is_a_500(backend: Any) -> None:
    run = backend.run_tap()
    assert run.get("publisherToken"), run
    rollup = backend.wait_for(
        "the run's jobs to end",
        lambda: _rollup(backend, run["publisherToken"]),
        lambda rollup: rollup["allDone"],
    )
    assert {job["status"] for job in rollup["jobs"]} <= TERMINAL_JOB_STATUSES

    for job in rollup["jobs"]:
        answer = backend.post("/job/kill", {"pipelineToken": job["pipelineToken"]})
        assert answer.status_code == 500, answer.text[:500]
        assert "not running" in answer.text or "not found" in answer.text  # "not found": evicted, or another replica


def test_killing_an_unknown_job_is_a_500(backend: Any) -> None:
    token = str(uuid.uuid4())

    answer = backend.post("/job/kill", {"pipelineToken": token})

    assert answer.status_code == 500
    assert f"Job not found for pipeline token: {token}" in answer.text


def test_every_version_value_is_a_string(backend: Any) -> None:
    answer = backend.get("/version")

    assert answer.status_code == 200
    values = answer.json()
    assert isinstance(values, dict) and "version" in values and "useApiKeys" in values
    assert {name: type(value).__name__ for name, value in values.items() if not isinstance(value, str)} == {}
    assert values["useApiKeys"] in {"true", "false"}


def test_mcp_tools_lists_the_keys_tool_names(backend: Any) -> None:
    answer = backend.get("/mcp/tools")

    if answer.status_code == 404:
        pytest.skip("an older Datris without /mcp/tools")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"filtered", "tools"}
    assert isinstance(body["filtered"], bool)
    assert isinstance(body["tools"], list) and body["tools"]
    assert all(isinstance(name, str) and name for name in body["tools"])
