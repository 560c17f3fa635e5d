"""The troubleshooting table's auth rows, and the API key kept out of everything a user can read."""

from __future__ import annotations

import json

import pytest

from datris_provider.testing.dag_runner import connection_json

pytestmark = pytest.mark.dag

KEY = "dk_live_5ecret_0123456789abcdef"


@pytest.fixture
def keys_on(datris, monkeypatch):
    datris.require_api_keys()

    def use_key(key: str | None) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris.url, api_key=key))

    return use_key


def test_missing_key_fails_once_saying_to_set_the_password(datris, datris_dag_runner, keys_on):
    keys_on(None)

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == 1
    assert "set the connection's password" in outcome.log
    assert datris.calls("POST /tap/run") == []


def test_key_without_tap_run_names_the_capability(datris, datris_dag_runner, keys_on):
    datris.add_api_key(KEY, label="airflow", capabilities=["tap:read", "job:read", "job:kill"])
    keys_on(KEY)

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == 1
    assert "lacks the capability 'tap:run'" in outcome.log
    assert KEY not in outcome.log


def test_owner_scoped_key_on_someone_elses_tap_is_an_auth_error(datris, datris_dag_runner, keys_on):
    datris.add_api_key(KEY, label="airflow", capabilities=["tap:read", "tap:run:owner=self", "job:*"])
    datris.tap("orders_api_to_postgres").owner = "someone-else"
    keys_on(KEY)

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.task_states["run_tap"] == "failed"
    assert outcome.try_numbers["run_tap"] == 1
    assert "capability denied" in outcome.log
    assert "unscoped or owning the tap" in outcome.log


def test_key_never_reaches_the_log_or_xcoms(datris, datris_dag_runner, keys_on):
    datris.add_api_key(KEY, label="airflow")
    keys_on(KEY)

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.state == "success"
    assert all(call.headers.get("x-api-key") == KEY for call in datris.requests)
    assert KEY not in outcome.log
    assert KEY not in json.dumps({str(k): v for k, v in outcome.all_xcoms().items()}, default=str)
