"""DatrisHook: the connection read once and checked, the same way on the sync and the async path, and
tested without side effects."""

from __future__ import annotations

import asyncio
import json
import socket
from importlib import metadata
from urllib.parse import urlsplit

import pytest

from datris_provider.client.errors import DatrisConfigError
from datris_provider.hooks.datris import DatrisHook
from datris_provider.testing.dag_runner import connection_json

AIRFLOW_MINOR = tuple(int(part) for part in metadata.version("apache-airflow-core").split(".")[:2])

KEY = "dk_live_hook_0123456789"
SECRET = "s3cret-hook-5f4e"


def _use(monkeypatch, conn: str | dict, conn_id: str = "datris_default") -> DatrisHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn if isinstance(conn, str) else json.dumps(conn))
    return DatrisHook(conn_id)


def _read_sync(conn_id: str):
    return DatrisHook(conn_id).settings


def _read_async(conn_id: str):
    return asyncio.run(DatrisHook.aget_settings(conn_id))


READERS = pytest.mark.parametrize("read", [_read_sync, _read_async], ids=["sync", "async"])


def _split(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}", int(parts.port or 0)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the Port field ----------------------------------------------------------------------------------


@READERS
def test_port_field_is_where_the_calls_go(datris_stand_in, monkeypatch, read):
    host, port = _split(datris_stand_in.url)
    _use(monkeypatch, {"conn_type": "datris", "host": host, "port": port})

    settings = read("datris_default")

    assert settings.base_url == f"{host}:{port}"
    assert DatrisHook("datris_default").client.get_version().version == "1.38.3"
    assert [call.route for call in datris_stand_in.requests] == ["GET /version"]


def test_uri_form_connection_keeps_its_port_in_the_suggested_fix(monkeypatch):
    hook = _use(monkeypatch, f"datris://:{KEY}@datris.internal:8080")
    with pytest.raises(DatrisConfigError) as err:
        _ = hook.settings
    assert "e.g. https://datris.internal:8080." in str(err.value)
    assert KEY not in str(err.value)


def test_an_unreachable_server_is_named_with_the_port_field(monkeypatch, closed_port):
    hook = _use(
        monkeypatch,
        {"conn_type": "datris", "host": "http://127.0.0.1", "port": closed_port, "extra": {"retries": 0}},
    )
    ok, message = hook.test_connection()
    assert not ok
    assert message.startswith(f"Nothing is listening at http://127.0.0.1:{closed_port}: the connection was refused")


# -- one reader for the sync and the async path ------------------------------------------------------


@pytest.mark.skipif(
    AIRFLOW_MINOR < (3, 1),
    reason="Airflow 3.0 drops a connection variable whose Extra is not a JSON object before the provider reads it",
)
@READERS
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[1, 2]", "The connection 'datris_default' Extra must be a JSON object, not a JSON array."),
        ('"verify"', "The connection 'datris_default' Extra must be a JSON object, not a JSON string."),
        ("{not json", "The connection 'datris_default' Extra is not valid JSON"),
    ],
)
def test_an_extra_that_is_not_a_json_object_fails_the_same_on_both_paths(monkeypatch, read, extra, message):
    _use(monkeypatch, {"conn_type": "datris", "host": "https://d.example.com", "extra": extra})
    with pytest.raises(DatrisConfigError, match="^" + message.replace("(", r"\(")) as err:
        read("datris_default")
    assert '{"verify": true, "timeout": 30}' in str(err.value)


@READERS
def test_the_settings_warnings_are_logged_on_both_paths(monkeypatch, capfd, read):
    _use(monkeypatch, connection_json("http://datris.example.com", api_key=KEY, extra={"verify": False}))
    read("datris_default")
    out, err = capfd.readouterr()
    assert "plain http to datris.example.com" in out + err
    assert "TLS verification is off" in out + err
    assert KEY not in out + err


@READERS
def test_a_missing_connection_says_how_to_create_it_on_both_paths(monkeypatch, read):
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    with pytest.raises(DatrisConfigError) as err:
        read("nowhere")
    assert str(err.value) == (
        "The Airflow connection 'nowhere' is not defined. Create a connection of type 'datris' with that id "
        "(UI, CLI, or the AIRFLOW_CONN_NOWHERE variable)."
    )


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


# -- credentials in the Host -------------------------------------------------------------------------


@READERS
def test_credentials_in_the_host_are_refused_and_never_shown(monkeypatch, capfd, read):
    _use(monkeypatch, {"conn_type": "datris", "host": f"https://bob:{SECRET}@datris.example.com"})
    with pytest.raises(DatrisConfigError) as err:
        read("datris_default")
    out, logged = capfd.readouterr()
    assert "the API key belongs in the connection's Password field" in str(err.value)
    assert "Set Host to 'https://datris.example.com'" in str(err.value)
    assert SECRET not in str(err.value) + out + logged


# -- the Test button ---------------------------------------------------------------------------------


def test_test_connection_checks_reachability_and_key(datris_stand_in, monkeypatch):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow")
    hook = _use(monkeypatch, connection_json(datris_stand_in.url, api_key=KEY))

    ok, message = hook.test_connection()

    assert ok, message
    assert message == (
        f"Datris 1.38.3 answered at {datris_stand_in.url}; the API key is accepted (GET /api/v1/mcp/tools)."
    )
    assert [call.route for call in datris_stand_in.requests] == ["GET /version", "GET /mcp/tools"]


def test_test_connection_does_not_claim_a_key_was_accepted_when_keys_are_off(datris_stand_in, monkeypatch):
    datris_stand_in.require_api_keys(False)
    hook = _use(monkeypatch, connection_json(datris_stand_in.url))

    ok, message = hook.test_connection()

    assert ok, message
    assert "accepted" not in message
    assert message.endswith("this Datris does not use API keys (useApiKeys is false), so none is needed.")


def test_test_connection_says_a_key_is_not_checked_when_keys_are_off(datris_stand_in, monkeypatch):
    datris_stand_in.require_api_keys(False)
    hook = _use(monkeypatch, connection_json(datris_stand_in.url, api_key=KEY))

    ok, message = hook.test_connection()

    assert ok and "accepted" not in message
    assert message.endswith("so the key is not checked.")


def test_test_connection_reports_a_bad_key_without_showing_it(datris_stand_in, monkeypatch):
    datris_stand_in.require_api_keys()
    hook = _use(monkeypatch, connection_json(datris_stand_in.url, api_key=KEY))

    ok, message = hook.test_connection()

    assert not ok
    assert "unknown, revoked or mistyped" in message and KEY not in message


def test_test_connection_does_not_name_airflows_throw_away_connection_id(monkeypatch):
    # Airflow's Test button runs the hook under a random id such as 'OcZIJmQV'.
    hook = _use(monkeypatch, {"conn_type": "datris", "host": "datris.example.com"}, conn_id="OcZIJmQV")

    ok, message = hook.test_connection()

    assert not ok
    assert message.startswith("This connection Host 'datris.example.com' has no http:// or https:// scheme.")
    assert "OcZIJmQV" not in message


def test_key_over_plain_http_to_a_remote_host_is_warned_about(monkeypatch, capfd):
    hook = _use(monkeypatch, connection_json("http://datris.example.com", api_key=KEY))
    _ = hook.settings
    out, err = capfd.readouterr()
    assert "plain http" in out + err
    assert KEY not in out + err
