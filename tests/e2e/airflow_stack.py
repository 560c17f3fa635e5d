"""A real Airflow 3 for end-to-end tests: the API server, scheduler, triggerer and DAG processor run as
separate processes, with the provider's DAG files, against a metadata DB of the test's choosing.

On SQLite (the default) the LocalExecutor runs two tasks at a time at most, and SQLite's single writer
serialises the rest. On PostgreSQL (``database_url`` from ``tests/e2e/postgres.py``) the LocalExecutor
gets ``parallelism`` task slots (default 8) and the default pool as many, so tasks really run side by
side (backfills with ``max_active_runs``, parallel branches).

Every component gets an environment built from scratch (the test process's own ``AIRFLOW_*`` settings,
set by the datris pytest plugin, never leak into it), its own log file in ``home/component-logs``, and
its own process group, so that :meth:`AirflowStack.stop` ends every process it started, task
supervisors included.

API (every wait raises ``AssertionError`` naming what it waited for; ``timeout`` is in real seconds)::

    stack = AirflowStack(home, datris_url=stand_in.url)        # SQLite
    stack = AirflowStack(home, datris_url=stand_in.url,
                         database_url=postgres_cluster.new_database(), parallelism=8)
    stack.write_dag("my_dags.py", source)        # before or after start; returns the file's path
    stack.start(wait_for_dags=["my_dag"])        # db migrate, the four components, healthy, DAGs parsed
    stack.wait_for_dag("late_dag")               # a DAG file written after start

    run_id = stack.trigger("my_dag", conf={...})              # unpauses the DAG first
    backfill = stack.backfill("my_dag", "2026-01-01", "2026-01-04", max_active_runs=4)
    runs = stack.wait_for_backfill("my_dag", expected_runs=4)  # every backfill run ended
    stack.backfill_runs("my_dag"); stack.dag_runs("my_dag", run_type="manual")  # oldest first

    stack.wait_for_dag_run("my_dag", run_id)                   # -> "success" / "failed"
    stack.dag_run("my_dag", run_id)                            # the REST record
    ti = stack.wait_for_task("my_dag", run_id, "task", states={"deferred"}, trigger=TRIGGER_CLASSPATH)
    stack.task_instance("my_dag", run_id, "task")              # the REST record (state, try_number, ...)
    stack.task_tries("my_dag", run_id, "task")                 # one record per try
    stack.task_log("my_dag", run_id, "task")                   # every try's log, as the UI shows it
    stack.task_log("my_dag", run_id, "task", try_number=2)     # one try's
    stack.task_log_records("my_dag", run_id, "task", 1)        # one try's structured records
    stack.wait_for_log("my_dag", run_id, "task", "Found the run")  # until the log holds a line
    stack.xcom("my_dag", run_id, "task", key="return_value")   # KeyError when there is none
    stack.xcoms("my_dag", run_id, "task")                      # {key: value}
    stack.set_task_state("my_dag", run_id, "task", "failed")   # mark failed (or "success")
    stack.clear_task("my_dag", run_id, "task")                 # clear, so the task runs again

    stack.kill("triggerer")                 # SIGKILL the component and every process below it
    stack.kill("scheduler", tree=False)     # SIGKILL only the component's main process
    stack.restart("triggerer")              # start it again, same command and environment
    stack.start_component("triggerer-2")    # a second triggerer ("<component>-<anything>")
    stack.kill_task_process("my_dag", run_id, "task")  # SIGKILL the running try's task process
    stack.task_process_pid("my_dag", run_id, "task")   # its pid (None when it does not run)
    stack.pid("scheduler"); stack.component_log("triggerer-2")
    stack.stop()                            # every process, then its children

    with stack.dump_on_failure(): ...       # print each component's log tail and the task logs on failure

Logs are read through the REST API, so they hold what the UI shows: the worker's lines and the
triggerer's. The fixtures in ``tests/e2e/conftest.py`` build stacks in a module's temporary directory and stop them
at the end of the module.

A race in Airflow 3.3.2 itself: when a trigger fires before the scheduler has handled the executor's
"success" report of the worker that deferred (the worker's supervisor takes up to ``[workers]
min_heartbeat_interval`` to report it, lowered to 1 s here), the re-queued task instance is failed as
"state changed externally" (apache/airflow#67287, #72716). :meth:`AirflowStack.let_defer_exit_settle`
waits for that report; :meth:`AirflowStack.race_hint` names the race when it struck.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")

COMPONENTS = ("api-server", "scheduler", "triggerer", "dag-processor")
FINISHED = frozenset({"success", "failed"})
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 90.0
# Longest wait for the scheduler to handle a deferring worker's exit before a trigger may fire.
DEFER_EXIT_SETTLE = 15.0
STATE_MISMATCH = "finished with state success, but the task instance's state attribute is"
SQLITE_PARALLELISM = 2
POSTGRES_PARALLELISM = 8


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Call ``probe`` until it returns something truthy, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
            value, last_error = None, err
        if value:
            return value
        if time.monotonic() >= deadline:
            hint = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{hint}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process, read from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, so children in process groups of their own can be ended too."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in _process_table().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pids: Iterable[int], sig: signal.Signals = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def component_kind(name: str) -> str:
    """The Airflow command a component runs: ``triggerer-2`` is a second ``triggerer``."""
    for kind in COMPONENTS:
        if name == kind or name.startswith(f"{kind}-"):
            return kind
    raise ValueError(f"unknown Airflow component {name!r}: use one of {COMPONENTS}, optionally with a suffix")


# --------------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------------


@dataclass
class _Component:
    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]


@dataclass
class AirflowStack:
    """A real Airflow in ``home``; see the module docstring for the API.

    :param home: an empty folder for ``AIRFLOW_HOME``: ``dags/``, ``logs/``, ``component-logs/``.
    :param datris_url: the stand-in's URL, set as the ``datris_default`` connection; None sets none.
    :param database_url: a PostgreSQL SQLAlchemy URL for the metadata DB; None uses SQLite in ``home``.
    :param parallelism: task slots of the LocalExecutor (and the default pool); default 2 on SQLite,
        8 on PostgreSQL.
    :param env: more environment for every component (e.g. ``AIRFLOW__CORE__...``); it wins over the
        stack's own settings.
    """

    home: Path
    datris_url: str | None = None
    database_url: str | None = None
    parallelism: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    components: dict[str, _Component] = field(default_factory=dict, init=False)
    _client: httpx.Client | None = field(default=None, init=False)
    _killed: set[str] = field(default_factory=set, init=False)
    _base_env: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(exist_ok=True)
        self.component_logs.mkdir(exist_ok=True)
        self._base_env = self._build_env()

    # ------------------------------------------------------------ configuration

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def component_logs(self) -> Path:
        return self.home / "component-logs"

    @property
    def on_postgres(self) -> bool:
        return self.database_url is not None

    @property
    def slots(self) -> int:
        if self.parallelism is not None:
            return self.parallelism
        return POSTGRES_PARALLELISM if self.on_postgres else SQLITE_PARALLELISM

    def _build_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        database = self.database_url or f"sqlite:///{self.home / 'airflow.db'}"
        slots = str(self.slots)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": slots,
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": slots,
                # The default pool is created by `db migrate` with this many slots.
                "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": slots,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                # Every component signs or checks the same tokens: one secret for all of them.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                # Log servers on free loopback ports, so a second Airflow on this machine is no clash.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # DAG files written after start are found within seconds, not the default 5 minutes.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
                # A worker's supervisor reports the deferring task's exit within 1 s instead of 5 s.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.datris_url is not None:
            env["AIRFLOW_CONN_DATRIS_DEFAULT"] = json.dumps({"conn_type": "datris", "host": self.datris_url})
        env.update(self.env)
        return env

    # ------------------------------------------------------------ lifecycle

    def write_dag(self, filename: str, source: str) -> Path:
        """Write a DAG file into the stack's DAGs folder (the DAG processor parses it within seconds)."""
        path = self.dags_folder / filename
        path.write_text(source)
        return path

    def start(self, wait_for_dags: Iterable[str] = (), timeout: float = STARTUP_TIMEOUT) -> AirflowStack:
        """Migrate the DB, start the four components, wait until they are healthy and ``wait_for_dags``
        are parsed, and open the REST client."""
        started = time.monotonic()
        try:
            with self.dump_on_failure():
                self.run_cli("db", "migrate")
                for name in COMPONENTS:
                    self.start_component(name)
                wait_for("the Airflow components to report healthy", self.health, timeout, interval=0.5)
                self._connect()
                for dag_id in wait_for_dags:
                    self.wait_for_dag(dag_id, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        database = "PostgreSQL" if self.on_postgres else "SQLite"
        print(f"\nAirflow stack up in {time.monotonic() - started:.1f} s ({database}, {self.slots} slots, {self.home})")
        return self

    def run_cli(self, *args: str, timeout: float = 180) -> None:
        """Run one ``airflow`` CLI command in the stack's environment; fail with its output."""
        log = self.component_logs / f"cli-{'-'.join(args[:2])}.log"
        with log.open("ab") as out:
            result = subprocess.run(
                [AIRFLOW, *args], env=self._base_env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        if result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{tail(log)}")

    def start_component(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """Start a component: one of ``api-server``, ``scheduler``, ``triggerer``, ``dag-processor``, or
        another instance of one under a suffixed name (``triggerer-2``)."""
        kind = component_kind(name)
        if name in self.components and self.components[name].process.poll() is None:
            raise AssertionError(f"airflow {name} is already running")
        component_env = dict(self._base_env)
        if name != kind and kind == "triggerer":
            # A second triggerer on this host needs a log server port of its own.
            component_env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        component_env.update(env or {})
        command = [AIRFLOW, kind, *args]
        if kind == "api-server" and not args:
            command += ["--port", str(self.api_port), "--host", "127.0.0.1", "--workers", "1"]
        self._launch(name, command, component_env)

    def _launch(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with (self.component_logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so a kill reaches its whole tree
            )
        self.components[name] = _Component(name, command, env, process)

    def pid(self, name: str) -> int:
        return self._component(name).process.pid

    def _component(self, name: str) -> _Component:
        try:
            return self.components[name]
        except KeyError:
            raise AssertionError(f"airflow {name} was never started (started: {sorted(self.components)})") from None

    def kill(self, name: str, *, tree: bool = True) -> None:
        """SIGKILL a component, as a crash would: with ``tree`` every process below it too (task
        supervisors, log servers), else only its main process (its children live on, orphaned)."""
        component = self._component(name)
        process = component.process
        below = descendants(process.pid) if tree else []
        if process.poll() is None:
            if tree:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            _kill([process.pid])
        _kill(below)
        process.wait(timeout=30)
        self._killed.add(name)

    def restart(self, name: str) -> None:
        """Start a killed or exited component again, with the same command and environment."""
        component = self._component(name)
        if component.process.poll() is None:
            raise AssertionError(f"airflow {name} is still running: kill it first")
        self._launch(name, component.command, component.env)
        self._killed.discard(name)

    def check_running(self) -> None:
        """Fail when a component died on its own (the ones the test killed are not counted)."""
        for name, component in self.components.items():
            code = component.process.poll()
            if code is not None and name not in self._killed:
                raise AssertionError(f"airflow {name} exited with {code} (its log is printed below)")

    def stop(self, grace: float = 15.0) -> None:
        """End every process the stack started, and every process they started."""
        if self._client is not None:
            self._client.close()
            self._client = None
        running = [c.process for c in self.components.values() if c.process.poll() is None]
        tree = [pid for process in running for pid in descendants(process.pid)]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in running:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Children that moved to a process group of their own (task supervisors, log servers).
        _kill(pid for pid in tree if alive(pid))

    # ------------------------------------------------------------ REST API

    @property
    def api(self) -> httpx.Client:
        """An authenticated client for ``/api/v2`` (paths relative to it)."""
        assert self._client is not None, "the API server is not up yet: call start()"
        return self._client

    def _connect(self) -> None:
        """Get a JWT from the Simple auth manager (all users are admins here) for the REST calls."""
        answer = httpx.get(f"{self.api_url}/auth/token", timeout=10)
        answer.raise_for_status()
        token = answer.json()["access_token"]
        self._client = httpx.Client(
            base_url=f"{self.api_url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def _get(self, path: str, **params: Any) -> Any:
        self.check_running()
        answer = self.api.get(path, params=params or None)
        answer.raise_for_status()
        return answer.json()

    def health(self) -> dict[str, Any] | None:
        self.check_running()
        answer = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5)
        if answer.status_code != 200:
            return None
        body: dict[str, Any] = answer.json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        if all((body.get(part) or {}).get("status") == "healthy" for part in parts):
            return body
        return None

    def dag_known(self, dag_id: str) -> bool:
        self.check_running()
        return self.api.get(f"/dags/{dag_id}").status_code == 200

    def wait_for_dag(self, dag_id: str, timeout: float = STARTUP_TIMEOUT) -> None:
        wait_for(f"DAG {dag_id} to be parsed", lambda: self.dag_known(dag_id), timeout, interval=0.5)

    def unpause(self, dag_id: str) -> None:
        answer = self.api.patch(f"/dags/{dag_id}", json={"is_paused": False})
        assert answer.status_code == 200, answer.text

    def trigger(
        self,
        dag_id: str,
        run_id: str | None = None,
        *,
        conf: Mapping[str, Any] | None = None,
        logical_date: str | None = None,
    ) -> str:
        """Unpause the DAG and trigger a run; return its run id."""
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        answer = self.api.post(f"/dags/{dag_id}/dagRuns", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["dag_run_id"])

    def backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        *,
        max_active_runs: int = 4,
        reprocess_behavior: str = "none",
        conf: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Unpause the DAG and create a backfill (``POST /backfills``); return the backfill record.
        ``from_date``/``to_date`` are ISO dates or datetimes (UTC when no zone is given)."""
        self.unpause(dag_id)
        body = {
            "dag_id": dag_id,
            "from_date": _aware(from_date),
            "to_date": _aware(to_date),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
            "dag_run_conf": dict(conf or {}),
        }
        answer = self.api.post("/backfills", json=body)
        assert answer.status_code == 200, answer.text
        record: dict[str, Any] = answer.json()
        return record

    def dag_runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        """The DAG's runs (of one ``run_type``: ``manual``, ``backfill``, ``scheduled``), oldest first."""
        params: dict[str, Any] = {"order_by": "logical_date", "limit": 100}
        if run_type is not None:
            params["run_type"] = run_type
        runs: list[dict[str, Any]] = self._get(f"/dags/{dag_id}/dagRuns", **params)["dag_runs"]
        return runs

    def backfill_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every backfill run of the DAG, oldest logical date first."""
        return self.dag_runs(dag_id, run_type="backfill")

    def wait_for_backfill(self, dag_id: str, expected_runs: int, timeout: float = RUN_TIMEOUT) -> list[dict[str, Any]]:
        """Wait until the DAG has ``expected_runs`` backfill runs and every one has ended; return them."""

        def all_ended() -> list[dict[str, Any]] | None:
            runs = self.backfill_runs(dag_id)
            return runs if len(runs) >= expected_runs and all(run["state"] in FINISHED for run in runs) else None

        return wait_for(f"{expected_runs} backfill runs of {dag_id} to end", all_ended, timeout, interval=0.5)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        record: dict[str, Any] = self._get(f"/dags/{dag_id}/dagRuns/{run_id}")
        return record

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        state: str | None = self.dag_run(dag_id, run_id)["state"]
        return state

    def wait_for_dag_run(
        self, dag_id: str, run_id: str, states: Collection[str] = FINISHED, timeout: float = RUN_TIMEOUT
    ) -> str:
        """Wait until the DAG run is in one of ``states`` (default: ended); return its state."""

        def reached() -> str | None:
            state = self.dag_run_state(dag_id, run_id)
            return state if state in states else None

        return wait_for(f"DAG run {dag_id}/{run_id} to be {'/'.join(sorted(states))}", reached, timeout, interval=0.5)

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        record: dict[str, Any] = self._get(path if map_index < 0 else f"{path}/{map_index}")
        return record

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self._get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return records

    def wait_for_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Collection[str] = FINISHED,
        *,
        trigger: str | None = None,
        timeout: float = RUN_TIMEOUT,
    ) -> dict[str, Any]:
        """Wait until the task instance is in one of ``states`` (and, with ``trigger``, deferred on that
        trigger classpath); return its record."""

        def reached() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            if ti["state"] not in states:
                return None
            if trigger is not None and (ti.get("trigger") or {}).get("classpath") != trigger:
                return None
            return ti

        what = f"task {dag_id}/{run_id}/{task_id} to be {'/'.join(sorted(states))}"
        return wait_for(what + (f" on {trigger}" if trigger else ""), reached, timeout, interval=0.25)

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """One record per try of the task instance (the current one included), first try first."""
        records: list[dict[str, Any]] = self._get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")[
            "task_instances"
        ]
        return sorted(records, key=lambda record: int(record["try_number"]))

    def task_log_records(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[dict[str, Any]]:
        """One try's log as the API serves it to the UI: structured records (``event``, ``level``, ...),
        the worker's lines and the triggerer's."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        records: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"full_content": True}
            if token:
                params["token"] = token
            body = self._get(path, **params)
            content = body.get("content") or []
            records.extend(item if isinstance(item, dict) else {"event": str(item)} for item in content)
            token = body.get("continuation_token")
            if not token or not content:
                return records

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None) -> str:
        """A task's log text (each record's message, one a line): one try's, or with ``try_number``
        None every try's in order, each under a ``--- try N ---`` line."""
        if try_number is not None:
            return _log_text(self.task_log_records(dag_id, run_id, task_id, try_number))
        current = int(self.task_instance(dag_id, run_id, task_id)["try_number"])
        parts = []
        for number in range(1, current + 1):
            parts.append(f"--- try {number} ---")
            parts.append(_log_text(self.task_log_records(dag_id, run_id, task_id, number)))
        return "\n".join(parts)

    def wait_for_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        text: str,
        try_number: int | None = None,
        timeout: float = RUN_TIMEOUT,
    ) -> str:
        """Wait until the task's log (one try's, or every try's) holds ``text``; return the log."""

        def holds_text() -> str | None:
            log = self.task_log(dag_id, run_id, task_id, try_number)
            return log if text in log else None

        return wait_for(f"{text!r} in the log of {dag_id}/{run_id}/{task_id}", holds_text, timeout, interval=0.5)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The task's XCom ``key`` (deserialised); KeyError when the task pushed none under that key."""
        self.check_running()
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        answer = self.api.get(path, params={"deserialize": True})
        if answer.status_code == 404:
            raise KeyError(f"no XCom {key!r} for {dag_id}/{run_id}/{task_id}")
        answer.raise_for_status()
        return answer.json()["value"]

    def xcoms(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """Every XCom the task pushed, by key (deserialised)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        entries = self._get(path)["xcom_entries"]
        return {entry["key"]: self.xcom(dag_id, run_id, task_id, entry["key"]) for entry in entries}

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str = "failed") -> None:
        """Mark the task instance ``failed`` or ``success``, as a user does in the UI."""
        answer = self.api.patch(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state})
        assert answer.status_code == 200, answer.text

    def clear_task(self, dag_id: str, run_id: str, task_id: str, **options: Any) -> None:
        """Clear the task instance (any state), so the scheduler runs it again; ``options`` go into the
        request body (``include_downstream=True``, ...)."""
        body = {"dry_run": False, "task_ids": [task_id], "dag_run_id": run_id, "only_failed": False, **options}
        answer = self.api.post(f"/dags/{dag_id}/clearTaskInstances", json=body)
        assert answer.status_code == 200, answer.text

    # ------------------------------------------------------------ task processes

    def task_process_pid(self, dag_id: str, run_id: str, task_id: str) -> int | None:
        """The pid of the running try's task process (the one the supervisor forked), if it runs."""
        ti_id = self.task_instance(dag_id, run_id, task_id)["id"]
        title = f"airflow worker -- {ti_id}"
        for pid, (_, cmdline) in _process_table().items():
            if cmdline.startswith(title):
                return pid
        return None

    def kill_task_process(self, dag_id: str, run_id: str, task_id: str, timeout: float = RUN_TIMEOUT) -> int:
        """SIGKILL the running try's task process (as the OOM killer would); return its pid."""
        pid = wait_for(
            f"the task process of {dag_id}/{run_id}/{task_id}",
            lambda: self.task_process_pid(dag_id, run_id, task_id),
            timeout,
        )
        _kill([pid])
        return pid

    # ------------------------------------------------------------ component logs

    def component_log(self, name: str) -> str:
        try:
            return (self.component_logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def scheduler_log(self) -> str:
        return self.component_log("scheduler")

    def defer_exits_handled(self, dag_id: str, run_id: str, task_id: str) -> int:
        """How often the scheduler has handled the executor's report of a worker that deferred this task."""
        needle = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id},"
        return sum(1 for line in self.scheduler_log().splitlines() if needle in line and "state=deferred," in line)

    def let_defer_exit_settle(self, dag_id: str, run_id: str, task_id: str, deferrals: int) -> None:
        """Wait until the scheduler has handled the exit of the worker that deferred the task, so its
        trigger may fire without meeting Airflow's stale-success race (see the module docstring).
        Bounded: past ``DEFER_EXIT_SETTLE`` the report has long been handled, logged or not."""
        try:
            wait_for(
                f"the scheduler to handle deferral {deferrals} of {dag_id}",
                lambda: self.defer_exits_handled(dag_id, run_id, task_id) >= deferrals,
                DEFER_EXIT_SETTLE,
            )
        except AssertionError:
            print(f"note: no 'TaskInstance Finished ... state=deferred' line for {dag_id} in the scheduler log")

    def race_hint(self, dag_id: str) -> str:
        """Name Airflow's own race when the scheduler failed the task for it, rather than the provider."""
        for line in self.scheduler_log().splitlines():
            if STATE_MISMATCH in line and dag_id in line:
                return (
                    "Airflow's scheduler failed the task on a stale executor success after a deferral "
                    f"(apache/airflow#67287), not the provider:\n{line}"
                )
        return "see the Airflow diagnostics above"

    # ------------------------------------------------------------ diagnostics

    def diagnostics(self) -> str:
        parts = []
        for name in sorted({*COMPONENTS, *self.components}):
            component = self.components.get(name)
            status = "not started" if component is None else component.process.poll()
            parts.append(f"----- airflow {name} (exit: {status}) -----\n{tail(self.component_logs / f'{name}.log')}")
        for log in sorted((self.home / "logs").glob("dag_id=*/**/*.log")):
            parts.append(f"----- {log.relative_to(self.home)} -----\n{tail(log, 40)}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def dump_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            print("\n===== Airflow diagnostics =====\n" + self.diagnostics(), file=sys.stderr)
            raise


def _aware(moment: str) -> str:
    """An ISO date or datetime as the API wants it: with a time zone (UTC when none is given)."""
    parsed = datetime.fromisoformat(moment)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).isoformat()


def _log_text(records: Iterable[dict[str, Any]]) -> str:
    lines = []
    for record in records:
        event = record.get("event")
        if event is None:
            continue
        lines.append(str(event))
    return "\n".join(lines)
