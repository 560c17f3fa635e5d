"""pytest plugin: a stand-in Datris, an Airflow connection to it, and a ``dag.test()`` runner.

Fixtures:

- ``datris_stand_in``: a running :class:`StandInDatris`, emptied before each test.
- ``datris_connection``: sets ``AIRFLOW_CONN_DATRIS_DEFAULT`` to the stand-in; returns the conn id.
- ``datris_dag_runner``: runs DAGs with ``dag.test()`` in an isolated Airflow home and returns a
  :class:`DagRunOutcome` whose ``log`` holds what the run printed.

ini options (``[tool.pytest.ini_options]``):

- ``datris_isolated_airflow`` (default true): give the test session its own Airflow home and SQLite
  DB, set up before Airflow is imported.
- ``datris_dags_folders``: the folders holding the DAG files to run (default ``dags``).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from datris_provider.testing.dag_runner import (
    AirflowDagRunner,
    DagRunOutcome,
    connection_json,
    use_isolated_airflow_home,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from datris_provider.testing.server import StandInDatris


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "datris_isolated_airflow",
        type="bool",
        default=True,
        help="Run the session against a throw-away Airflow home and SQLite DB (datris plugin).",
    )
    parser.addini(
        "datris_dags_folders",
        type="linelist",
        default=["dags"],
        help="Folders with the DAG files that datris_dag_runner runs, relative to the rootdir.",
    )


def _dags_folders(config: pytest.Config) -> list[Path]:
    root = Path(str(config.rootpath))
    return [(root / folder).resolve() for folder in config.getini("datris_dags_folders")]


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Earlier than any conftest, so Airflow reads this configuration when it is first imported.
    if not early_config.getini("datris_isolated_airflow"):
        return
    if "airflow" in sys.modules:
        warnings.warn(
            "airflow was imported before the datris plugin could isolate its home; DAG runs use your "
            "own Airflow configuration.",
            stacklevel=1,
        )
        return
    use_isolated_airflow_home(_dags_folders(early_config))


@pytest.fixture(scope="session")
def _datris_stand_in_server() -> Iterator[StandInDatris]:
    from datris_provider.testing.server import StandInDatris

    server = StandInDatris().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def datris_stand_in(_datris_stand_in_server: StandInDatris) -> Iterator[StandInDatris]:
    """The stand-in Datris server, with no taps, keys, faults or recorded requests."""
    _datris_stand_in_server.reset_state()
    yield _datris_stand_in_server
    _datris_stand_in_server.wait_until_idle()


@pytest.fixture
def datris_connection(datris_stand_in: StandInDatris, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``datris_default`` Airflow connection at the stand-in (no API key)."""
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(datris_stand_in.url))
    return "datris_default"


@pytest.fixture(scope="session")
def _datris_airflow(pytestconfig: pytest.Config) -> AirflowDagRunner:
    return AirflowDagRunner(_dags_folders(pytestconfig))


def _reattach_closed_log_streams() -> None:
    # Airflow's root handler keeps the stream of the first test's capture, closed once that test
    # ends; point it at the current stdout so later tests' log lines are captured, not lost.
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and getattr(handler.stream, "closed", False):
            handler.stream = sys.stdout  # setStream() would flush the closed stream and raise


class CapturingDagRunner:
    """Runs a DAG and keeps what it printed in the outcome's ``log`` (it is printed again too)."""

    def __init__(self, runner: AirflowDagRunner, capfd: pytest.CaptureFixture[str]) -> None:
        self._runner = runner
        self._capfd = capfd

    def get_dag(self, dag_id: str) -> Any:
        """The DAG object, e.g. to shorten a poll interval before running it."""
        return self._runner.get_dag(dag_id)

    def run(self, dag_id: str, **kwargs: object) -> DagRunOutcome:
        _reattach_closed_log_streams()
        self._capfd.readouterr()
        try:
            outcome = self._runner.run(dag_id, **kwargs)  # type: ignore[arg-type]
        finally:
            out, err = self._capfd.readouterr()
            # Print it again, so pytest still shows it for a failing test.
            sys.stdout.write(out)
            sys.stderr.write(err)
        outcome.log = out + err
        return outcome


@pytest.fixture
def datris_dag_runner(
    _datris_airflow: AirflowDagRunner, datris_connection: str, capfd: pytest.CaptureFixture[str]
) -> CapturingDagRunner:
    """Run DAG files with ``dag.test()`` against the stand-in: ``datris_dag_runner.run("dag_id")``."""
    return CapturingDagRunner(_datris_airflow, capfd)
