"""End to end: Datris schedules the tap, a real Airflow reacts.

A real Airflow (API server, scheduler, triggerer, DAG processor) watches a Datris-scheduled tap on the
stand-in through ``DatrisTapRunsTrigger``. The tap runs three times (each run stands in for one fire
of Datris's cron: the run-log rows are the same); the consumer DAG, scheduled on the tap's runs asset,
must run exactly three times, each run's asset event naming its Datris run. Between runs 1 and 2 the
triggerer is SIGKILLed and started again; a run that was already there before the watcher started and
a failed run start nothing.

Run: ``.venv/bin/pytest tests/e2e/test_watcher_e2e.py -q -m e2e -p no:cacheprovider -s``.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from airflow_stack import wait_for

from datris_provider.assets import tap_runs_asset_uri
from datris_provider.testing import StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_stack import AirflowStack

pytestmark = pytest.mark.e2e

TAP = "e2e_nightly_orders"
# Datris schedules the tap, but its cron must not fire by itself during the test (the stand-in runs
# a fast clock): the runs a test makes are then all the runs there are.
YEARLY_CRON = "0 0 6 1 1 ?"
CONSUMER_DAG = "e2e_datris_reaction"
POLL_INTERVAL = 1.0
RUN_TIMEOUT = 90.0
LOG_READ = "GET /tap/logs/all"

DAG_FILE = textwrap.dedent(
    f'''\
    """The consumer of a Datris-scheduled tap (written by tests/e2e/test_watcher_e2e.py)."""
    from datetime import datetime

    from airflow.sdk import DAG, task

    from datris_provider.assets import datris_tap_runs_asset

    tap_runs = datris_tap_runs_asset("{TAP}", poll_interval={POLL_INTERVAL}, lookback_seconds=3600)

    with DAG("{CONSUMER_DAG}", schedule=[tap_runs], start_date=datetime(2024, 1, 1), catchup=False):

        @task
        def react(*, triggering_asset_events=None):
            return [event.extra["payload"] for event in triggering_asset_events[tap_runs]]

        react()
    '''
)


@pytest.fixture(scope="module")
def datris() -> Iterator[StandInDatris]:
    # Datris's scheduler skips the debounce; the runs made here stand in for its cron fires.
    server = StandInDatris(debounce_seconds=0).start()
    server.add_tap(StandInTap(name=TAP, cron=YEARLY_CRON, target_pipeline="orders", records=42))
    yield server
    server.stop()


def datris_runs(datris: StandInDatris, *, until_landed: bool = False) -> dict[str, Any]:
    answer = httpx.post(f"{datris.api_url}/tap/run", json={"name": TAP, "mode": "run"}, timeout=60)
    answer.raise_for_status()
    run: dict[str, Any] = answer.json()
    if until_landed:
        wait_for(
            "the run's pipeline to finish",
            lambda: httpx.get(
                f"{datris.api_url}/pipeline/status",
                params={"publishertoken": run["publisherToken"], "withrollup": "true"},
                timeout=10,
            ).json()["rollup"]["allDone"],
            RUN_TIMEOUT,
            interval=0.05,
        )
    return run


def reads(datris: StandInDatris) -> int:
    return len(datris.calls(LOG_READ))


def wait_for_reads(datris: StandInDatris, more: int) -> None:
    """Let the watcher read Datris's run log ``more`` times (it saves its cursor after a read)."""
    target = reads(datris) + more
    wait_for(f"{more} more reads of the run log", lambda: reads(datris) >= target, RUN_TIMEOUT)


def consumer_runs(stack: AirflowStack) -> list[dict[str, Any]]:
    return stack.dag_runs(CONSUMER_DAG)


def wait_for_consumer_runs(stack: AirflowStack, count: int) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        runs = consumer_runs(stack)
        if len(runs) >= count and all(run["state"] in ("success", "failed") for run in runs):
            return runs
        return None

    return wait_for(f"{count} ended runs of {CONSUMER_DAG}", ended, RUN_TIMEOUT, interval=0.5)


def asset_events(stack: AirflowStack) -> list[dict[str, Any]]:
    uri = tap_runs_asset_uri(TAP)
    (asset,) = [a for a in stack._get("/assets", limit=100)["assets"] if a["uri"] == uri]
    events: list[dict[str, Any]] = stack._get("/assets/events", asset_id=asset["id"], limit=100)["asset_events"]
    return events


@pytest.fixture(scope="module")
def stack(airflow_stacks: Callable[..., AirflowStack], datris: StandInDatris) -> AirflowStack:
    stack = airflow_stacks(datris_url=datris.url)
    stack.write_dag("datris_reaction.py", DAG_FILE)
    return stack.start(wait_for_dags=[CONSUMER_DAG])


def test_airflow_reacts_once_per_landed_datris_run_across_a_triggerer_kill(datris, stack):
    with stack.dump_on_failure():
        history = datris_runs(datris, until_landed=True)  # there before the watcher starts: no event
        stack.unpause(CONSUMER_DAG)
        wait_for_reads(datris, 2)

        first = datris_runs(datris)
        wait_for_consumer_runs(stack, 1)
        wait_for_reads(datris, 2)  # the cursor naming run 1 is saved at the read after it fired

        stack.kill("triggerer")
        second = datris_runs(datris)  # while no triggerer runs
        stack.restart("triggerer")
        wait_for_consumer_runs(stack, 2)

        tap = datris.tap(TAP)
        tap.error = "Traceback: KeyError 'page' (tap script line 12)"
        failed = datris_runs(datris)
        tap.error = None
        third = datris_runs(datris)
        runs = wait_for_consumer_runs(stack, 3)
        # A few more polls: anything the watcher would still fire (twice, or for the failure) shows now.
        wait_for_reads(datris, 5)
        runs = wait_for_consumer_runs(stack, len(consumer_runs(stack)))

        landed = [first["publisherToken"], second["publisherToken"], third["publisherToken"]]
        events = asset_events(stack)
        fired = [event["extra"]["payload"]["publisher"] for event in events]
        reacted = [
            payload["publisher"] for run in runs for payload in stack.xcom(CONSUMER_DAG, run["dag_run_id"], "react")
        ]
        counts = Counter(fired)
        missed = [token for token in landed if token not in counts]
        twice = [token for token, n in counts.items() if n > 1]
        print(
            f"\nwatcher e2e: datris_runs_landed={len(landed)} asset_events={len(events)} "
            f"consumer_dag_runs={len(runs)} runs_missed={len(missed)} runs_fired_twice={len(twice)} "
            f"(plus 1 run before the watcher started and 1 failed run, neither fired)"
        )

        assert missed == [] and twice == []
        assert sorted(fired) == sorted(landed)
        assert sorted(reacted) == sorted(landed)
        assert [run["state"] for run in runs] == ["success"] * 3
        assert history["publisherToken"] not in counts
        assert failed["status"] == "failure"
        assert all(event["extra"]["payload"]["outcome"] == "landed" for event in events)
        assert all(event["extra"]["payload"]["run_time"] in event["extra"]["payload"]["run_key"] for event in events)
