"""End to end: a real Airflow 3 (scheduler, triggerer, DAG processor, API server) runs deferrable
``DatrisRunTapOperator`` tasks against the stand-in Datris running in this test process.

What ``dag.test()`` cannot show is checked here: the task really leaves the worker while Datris works
(the triggerer makes the blocking run call and follows the pipeline), the serialised trigger kwargs
survive the metadata DB, and marking a deferred task failed makes the real triggerer call
``DatrisPipelineTrigger.on_kill``, which kills the Datris job (Airflow >= 3.3).

Run: ``.venv/bin/pytest tests/e2e -q -m e2e -p no:cacheprovider -s`` (about a minute; one Airflow
stack with SQLite, the LocalExecutor and two worker slots).

A race in Airflow 3.3.2 itself shapes the timing here: when a trigger fires before the scheduler has
handled the executor's "success" report of the worker that deferred (the worker's supervisor can take up
to ``[workers] min_heartbeat_interval`` to report it), the re-queued task instance is failed as "state
changed externally" (apache/airflow#67287, #72716; only the SCHEDULED case is guarded in 3.3.2). So the
test holds each tap's script phase with a gate until the scheduler has handled that report, lowers
``min_heartbeat_interval`` to 1 s, and lets the pipeline take several seconds of polls.
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
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest

from datris_provider.testing.server import StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.e2e

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")

FINISHING_DAG = "e2e_datris_deferred_run"
FINISHING_TAP = "e2e_orders_tap"
ENDLESS_DAG = "e2e_datris_deferred_kill"
ENDLESS_TAP = "e2e_endless_tap"
TASK_ID = "run_tap"

TAP_RUN_TRIGGER = "datris_provider.triggers.datris.DatrisTapRunTrigger"
PIPELINE_TRIGGER = "datris_provider.triggers.datris.DatrisPipelineTrigger"

COMPONENTS = ("api-server", "scheduler", "triggerer", "dag-processor")
STARTUP_DEADLINE = 90.0
RUN_DEADLINE = 60.0
# Longest wait for the scheduler to handle a deferring worker's exit before a trigger may fire.
DEFER_EXIT_SETTLE = 15.0
# Status polls (1 s apart) before the finishing tap's job ends: the pipeline trigger fires 7+ s after
# it starts, well after the deferring worker's exit was handled (see the module docstring).
PIPELINE_POLLS = 8
STATE_MISMATCH = "finished with state success, but the task instance's state attribute is"

DAG_FILE = textwrap.dedent(
    f'''\
    """DAGs of the Datris end-to-end test (written by tests/e2e/test_real_airflow.py)."""
    from datetime import datetime

    from airflow.sdk import DAG

    from datris_provider.operators.tap import DatrisRunTapOperator

    with DAG("{FINISHING_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        DatrisRunTapOperator(task_id="{TASK_ID}", tap_name="{FINISHING_TAP}", deferrable=True, poll_interval=1)

    with DAG("{ENDLESS_DAG}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        DatrisRunTapOperator(task_id="{TASK_ID}", tap_name="{ENDLESS_TAP}", deferrable=True, poll_interval=1)
    '''
)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float, interval: float = 0.25) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
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
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}{hint}")
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


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc), so stray children can be ended too."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def run_calls(datris: StandInDatris, tap_name: str) -> list[Any]:
    """The POST /tap/run calls Datris received for one tap."""
    return [call for call in datris.calls("POST /tap/run") if (call.json or {}).get("name") == tap_name]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# The Airflow stack
# --------------------------------------------------------------------------------------------------


@dataclass
class AirflowStack:
    home: Path
    env: dict[str, str]
    api_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    client: httpx.Client | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def component_logs(self) -> Path:
        return self.home / "component-logs"

    def run_cli(self, *args: str, timeout: float = 120) -> None:
        log = self.component_logs / f"{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        with log.open("ab") as out:
            result = subprocess.run(
                [AIRFLOW, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        if result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{tail(log)}")

    def start(self, component: str, *args: str) -> None:
        log = (self.component_logs / f"{component}.log").open("ab")
        try:
            self.processes[component] = subprocess.Popen(
                [AIRFLOW, component, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the finaliser ends the whole tree
            )
        finally:
            log.close()

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"airflow {name} exited with {process.returncode} (its log is printed below)")

    def stop(self, grace: float = 15.0) -> None:
        if self.client is not None:
            self.client.close()
        tree = [pid for p in self.processes.values() if p.poll() is None for pid in descendants(p.pid)]
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Children that moved to a process group of their own (task supervisors, log servers).
        for pid in [pid for pid in tree if alive(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ REST API

    @property
    def api(self) -> httpx.Client:
        assert self.client is not None, "the API server is not up yet"
        return self.client

    def connect(self) -> None:
        """Get a JWT from the Simple auth manager (all users are admins here) for the REST calls."""
        answer = httpx.get(f"{self.api_url}/auth/token", timeout=10)
        answer.raise_for_status()
        token = answer.json()["access_token"]
        self.client = httpx.Client(
            base_url=f"{self.api_url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=15
        )

    def health(self) -> dict[str, Any] | None:
        self.check_running()
        answer = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5)
        if answer.status_code != 200:
            return None
        body = answer.json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        if all((body.get(part) or {}).get("status") == "healthy" for part in parts):
            return body
        return None

    def dag_known(self, dag_id: str) -> bool:
        self.check_running()
        return self.api.get(f"/dags/{dag_id}").status_code == 200

    def unpause_and_trigger(self, dag_id: str, run_id: str) -> None:
        answer = self.api.patch(f"/dags/{dag_id}", json={"is_paused": False})
        assert answer.status_code == 200, answer.text
        answer = self.api.post(f"/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None})
        assert answer.status_code == 200, answer.text

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        self.check_running()
        answer = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        answer.raise_for_status()
        return answer.json()["state"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str = TASK_ID) -> dict[str, Any]:
        self.check_running()
        answer = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        answer.raise_for_status()
        return answer.json()

    def wait_for_end(self, dag_id: str, run_id: str, deadline_s: float = RUN_DEADLINE) -> str:
        return wait_for(
            f"DAG run {dag_id}/{run_id} to end",
            lambda: (state := self.dag_run_state(dag_id, run_id)) in ("success", "failed") and state,
            deadline_s,
            interval=0.5,
        )

    # ------------------------------------------------------------ scheduler log

    def scheduler_log(self) -> str:
        try:
            return (self.component_logs / "scheduler.log").read_text(errors="replace")
        except OSError:
            return ""

    def defer_exits_handled(self, dag_id: str, run_id: str) -> int:
        """How often the scheduler has handled the executor's report of a worker that deferred this task."""
        needle = f"TaskInstance Finished: dag_id={dag_id}, task_id={TASK_ID}, run_id={run_id},"
        return sum(1 for line in self.scheduler_log().splitlines() if needle in line and "state=deferred," in line)

    def let_defer_exit_settle(self, dag_id: str, run_id: str, deferrals: int) -> None:
        """Wait until the scheduler has handled the exit of the worker that deferred the task, so its
        trigger may fire without meeting Airflow's stale-success race (see the module docstring).
        Bounded: past ``DEFER_EXIT_SETTLE`` the report has long been handled, logged or not."""
        try:
            wait_for(
                f"the scheduler to handle deferral {deferrals} of {dag_id}",
                lambda: self.defer_exits_handled(dag_id, run_id) >= deferrals,
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
        for name in COMPONENTS:
            process = self.processes.get(name)
            status = "not started" if process is None else process.poll()
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


def stack_env(home: Path, api_port: int, datris_url: str) -> dict[str, str]:
    """The components' environment, built from scratch: the test process's own AIRFLOW_* settings
    (the datris pytest plugin isolates this process's Airflow home) must not leak into them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    api_url = f"http://127.0.0.1:{api_port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__WORKERS": "1",
            # Every component signs or checks the same tokens: one secret for all of them.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # Log servers on free loopback ports, so a second Airflow on this machine is no clash.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # A worker's supervisor reports the deferring task's exit within 1 s instead of 5 s.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW_CONN_DATRIS_DEFAULT": json.dumps({"conn_type": "datris", "host": datris_url}),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInDatris]:
    """The stand-in Datris, in this process; the Airflow processes reach it through its URL."""
    server = StandInDatris().start()
    # Gates hold each tap's script phase (the blocking run call) open until the test lets it end.
    gates = [threading.Event(), threading.Event()]
    server.add_tap(
        StandInTap(name=FINISHING_TAP, target_pipeline="orders", polls_until_end=PIPELINE_POLLS, gate=gates[0])
    )
    server.add_tap(StandInTap(name=ENDLESS_TAP, target_pipeline="orders", polls_until_end=None, gate=gates[1]))
    try:
        yield server
    finally:
        for gate in gates:
            gate.set()
        server.stop()


@pytest.fixture(scope="module")
def airflow_stack(stand_in: StandInDatris, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-e2e-home")
    (home / "dags").mkdir()
    (home / "dags" / "datris_e2e_dags.py").write_text(DAG_FILE)
    api_port = free_port()
    stack = AirflowStack(home=home, env=stack_env(home, api_port, stand_in.url), api_url=f"http://127.0.0.1:{api_port}")
    stack.component_logs.mkdir()
    try:
        with stack.dump_on_failure():
            started = time.monotonic()
            stack.run_cli("db", "migrate")
            stack.start("api-server", "--port", str(api_port), "--host", "127.0.0.1", "--workers", "1")
            stack.start("scheduler")
            stack.start("triggerer")
            stack.start("dag-processor")
            wait_for("the Airflow components to report healthy", stack.health, STARTUP_DEADLINE, interval=0.5)
            stack.connect()
            for dag_id in (FINISHING_DAG, ENDLESS_DAG):
                wait_for(f"DAG {dag_id} to be parsed", lambda dag_id=dag_id: stack.dag_known(dag_id), STARTUP_DEADLINE)
            print(f"\nAirflow stack up in {time.monotonic() - started:.1f} s (home {home})")
        yield stack
    finally:
        stack.stop()


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_deferred_run_waits_in_the_triggerer_and_succeeds(airflow_stack: AirflowStack, stand_in: StandInDatris) -> None:
    stack, datris, run_id = airflow_stack, stand_in, "e2e-finishing-1"
    gate = datris.tap(FINISHING_TAP).gate
    assert gate is not None
    with stack.dump_on_failure():
        stack.unpause_and_trigger(FINISHING_DAG, run_id)

        # The script phase is held open by the gate: the blocking run call is in flight, so it must
        # come from the triggerer while the task instance is deferred (no worker slot held).
        datris.wait_until_running(FINISHING_TAP, timeout=RUN_DEADLINE)
        ti = wait_for(
            "the task to be deferred on the tap-run trigger",
            lambda: (ti := stack.task_instance(FINISHING_DAG, run_id))["state"] == "deferred" and ti,
            20,
        )
        assert ti["trigger"]["classpath"] == TAP_RUN_TRIGGER, ti
        assert ti["triggerer_job"] is not None, ti
        stack.let_defer_exit_settle(FINISHING_DAG, run_id, deferrals=1)
        gate.set()

        # Then the pipeline wait: deferred again, on the pipeline trigger, while Datris still works.
        seen: list[tuple[str | None, str | None]] = []

        def pipeline_deferred() -> bool:
            ti = stack.task_instance(FINISHING_DAG, run_id)
            classpath = (ti.get("trigger") or {}).get("classpath")
            seen.append((ti["state"], classpath))
            if ti["state"] in ("success", "failed"):
                raise AssertionError(f"the task ended without being seen deferred on the pipeline: {seen}")
            return ti["state"] == "deferred" and classpath == PIPELINE_TRIGGER

        wait_for("the task to be deferred on the pipeline trigger", pipeline_deferred, 30, interval=0.2)
        token = wait_for("the run's publisher token", lambda: datris.script_runs(FINISHING_TAP)[0].publisher_token, 5)
        jobs = datris.jobs(token)
        assert len(jobs) == 1
        assert jobs[0].state in ("INITIALIZED", "PROCESSING"), jobs  # Datris was still working

        state = stack.wait_for_end(FINISHING_DAG, run_id)
        assert state == "success", stack.race_hint(FINISHING_DAG)
        ti = stack.task_instance(FINISHING_DAG, run_id)
        assert ti["state"] == "success", ti
        assert ti["try_number"] == 1, ti

    # Datris saw exactly one run call, and the job was followed to its end by status polls.
    assert len(run_calls(datris, FINISHING_TAP)) == 1
    assert datris.job(jobs[0].pipeline_token).state == "COMPLETED"
    polls = [call for call in datris.calls("GET /pipeline/status") if call.query.get("publishertoken") == token]
    assert len(polls) >= PIPELINE_POLLS  # the trigger's polls, then the task's read of the last events
    assert datris.kills == []


def test_marking_a_deferred_task_failed_kills_the_datris_job(
    airflow_stack: AirflowStack, stand_in: StandInDatris
) -> None:
    stack, datris, run_id = airflow_stack, stand_in, "e2e-endless-1"
    with stack.dump_on_failure():
        stack.unpause_and_trigger(ENDLESS_DAG, run_id)
        gate = datris.tap(ENDLESS_TAP).gate
        assert gate is not None
        datris.wait_until_running(ENDLESS_TAP, timeout=RUN_DEADLINE)
        wait_for(
            "the task to be deferred on the tap-run trigger",
            lambda: stack.task_instance(ENDLESS_DAG, run_id)["state"] == "deferred",
            20,
        )
        stack.let_defer_exit_settle(ENDLESS_DAG, run_id, deferrals=1)
        gate.set()

        token = wait_for(
            "the endless tap's run to submit its job",
            lambda: next((run.publisher_token for run in datris.script_runs(ENDLESS_TAP) if run.publisher_token), None),
            RUN_DEADLINE,
        )
        job = wait_for(
            "the Datris job to be running (killable)",
            lambda: next((job for job in datris.jobs(token) if job.state == "PROCESSING"), None),
            RUN_DEADLINE,
        )
        ti = wait_for(
            "the task to be deferred on the pipeline trigger",
            lambda: (
                (ti := stack.task_instance(ENDLESS_DAG, run_id))["state"] == "deferred"
                and (ti.get("trigger") or {}).get("classpath") == PIPELINE_TRIGGER
                and ti
            ),
            RUN_DEADLINE,
        )
        # The worker reads the status once before deferring; a later poll comes from the running trigger.
        polls_before_deferral = len(datris.calls("GET /pipeline/status"))
        wait_for(
            "the triggerer to run the pipeline trigger",
            lambda: len(datris.calls("GET /pipeline/status")) > polls_before_deferral,
            RUN_DEADLINE,
        )
        assert datris.kills == []

        answer = stack.api.patch(
            f"/dags/{ENDLESS_DAG}/dagRuns/{run_id}/taskInstances/{TASK_ID}", json={"new_state": "failed"}
        )
        assert answer.status_code == 200, answer.text

        # The triggerer cancels the trigger "by user action" and calls its on_kill (Airflow >= 3.3).
        wait_for("POST /job/kill to reach Datris", lambda: datris.kills, RUN_DEADLINE)
        assert datris.kills == [job.pipeline_token]
        assert datris.job(job.pipeline_token).state == "CANCELLED"
        kill_calls = datris.calls("POST /job/kill")
        assert [call.json for call in kill_calls] == [{"pipelineToken": job.pipeline_token}]

        assert stack.wait_for_end(ENDLESS_DAG, run_id) == "failed"
        assert stack.task_instance(ENDLESS_DAG, run_id)["state"] == "failed"
        assert ti["try_number"] == 1

    assert len(run_calls(datris, ENDLESS_TAP)) == 1
