"""Routes and details the stand-in models as the real server does: the MCP tool list per key,
``POST /tap/test``, ``GET /health/services`` and the older server generation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from datris_provider.testing import DEFAULT_PIPELINE_ERROR, StandInDatris

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def datris(shared_server: StandInDatris) -> Iterator[StandInDatris]:
    shared_server.reset_state()
    yield shared_server
    shared_server.wait_until_idle()


def call(datris: StandInDatris, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, datris.api_url + path, timeout=10, **kwargs)


# ------------------------------------------------------------------------------------------ /mcp/tools


def tools_for(datris: StandInDatris, *capabilities: str) -> dict[str, Any]:
    datris.require_api_keys()
    datris.add_api_key("k", label="key", capabilities=capabilities)
    return dict(call(datris, "GET", "/mcp/tools", headers={"x-api-key": "k"}).json())


def test_a_full_access_key_and_keys_off_see_the_whole_catalogue(datris: StandInDatris) -> None:
    keys_off = call(datris, "GET", "/mcp/tools").json()
    assert keys_off["filtered"] is False
    assert {"run_tap", "test_tap", "get_tap_logs", "kill_job", "upload_data", "check_service_health"} <= set(
        keys_off["tools"]
    )
    assert "upload_file" not in keys_off["tools"]  # not a real tool name
    assert tools_for(datris, "*:*") == keys_off


def test_an_airflow_key_sees_the_tap_and_job_tools_and_not_the_others(datris: StandInDatris) -> None:
    answer = tools_for(datris, "tap:read", "tap:run", "job:read", "job:kill")
    tools = answer["tools"]
    assert answer["filtered"] is True
    assert {"list_taps", "get_tap", "run_tap", "test_tap", "get_tap_logs", "get_pipeline_status", "kill_job"} <= set(
        tools
    )
    # Local helpers are visible to every key; other resources are not.
    assert {"get_version", "check_service_health", "wait_seconds"} <= set(tools)
    assert not {"create_tap", "delete_tap", "upload_data", "query_postgres", "list_pipelines"} & set(tools)


def test_a_restricted_key_sees_fewer_tools_and_scopes_do_not_hide_any(datris: StandInDatris) -> None:
    reader = set(tools_for(datris, "tap:read")["tools"])
    datris.add_api_key("s", label="scoped", capabilities=("tap:read:owner=self",))
    scoped = set(call(datris, "GET", "/mcp/tools", headers={"x-api-key": "s"}).json()["tools"])
    assert scoped == reader
    assert "get_tap" in reader and "run_tap" not in reader and "get_tap_logs" not in reader


# ------------------------------------------------------------------------------------------ /tap/test


def test_tap_test_runs_the_sent_config_and_answers_records_and_duration(datris: StandInDatris) -> None:
    datris.add_tap(name="orders_api", records=30)
    answer = call(datris, "POST", "/tap/test", json={"name": "orders_api", "scriptPath": "tap-scripts/o.py"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["recordCount"] == 30 and len(body["records"]) == 30  # no preview cut here
    assert body["dataType"] == "json" and isinstance(body["durationMs"], int)
    assert "[wrapper] calling fetch()" in body["logs"]
    assert not {"tap", "status", "mode", "persisted", "publisherToken"} & set(body)
    limited = call(datris, "POST", "/tap/test", params={"testLimit": 5}, json={"name": "orders_api", "scriptPath": "x"})
    assert limited.json()["recordCount"] == 5
    (run, _) = datris.journal.script_runs("orders_api")
    assert (run.mode, run.test_limit) == ("test", None)


def test_tap_test_of_an_unsaved_tap_and_its_errors(datris: StandInDatris) -> None:
    unsaved = call(datris, "POST", "/tap/test", json={"name": "draft", "scriptPath": "tap-scripts/draft.py"})
    assert unsaved.status_code == 200 and unsaved.json()["recordCount"] == 3
    no_script = call(datris, "POST", "/tap/test", json={"name": "draft"})
    assert (no_script.status_code, no_script.json()) == (500, {"error": "Script path is required for testing"})
    assert call(datris, "POST", "/tap/test", params={"testLimit": "x"}, json={"name": "d"}).status_code == 400
    assert call(datris, "POST", "/tap/test", data="{}", headers={"Content-Type": "text/plain"}).status_code == 415


def test_tap_test_needs_tap_run(datris: StandInDatris) -> None:
    datris.require_api_keys()
    datris.add_api_key("r", label="reader", capabilities=("tap:read",))
    denied = call(datris, "POST", "/tap/test", json={"name": "d", "scriptPath": "x"}, headers={"x-api-key": "r"})
    assert denied.status_code == 403 and denied.json()["required"] == "tap:run"


# ------------------------------------------------------------------------------------------ /health


def test_health_services_is_public_and_settable(datris: StandInDatris) -> None:
    datris.require_api_keys()
    health = call(datris, "GET", "/health/services")
    assert health.status_code == 200
    assert health.json()["postgres"] == {"status": "up"} and health.json()["kafka"] == {"status": "not_configured"}
    datris.set_service_health("postgres", "down", "connection refused")
    assert call(datris, "GET", "/health/services").json()["postgres"] == {
        "status": "down",
        "message": "connection refused",
    }
    with pytest.raises(ValueError, match="status must be one of"):
        datris.set_service_health("postgres", "sideways")


# ------------------------------------------------------------------------------------------ older servers


def test_older_servers_ignore_test_limit(datris: StandInDatris) -> None:
    datris.error_style = "stacktrace"
    datris.add_tap(name="orders_api", records=30)
    for limit in (5, "lots", None):
        body = call(datris, "POST", "/tap/run", json={"name": "orders_api", "testLimit": limit}).json()
        assert body["recordCount"] == 30 and len(body["records"]) == 20 and body["recordsTruncated"] is True
    assert [run.test_limit for run in datris.journal.script_runs("orders_api")] == [None, None, None]


def test_older_servers_answer_a_bad_key_with_a_500_stack_trace(datris: StandInDatris) -> None:
    datris.error_style = "stacktrace"
    datris.require_api_keys()
    datris.add_api_key("old", label="retired", revoked=True)
    for key in ("unknown", "old"):
        response = call(datris, "GET", "/taps", headers={"x-api-key": key})
        assert response.status_code == 500
        assert response.text.splitlines()[0] == "ai.datris.model.DatrisException: Invalid x-api-key"
    datris.error_style = "json"
    assert call(datris, "GET", "/taps", headers={"x-api-key": "unknown"}).status_code == 401


def test_older_servers_put_a_failed_jobs_stack_trace_in_its_description(datris: StandInDatris) -> None:
    datris.error_style = "stacktrace"
    datris.add_tap(name="bad_load", pipeline_outcome="error")
    token = call(datris, "POST", "/tap/run", json={"name": "bad_load", "mode": "run"}).json()["publisherToken"]
    datris.clock.advance(7)
    rollup = call(datris, "GET", "/pipeline/status", params={"publishertoken": token, "withrollup": "true"}).json()
    description = rollup["rollup"]["jobs"][0]["lastError"]["description"]
    assert description.startswith(DEFAULT_PIPELINE_ERROR + "\nai.datris.model.DatrisException: ")
    assert "\tat ai.datris.controller.JobRunner.run(JobRunner.scala" in description
