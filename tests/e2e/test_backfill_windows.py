"""End to end: a backfill of four daily windows of one tap, all four DAG runs active at once.

A real Airflow on PostgreSQL (the LocalExecutor with parallel task slots; scheduler, triggerer, DAG
processor and API server as separate processes) backfills ``tap_params={"since": "{{ ds }}"}`` over
four days with ``max_active_runs=4``, once with the sync operator and once deferrable. The tap's script
takes a few seconds, so the four tasks really find the tap busy with each other's runs.

Expected, in both modes: four accepted runs on the stand-in, one per window, each with its own
``since``; never two script runs of the tap at once; and each task's XComs naming its own run (its
publisher token leads to the run whose params carry that window's ``ds``, with that run's row count).
"At once" is the provider's busy rule: a tap is busy while a run's script is in flight (Datris's
``lastRunStatus: running``) and within the 5 s debounce; the pipeline jobs of one window may still be
loading when the next window's script starts. The table also shows when each run's jobs were done,
and how many runs overlap when the jobs count (the stand-in journal's ``run_spans``), unasserted.
Each accepted run returns a different record count, so a task reporting another window's run cannot
pass on the count either.

The windows' run times, tokens and counts, and the number of ``POST /tap/run`` and ``POST /job/kill``
calls, are printed (with ``-s``) and written to ``benchmarks/results/backfill_windows.txt``.

Run: ``.venv/bin/python -m pytest tests/e2e/test_backfill_windows.py -m e2e -q -p no:cacheprovider -s``.
"""

from __future__ import annotations

import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from datris_provider.testing import StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_stack import AirflowStack
    from postgres import PostgresCluster

    from datris_provider.testing.model import ScriptRun

pytestmark = pytest.mark.e2e

SYNC_DAG = "e2e_windows_sync"
DEFERRED_DAG = "e2e_windows_deferred"
SYNC_TAP = "e2e_windows_sync_tap"
DEFERRED_TAP = "e2e_windows_deferred_tap"
TASK_ID = "load_window"
WINDOWS = ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04")

# Stand-in seconds run as real seconds here: Airflow's side of the test lives in real time.
SCRIPT_SECONDS = 4.0
JOB_SECONDS = 3.0
# Each accepted run returns a record count of its own: FIRST_RECORDS, then +111 per run.
FIRST_RECORDS = 1000
RECORDS_STEP = 111
# Four windows one after the other, each about one debounce window apart, plus Airflow's own pace.
BACKFILL_TIMEOUT = 240.0

RESULTS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "backfill_windows.txt"

DAG_FILE = textwrap.dedent(
    f'''\
    """Backfill windows of one Datris tap (written by tests/e2e/test_backfill_windows.py)."""
    from datetime import datetime

    from airflow.sdk import DAG

    from datris_provider.operators.tap import DatrisRunTapOperator

    for dag_id, tap_name, deferrable in (
        ("{SYNC_DAG}", "{SYNC_TAP}", False),
        ("{DEFERRED_DAG}", "{DEFERRED_TAP}", True),
    ):
        # end_date: the scheduler makes no run of its own beside the backfill's four.
        with DAG(
            dag_id,
            schedule="@daily",
            start_date=datetime(2026, 1, 1),
            end_date=datetime(2026, 1, 4),
            catchup=False,
            max_active_runs=4,
        ):
            DatrisRunTapOperator(
                task_id="{TASK_ID}",
                tap_name=tap_name,
                tap_params={{"since": "{{{{ ds }}}}"}},
                deferrable=deferrable,
                poll_interval=1,
            )
    '''
)


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datris() -> Iterator[StandInDatris]:
    """The stand-in, in this process, on a real-time clock with a 1 s job scheduler tick."""
    server = StandInDatris(time_scale=1.0, scheduler_tick_seconds=1.0).start()
    for name in (SYNC_TAP, DEFERRED_TAP):
        server.add_tap(
            StandInTap(
                name=name,
                target_pipeline="orders",
                records=FIRST_RECORDS,
                script_seconds=SCRIPT_SECONDS,
                job_seconds=JOB_SECONDS,
            )
        )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(
    datris: StandInDatris, airflow_stacks: Callable[..., AirflowStack], postgres_cluster: PostgresCluster
) -> AirflowStack:
    # Four slots: the four sync tasks hold one each while they wait for the tap.
    stack = airflow_stacks(datris_url=datris.url, database_url=postgres_cluster.new_database(), parallelism=4)
    stack.write_dag("datris_backfill_windows.py", DAG_FILE)
    return stack.start(wait_for_dags=[SYNC_DAG, DEFERRED_DAG])


@pytest.fixture(scope="module")
def report() -> Iterator[list[str]]:
    """Sections of the closing table, printed and written to the results file at the end."""
    sections: list[str] = []
    yield sections
    if sections:
        text = "\n\n".join(sections) + "\n"
        print("\n" + text)
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(text)


class DistinctRecordCounts:
    """Gives each accepted run of a tap a record count of its own.

    The stand-in copies a tap's settings when it accepts a run, so raising ``records`` right after
    each acceptance gives the next run another count (runs of one tap are seconds apart: the debounce).
    """

    def __init__(self, datris: StandInDatris, tap_name: str) -> None:
        self.datris = datris
        self.tap_name = tap_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"record counts of {tap_name}", daemon=True)

    def __enter__(self) -> DistinctRecordCounts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        seen = 0
        while not self._stop.wait(0.02):
            accepted = len(self.datris.script_runs(self.tap_name))
            if accepted > seen:
                seen = accepted
                self.datris.tap(self.tap_name).records = FIRST_RECORDS + RECORDS_STEP * seen


# --------------------------------------------------------------------------------------------------
# What a window reported, and the table
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    ds: str
    state: str
    xcoms: dict[str, Any]
    run: ScriptRun | None

    @property
    def token(self) -> str | None:
        token = self.xcoms.get("publisher_token")
        return None if token is None else str(token)


def clock_time(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def overlaps(runs: list[ScriptRun]) -> list[tuple[ScriptRun, ScriptRun]]:
    """Pairs of script runs whose [start, end] intervals intersect (a run without an end never ended)."""
    spans = [(run, run.started_at_ms, run.ended_at_ms) for run in runs]
    return [(earlier, later) for earlier, later, _ in overlapping(spans)]


def overlapping(
    spans: list[tuple[ScriptRun, int, int | None]],
) -> list[tuple[ScriptRun, ScriptRun, int | None]]:
    """Pairs of spans that intersect, with the earlier one's end."""
    pairs = []
    ordered = sorted(spans, key=lambda span: span[1])
    for index, (earlier, _, earlier_end) in enumerate(ordered):
        for later, later_start, _ in ordered[index + 1 :]:
            if earlier_end is None or later_start < earlier_end:
                pairs.append((earlier, later, earlier_end))
    return pairs


def load_ends(datris: StandInDatris, tap_name: str) -> dict[str, int | None]:
    """When each run (by publisher token) was done with its pipeline jobs too, from the stand-in's
    journal: the busy rule spaces the script phases; a window's load may still run when the next
    window's script starts."""
    return {run.publisher_token or "": end for run, _, end in datris.journal.run_spans(tap_name)}


def table(mode: str, windows: list[Window], seconds: float, datris: StandInDatris, tap_name: str) -> str:
    posts = [call for call in datris.calls("POST /tap/run") if (call.json or {}).get("name") == tap_name]
    lines = [
        f"Backfill of four daily windows of one tap, max_active_runs=4 ({mode}; real Airflow 3.3, "
        "PostgreSQL, LocalExecutor with 4 slots)",
        f"{'window (ds)':<12} {'task':<8} {'run since':<11} {'run start':<13} {'run end':<13} {'jobs done':<13} "
        f"{'publisher token':<37} {'rows (xcom)':>11} {'rows (run)':>10}",
    ]
    done = load_ends(datris, tap_name)
    for window in windows:
        run = window.run
        lines.append(
            f"{window.ds:<12} {window.state:<8} {(run.params.get('since') if run else '-')!s:<11} "
            f"{clock_time(run.started_at_ms if run else None):<13} {clock_time(run.ended_at_ms if run else None):<13} "
            f"{clock_time(done.get(window.token or '')):<13} "
            f"{window.token or '-':<37} {window.xcoms.get('row_count', '-')!s:>11} "
            f"{(run.record_count if run else '-')!s:>10}"
        )
    accepted = datris.script_runs(tap_name)
    whole_runs = overlapping(datris.journal.run_spans(tap_name))
    lines.append(
        f"POST /tap/run: {len(posts)} ({len(accepted)} accepted, {len(posts) - len(accepted)} debounced); "
        f"POST /job/kill: {len(datris.calls('POST /job/kill'))}; overlapping script runs: {len(overlaps(accepted))} "
        f"(runs overlapping when their pipeline jobs count: {len(whole_runs)}); "
        f"backfill created to last window ended: {seconds:.0f} s (script {SCRIPT_SECONDS:g} s, job {JOB_SECONDS:g} s, "
        "debounce 5 s)"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------


def backfill_windows(
    stack: AirflowStack, datris: StandInDatris, dag_id: str, tap_name: str
) -> tuple[list[Window], float]:
    """Backfill the four windows; return what each window's task reported, and the backfill's seconds."""
    started = time.monotonic()
    with DistinctRecordCounts(datris, tap_name):
        stack.backfill(dag_id, WINDOWS[0], WINDOWS[-1], max_active_runs=4)
        dag_runs = stack.wait_for_backfill(dag_id, expected_runs=len(WINDOWS), timeout=BACKFILL_TIMEOUT)
    seconds = time.monotonic() - started
    by_token = {run.publisher_token: run for run in datris.script_runs(tap_name) if run.publisher_token}
    windows = []
    for dag_run in dag_runs:
        run_id = dag_run["dag_run_id"]
        ds = str(dag_run["logical_date"])[:10]
        ti = stack.task_instance(dag_id, run_id, TASK_ID)
        xcoms = stack.xcoms(dag_id, run_id, TASK_ID)
        token = xcoms.get("publisher_token")
        windows.append(Window(ds, str(ti["state"]), xcoms, by_token.get(token)))
    return windows, seconds


def check_windows(windows: list[Window], datris: StandInDatris, tap_name: str) -> None:
    assert [window.ds for window in windows] == list(WINDOWS)
    assert [window.state for window in windows] == ["success"] * len(WINDOWS), windows

    # Four accepted runs, one per window, each with its own since; never two scripts at once.
    runs = datris.script_runs(tap_name)
    assert sorted(run.params.get("since") for run in runs) == list(WINDOWS), [run.params for run in runs]
    assert all(run.client == "airflow" and run.status == "success" for run in runs), runs
    assert overlaps(runs) == [], overlaps(runs)

    # Each task names its own run: token -> the run that carried this window's since -> its row count.
    for window in windows:
        assert window.run is not None, f"window {window.ds}: XCom token {window.token} names no run of the tap"
        assert window.run.params == {"since": window.ds}, (window.ds, window.run.params)
        result = window.xcoms["return_value"]
        assert result["publisher_token"] == window.token
        assert window.xcoms["row_count"] == result["row_count"] == window.run.record_count, window
        assert result["status"] == "success", result
    assert len({window.xcoms["row_count"] for window in windows}) == len(WINDOWS)
    assert datris.kills == []


@pytest.mark.parametrize(
    ("mode", "dag_id", "tap_name"),
    [("sync", SYNC_DAG, SYNC_TAP), ("deferrable", DEFERRED_DAG, DEFERRED_TAP)],
)
def test_four_windows_at_once_each_load_their_own_run(
    stack: AirflowStack, datris: StandInDatris, report: list[str], mode: str, dag_id: str, tap_name: str
) -> None:
    with stack.dump_on_failure():
        windows, seconds = backfill_windows(stack, datris, dag_id, tap_name)
        report.append(table(mode, windows, seconds, datris, tap_name))
        if mode == "deferrable" and any(window.state != "success" for window in windows):
            print(stack.race_hint(dag_id))
        check_windows(windows, datris, tap_name)
