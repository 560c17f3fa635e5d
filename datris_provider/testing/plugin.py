"""pytest plugin: a stand-in Datris, an Airflow connection to it, and a ``dag.test()`` runner.

Installing the provider changes nothing in a test session until a test asks for a fixture or the
project sets an ini option.

Fixtures:

- ``datris_stand_in``: a running :class:`StandInDatris`, emptied before each test (then filled from
  ``datris_stand_in_config`` when that is set).
- ``datris_connection``: sets ``AIRFLOW_CONN_DATRIS_DEFAULT`` to the stand-in; returns the conn id.
- ``datris_dag_runner``: runs DAGs with ``dag.test()`` and returns a :class:`DagRunOutcome` whose
  ``log`` holds what the run printed.

ini options (``[tool.pytest.ini_options]``):

- ``datris_isolated_airflow`` (default false): give the session its own Airflow home and SQLite DB,
  set up before Airflow is imported. An ``AIRFLOW_HOME`` already set in the environment wins (the
  session says so once).
- ``datris_dags_folders``: the folders holding the DAG files to run (default ``dags``).
- ``datris_stand_in_config``: a TOML file declaring the stand-in's taps, pipelines, keys, faults and
  other clients' runs (see :mod:`datris_provider.testing.config`), relative to the rootdir.
"""

from __future__ import annotations

import logging
import os
import sys
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

    from datris_provider.testing.config import StandInConfig
    from datris_provider.testing.server import StandInDatris

ISOLATED_AIRFLOW_OPTION = "datris_isolated_airflow"
DAGS_FOLDERS_OPTION = "datris_dags_folders"
STAND_IN_CONFIG_OPTION = "datris_stand_in_config"

_NOTES = pytest.StashKey[list[str]]()
_NOTES_SHOWN = pytest.StashKey[bool]()
_STAND_IN_CONFIG = pytest.StashKey["StandInConfig | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        ISOLATED_AIRFLOW_OPTION,
        type="bool",
        default=False,
        help="Run the session against a throw-away Airflow home and SQLite DB unless AIRFLOW_HOME is set "
        "(datris plugin).",
    )
    parser.addini(
        DAGS_FOLDERS_OPTION,
        type="linelist",
        default=["dags"],
        help="Folders with the DAG files that datris_dag_runner runs, relative to the rootdir.",
    )
    parser.addini(
        STAND_IN_CONFIG_OPTION,
        type="string",
        default="",
        help="TOML file with the stand-in Datris's taps, pipelines, keys and faults, relative to the rootdir.",
    )


def _dags_folders(config: pytest.Config) -> list[Path]:
    root = Path(str(config.rootpath))
    return [(root / folder).resolve() for folder in config.getini(DAGS_FOLDERS_OPTION)]


def _note(config: pytest.Config, text: str) -> None:
    config.stash.setdefault(_NOTES, []).append(text)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Earlier than any conftest, so Airflow reads this configuration when it is first imported.
    if not early_config.getini(ISOLATED_AIRFLOW_OPTION):
        return
    user_home = os.environ.get("AIRFLOW_HOME")
    if user_home:
        _note(
            early_config,
            f"datris: AIRFLOW_HOME is set ({user_home}); DAG runs use that Airflow home, not an isolated one "
            f"({ISOLATED_AIRFLOW_OPTION} = true). Unset AIRFLOW_HOME for a throw-away home.",
        )
        return
    if "airflow" in sys.modules:
        _note(
            early_config,
            "datris: airflow was imported before the plugin could isolate its home; DAG runs use your own "
            "Airflow configuration.",
        )
        return
    use_isolated_airflow_home(_dags_folders(early_config))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STAND_IN_CONFIG] = _read_stand_in_config(config)


def _read_stand_in_config(config: pytest.Config) -> StandInConfig | None:
    name = str(config.getini(STAND_IN_CONFIG_OPTION) or "").strip()
    if not name:
        return None
    # Imported only when asked for: the stand-in pulls in an HTTP server stack.
    from datris_provider.testing.config import ConfigError, load_config

    try:
        return load_config(Path(str(config.rootpath)) / name)
    except ConfigError as error:
        raise pytest.UsageError(f"{STAND_IN_CONFIG_OPTION}: {error}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    notes = config.stash.get(_NOTES, [])
    config.stash[_NOTES_SHOWN] = True
    return list(notes)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    # Quiet runs print no header: the notes are said at the end instead, still once.
    if config.stash.get(_NOTES_SHOWN, False):
        return
    for note in config.stash.get(_NOTES, []):
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def _datris_stand_in_server(pytestconfig: pytest.Config) -> Iterator[StandInDatris]:
    from datris_provider.testing.server import StandInDatris

    stand_in_config = pytestconfig.stash.get(_STAND_IN_CONFIG, None)
    server = stand_in_config.new_stand_in() if stand_in_config else StandInDatris()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def datris_stand_in(_datris_stand_in_server: StandInDatris, pytestconfig: pytest.Config) -> Iterator[StandInDatris]:
    """The stand-in Datris server: empty, or as ``datris_stand_in_config`` declares it."""
    _datris_stand_in_server.reset_state()
    stand_in_config = pytestconfig.stash.get(_STAND_IN_CONFIG, None)
    if stand_in_config is not None:
        stand_in_config.apply(_datris_stand_in_server)
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
