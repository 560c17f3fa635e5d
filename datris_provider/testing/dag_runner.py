"""Run real DAG files through ``dag.test()`` in a throw-away Airflow home.

Airflow reads its configuration when it is first imported, so :func:`use_isolated_airflow_home`
must run before anything imports ``airflow``; the pytest plugin does it at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime


def bundle_name(index: int) -> str:
    """The DAG bundle name of the ``index``-th DAGs folder."""
    return "dags-folder" if index == 0 else f"dags-folder-{index}"


def use_isolated_airflow_home(dags_folders: Sequence[Path], home: Path | None = None) -> Path:
    """Point Airflow at a fresh home with a SQLite metadata DB and one DAG bundle per folder.

    :param dags_folders: folders holding the DAG files to run (each becomes a DAG bundle).
    :param home: where to put the Airflow home; a new temporary folder by default.
    :return: the Airflow home used.
    """
    if "airflow" in sys.modules:
        raise RuntimeError(
            "Airflow was imported before its test home was set up; set up the isolated home first "
            "(the pytest plugin does this at start-up unless datris_isolated_airflow = false)."
        )
    home = home or Path(tempfile.mkdtemp(prefix="datris-airflow-home-"))
    home.mkdir(parents=True, exist_ok=True)
    folders = [Path(folder).resolve() for folder in dags_folders]
    bundles = [
        {
            "name": bundle_name(index),
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder), "refresh_interval": 0},
        }
        for index, folder in enumerate(folders)
    ]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__CORE__DAGS_FOLDER": str(folders[0]) if folders else str(home / "dags"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        }
    )
    return home


def connection_json(url: str, *, api_key: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """The value of an ``AIRFLOW_CONN_<ID>`` variable for a Datris connection."""
    conn: dict[str, Any] = {"conn_type": "datris", "host": url}
    if api_key:
        conn["password"] = api_key
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


@dataclass
class DagRunOutcome:
    """What a ``dag.test()`` run left behind: states, XComs and the task log text.

    :param dag_id: the DAG that ran.
    :param run_id: its run.
    :param state: the DAG run's final state (``success`` or ``failed``).
    :param task_states: final state per ``task_id`` (per ``task_id[map_index]`` for mapped tasks).
    :param try_numbers: the last try number per task, keyed like ``task_states``.
    :param log: everything the run printed (task logs included).
    """

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    try_numbers: dict[str, int]
    log: str = ""
    _xcoms: dict[tuple[str, str, int], Any] = field(default_factory=dict, repr=False)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The XCom a task pushed, or ``KeyError`` naming what exists."""
        try:
            return self._xcoms[(task_id, key, map_index)]
        except KeyError:
            raise KeyError(f"No XCom {key!r} from {task_id}[{map_index}]; have {sorted(self._xcoms)}") from None

    def all_xcoms(self) -> dict[tuple[str, str, int], Any]:
        """Every XCom of the run, keyed by ``(task_id, key, map_index)``."""
        return dict(self._xcoms)

    def has_xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> bool:
        return (task_id, key, map_index) in self._xcoms

    def log_count(self, text: str) -> int:
        """How many lines of the log contain ``text``."""
        return sum(text in line for line in self.log.splitlines())


class AirflowDagRunner:
    """Finds DAGs in the configured DAG bundles and runs them with ``dag.test()``.

    The metadata DB is created on first use (a few seconds), then reused.
    """

    def __init__(self, dags_folders: Sequence[Path]) -> None:
        self.dags_folders = [Path(folder).resolve() for folder in dags_folders]
        self._dags: dict[str, Any] | None = None
        self._dags_per_folder: list[list[Any]] = []
        self._db_ready = False
        self._dags_in_db = False

    def ensure_db(self) -> None:
        if self._db_ready:
            return
        from airflow.utils import db

        db.initdb()
        self._db_ready = True

    def get_dag(self, dag_id: str) -> Any:
        if self._dags is None:
            dags: dict[str, Any] = {}
            per_folder: list[list[Any]] = []
            for folder in self.dags_folders:
                bag = _dag_bag(folder)
                if bag.import_errors:
                    problems = "\n".join(f"{path}: {error}" for path, error in bag.import_errors.items())
                    raise RuntimeError(f"DAG files failed to import:\n{problems}")
                dags.update(bag.dags)
                per_folder.append(list(bag.dags.values()))
            # Kept only once every folder imported: a failed import must fail every test the same way.
            self._dags, self._dags_per_folder = dags, per_folder
        try:
            return self._dags[dag_id]
        except KeyError:
            raise KeyError(f"No DAG {dag_id!r} in {self.dags_folders}; found {sorted(self._dags)}") from None

    def run(
        self, dag_id: str, *, logical_date: datetime | None = None, run_conf: dict[str, Any] | None = None
    ) -> DagRunOutcome:
        """Run one DAG to its end with ``dag.test()`` and collect what it left behind."""
        self.ensure_db()
        dag = self.get_dag(dag_id)
        if _AIRFLOW_3_0 and not self._dags_in_db:
            self._write_dags_to_db()
        kwargs: dict[str, Any] = {"run_conf": run_conf}
        if logical_date is not None:
            kwargs["logical_date"] = logical_date
        with _airflow_3_0_test_output(), _masked_secrets_not_logged():
            dag_run = dag.test(**kwargs)
        return self._collect(dag_run)

    def _write_dags_to_db(self) -> None:
        """Airflow 3.0's ``dag.test()`` writes no DAG to the DB (later versions sync the bundle): without
        this, assets are inactive (outlets fail the task) and no consumer DAG is known."""
        import importlib

        # Airflow 3.0 names, looked up at run time (the types checked are the newest Airflow's).
        bundles = importlib.import_module("airflow.dag_processing.bundles.manager").DagBundlesManager
        scheduler_dag = importlib.import_module("airflow.models.dag").DAG
        serialized_dag = importlib.import_module("airflow.serialization.serialized_objects").SerializedDAG

        bundles().sync_bundles_to_db()
        for index, dags in enumerate(self._dags_per_folder):
            written = [serialized_dag.deserialize_dag(serialized_dag.serialize_dag(dag)) for dag in dags]
            scheduler_dag.bulk_write_to_db(bundle_name(index), None, written)
        self._dags_in_db = True

    def _collect(self, dag_run: Any) -> DagRunOutcome:
        from airflow import settings
        from airflow.models.xcom import XComModel

        if settings.Session is None:
            raise RuntimeError("Airflow's metadata DB session is not configured.")
        session = settings.Session()
        try:
            states: dict[str, str] = {}
            tries: dict[str, int] = {}
            for ti in dag_run.get_task_instances(session=session):
                name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
                states[name] = str(getattr(ti.state, "value", ti.state))
                tries[name] = ti.try_number
            rows = (
                session.query(XComModel)
                .filter(XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id)
                .all()
            )
            xcoms = {(row.task_id, row.key, row.map_index): XComModel.deserialize_value(row) for row in rows}
        finally:
            session.close()
        return DagRunOutcome(
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            state=str(getattr(dag_run.state, "value", dag_run.state)),
            task_states=states,
            try_numbers=tries,
            _xcoms=xcoms,
        )


def _airflow_version() -> tuple[int, int]:
    from importlib.metadata import version

    major, minor, *_ = version("apache-airflow-core").split(".")
    return int(major), int(minor)


_AIRFLOW_3_0 = _airflow_version() < (3, 1)


class _SilentStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def emit(self, record: logging.LogRecord) -> None:
        pass


def _drop_secret_requests(logger: Any, method_name: str, event_dict: Any) -> Any:
    """A structlog processor dropping the debug record of each secret the task asks Airflow to mask.

    The in-process supervisor of ``dag.test()`` logs ``Sending request msg=MaskSecret(value=…)`` for
    every connection password and sensitive variable, at debug level and unmasked.
    """
    import structlog

    if any(type(value).__name__ == "MaskSecret" for value in event_dict.values()):
        raise structlog.DropEvent
    return event_dict


@contextmanager
def _masked_secrets_not_logged() -> Iterator[None]:
    """Keep ``dag.test()``'s records of masked secrets out of the output, whatever level structlog logs
    at: Airflow 3.0 leaves structlog unconfigured (debug), and a project may configure it at debug
    itself, on any Airflow version."""
    import structlog

    structlog.configure(processors=[_drop_secret_requests, *structlog.get_config()["processors"]])
    try:
        yield
    finally:
        # Only this run's processor goes: whatever configured structlog meanwhile stays.
        kept = [step for step in structlog.get_config()["processors"] if step is not _drop_secret_requests]
        structlog.configure(processors=kept)


@contextmanager
def _airflow_3_0_test_output() -> Iterator[None]:
    """Make Airflow 3.0's ``dag.test()`` print what later versions print.

    - It adds a stdout handler to the ``airflow.task`` logger unless one is there, and every task
      line then shows twice (the handler, then the root logger): a handler that prints nothing
      takes its place.
    - Its in-process supervisor logs each message at debug level, through structlog's unconfigured
      (debug) default: only info and above are kept.
    - Tracebacks are wrapped at the terminal width (80 in a pipe), cutting messages in two.
    """
    if not _AIRFLOW_3_0:
        yield
        return
    import structlog

    task_logger = logging.getLogger("airflow.task")
    silent = _SilentStreamHandler()
    if not any(isinstance(handler, logging.StreamHandler) for handler in task_logger.handlers):
        task_logger.addHandler(silent)
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "1000"
    try:
        yield
    finally:
        task_logger.removeHandler(silent)
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


def _dag_bag(folder: Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=str(folder))
