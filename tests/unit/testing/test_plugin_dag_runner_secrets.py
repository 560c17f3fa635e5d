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
    """Configures structlog at debug level, as a project that logs through structlog may do (in its
    conftest, or once Airflow has set up its logging); the earlier configuration comes back after."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()

    def configure() -> None:
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.PrintLoggerFactory(),
            cache_logger_on_first_use=False,
        )

    yield configure
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def test_the_key_is_not_printed_with_structlog_at_debug(datris, datris_dag_runner, monkeypatch, structlog_at_debug):
    # A first run lets Airflow set up its own logging, which the project's configuration then replaces.
    assert datris_dag_runner.run("tap_auth").state == "success"
    structlog_at_debug()
    datris.require_api_keys()
    datris.add_api_key(KEY, label="airflow")
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris.url, api_key=KEY))

    outcome = datris_dag_runner.run("tap_auth")

    assert outcome.state == "success"
    assert "[debug    ]" in outcome.log  # debug records are printed: only the secret ones are dropped
    assert datris.requests[-1].headers.get("x-api-key") == KEY
    assert KEY not in outcome.log
