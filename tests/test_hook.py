"""DatrisHook: the connection read once, checked, and tested without side effects."""

from __future__ import annotations

import pytest

from datris_provider.client.errors import DatrisConfigError
from datris_provider.hooks.datris import DatrisHook
from datris_provider.testing.dag_runner import connection_json

KEY = "dk_live_hook_0123456789"


def _use(monkeypatch, conn_json: str, conn_id: str = "datris_default") -> DatrisHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json)
    return DatrisHook(conn_id)


def test_test_connection_checks_reachability_and_key(datris_stand_in, monkeypatch):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow")
    hook = _use(monkeypatch, connection_json(datris_stand_in.url, api_key=KEY))

    ok, message = hook.test_connection()

    assert ok, message
    assert "Datris 1.38.3 answered" in message and "accepted" in message
    assert {call.route for call in datris_stand_in.requests} <= {"GET /version", "GET /mcp/tools"}


def test_test_connection_reports_a_bad_key_without_showing_it(datris_stand_in, monkeypatch):
    datris_stand_in.require_api_keys()
    hook = _use(monkeypatch, connection_json(datris_stand_in.url, api_key=KEY))

    ok, message = hook.test_connection()

    assert not ok
    assert "key" in message and KEY not in message


def test_test_connection_reports_an_unreachable_server(monkeypatch):
    hook = _use(monkeypatch, connection_json("http://127.0.0.1:9", extra={"retries": 0, "timeout": 2}))
    ok, message = hook.test_connection()
    assert not ok and "ConnectionError" in message


def test_missing_connection_says_how_to_create_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    with pytest.raises(DatrisConfigError, match="AIRFLOW_CONN_NOWHERE"):
        _ = DatrisHook("nowhere").settings


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ('{"conn_type": "datris"}', "has no Host"),
        ('{"conn_type": "datris", "host": "datris.example.com"}', "scheme"),
        ('{"conn_type": "datris", "host": "https://d.example.com/api/v1"}', "ends in /api/v1"),
        ('{"conn_type": "datris", "host": "https://d.example.com", "extra": {"timeout": -1}}', "positive"),
    ],
)
def test_bad_connection_fails_with_what_to_fix(monkeypatch, conn, message):
    hook = _use(monkeypatch, conn)
    with pytest.raises(DatrisConfigError, match=message):
        _ = hook.settings


def test_key_over_plain_http_to_a_remote_host_is_warned_about(monkeypatch, capfd):
    hook = _use(monkeypatch, connection_json("http://datris.example.com", api_key=KEY))
    _ = hook.settings
    out, err = capfd.readouterr()
    assert "plain http" in out + err
    assert KEY not in out + err
