"""A DAG run through the plugin's runner never prints the connection's key, however logging is set up."""

from __future__ import annotations

import logging

import pytest
import structlog

from datris_provider.testing.dag_runner import connection_json

pytestmark = pytest.mark.dag

KEY = "dk_live_structlog_5ecret_0123456789"


@pytest.fixture
def structlog_at_debug():
    """A project that logs through structlog and configured it at debug level (e.g. in its conftest)."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def test_the_key_is_not_printed_with_structlog_at_debug(datris, datris_dag_runner, monkeypatch, structlog_at_debug):
    datris.require_api_keys()
    datris.add_api_key(KEY, label="airflow")
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris.url, api_key=KEY))

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.state == "success"
    assert all(call.headers.get("x-api-key") == KEY for call in datris.requests)
    assert KEY not in outcome.log
