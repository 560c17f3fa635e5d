"""The Datris connection as a user meets it in Airflow: the UI's Test button and DAG runs."""

from __future__ import annotations

import json
from importlib import metadata
from urllib.parse import urlsplit

import pytest

AIRFLOW_MINOR = tuple(int(part) for part in metadata.version("apache-airflow-core").split(".")[:2])


# The Test button's route, its masked-password handling and the form schema are Airflow 3.3's.
ON_AIRFLOW_33 = pytest.mark.skipif(AIRFLOW_MINOR < (3, 3), reason="the UI's connection test as Airflow 3.3 serves it")

KEY = "dk_live_ui_test_0a1b2c3d"


@pytest.fixture
def airflow_api(_datris_airflow, monkeypatch):
    """Airflow's own REST API (the one the UI calls), signed in as an admin, with Test enabled."""
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    _datris_airflow.ensure_db()
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    app = create_app(apps="core")
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="admin", role="admin")
    with TestClient(app) as client:
        yield client


@pytest.fixture
def stored_connection():
    """Store connections in Airflow's database, as the UI's form does, and remove them afterwards."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    made: list[str] = []

    def store(conn_id: str, **fields) -> None:
        with create_session() as session:
            session.add(Connection(conn_id=conn_id, conn_type="datris", **fields))
        made.append(conn_id)

    yield store
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.in_(made)).delete(synchronize_session=False)


def _test_button(api, conn_id: str, *, host: str, port: int | None):
    """What the Test icon in the connections list posts: the listed fields, password masked, Port as a number."""
    body = {
        "conn_type": "datris",
        "connection_id": conn_id,
        "description": "",
        "extra": "{}",
        "host": host,
        "login": "",
        "password": "***",
        "port": port or 0,  # the UI sends Number(null), which is 0, for an empty Port
        "schema": "",
    }
    return api.post("/api/v2/connections/test", json=body)


@ON_AIRFLOW_33
def test_test_button_works_for_a_connection_with_its_port_field_set(datris_stand_in, airflow_api, stored_connection):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow")
    parts = urlsplit(datris_stand_in.url)
    host = f"http://{parts.hostname}"
    stored_connection("datris_ui_made", host=host, port=parts.port, password=KEY)

    answer = _test_button(airflow_api, "datris_ui_made", host=host, port=parts.port)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": True,
        "message": f"Datris 1.38.3 answered at {datris_stand_in.url}; the API key is accepted (GET /api/v1/mcp/tools).",
    }
    assert KEY not in answer.text


@ON_AIRFLOW_33
def test_test_button_refuses_a_connection_with_an_empty_port_field(datris_stand_in, airflow_api, stored_connection):
    # Airflow 3.3 compares the 0 the UI sends with the stored null and refuses the test before the
    # hook runs; the README tells users to fill in Port (which the hook now uses).
    stored_connection("datris_no_port", host=datris_stand_in.url)

    answer = _test_button(airflow_api, "datris_no_port", host=datris_stand_in.url, port=None)

    assert answer.status_code == 400
    assert "host or port to test differs from the stored connection" in answer.text
    assert datris_stand_in.requests == []


def test_test_button_names_the_users_connection_not_airflows_throw_away_id(airflow_api, stored_connection):
    stored_connection("datris_typo", host="datris.example.com", port=8080)

    answer = _test_button(airflow_api, "datris_typo", host="datris.example.com", port=8080)

    assert answer.json()["status"] is False
    assert answer.json()["message"] == (
        "This connection Host 'datris.example.com' has no http:// or https:// scheme. "
        "Set it to the full base URL, e.g. https://datris.example.com:8080."
    )


# -- the connection through a DAG run ----------------------------------------------------------------

SECRET = "s3cret-dag-7e6d5c"


def _host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}", int(parts.port or 0)


@pytest.mark.dag
@pytest.mark.parametrize("dag_id", ["tap_success", "deferred_success"])
def test_a_dag_run_calls_datris_at_the_port_field(datris, datris_dag_runner, monkeypatch, dag_id):
    host, port = _host_and_port(datris.url)
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", json.dumps({"conn_type": "datris", "host": host, "port": port}))

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.task_states["run_tap"] == "success", outcome.log
    assert len(datris.calls("POST /tap/run")) == 1
    assert outcome.xcom("run_tap", "datris_tap_run_url") == f"{host}:{port}/taps/orders_api_to_postgres/run"


@pytest.mark.dag
def test_credentials_in_the_host_fail_the_task_at_once_and_are_shown_nowhere(datris, datris_dag_runner, monkeypatch):
    host, port = _host_and_port(datris.url)
    leaky = f"http://bob:{SECRET}@{urlsplit(host).hostname}:{port}"
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", json.dumps({"conn_type": "datris", "host": leaky}))

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == 1  # no retry can fix it
    assert "the API key belongs in the connection's Password field" in outcome.log
    assert SECRET not in outcome.log
    assert SECRET not in repr(outcome.all_xcoms())
    assert not outcome.has_xcom("run_tap", "datris_tap_run_url")
    assert datris.requests == []


@ON_AIRFLOW_33
def test_the_form_airflow_draws_has_a_port_and_a_verify_tls_switch(airflow_api):
    (meta,) = [
        hook for hook in airflow_api.get("/ui/connections/hook_meta").json() if hook["connection_type"] == "datris"
    ]

    assert not (meta["standard_fields"]["port"] or {}).get("hidden")
    assert meta["extra_fields"]["verify"]["schema"]["type"] == ["boolean", "null"]
    assert meta["extra_fields"]["ca_bundle"]["schema"]["type"] == ["string", "null"]
