"""The run watcher against the stand-in: one event per landed run, across restarts and Datris hiccups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from datris_provider.client.errors import DatrisConfigError
from datris_provider.testing import StandInDatris, StandInTap
from datris_provider.testing.dag_runner import connection_json
from datris_provider.triggers.watcher import CURSOR_KEY, DatrisTapRunsTrigger

TAP = "orders_nightly"
# Datris schedules the tap, but its cron must not fire by itself during the test (the stand-in runs
# a fast clock): the runs a test makes are then all the runs there are.
YEARLY_CRON = "0 0 6 1 1 ?"
EVENT_WAIT = 20.0

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture(scope="module")
def _server() -> Iterator[StandInDatris]:
    # No debounce: Datris's own scheduler skips it, and these runs stand in for its cron runs.
    server = StandInDatris(debounce_seconds=0).start()
    yield server
    server.stop()


@pytest.fixture
def datris(_server, monkeypatch):
    """The stand-in with one Datris-scheduled tap, and a connection that repeats failed reads quickly."""
    _server.reset_state()
    monkeypatch.setenv("AIRFLOW_CONN_DATRIS_DEFAULT", connection_json(_server.url, extra={"retry_delay": 0.01}))
    _server.add_tap(StandInTap(name=TAP, cron=YEARLY_CRON, target_pipeline="orders", records=42))
    yield _server
    _server.wait_until_idle()


def datris_runs(datris: StandInDatris) -> dict[str, Any]:
    """A run as Datris's scheduler makes it (its run-log row is the same as a cron run's)."""
    answer = httpx.post(f"{datris.api_url}/tap/run", json={"name": TAP, "mode": "run"}, timeout=30)
    answer.raise_for_status()
    return answer.json()


def landed_run(datris: StandInDatris) -> dict[str, Any]:
    """A run whose pipeline has finished loading (followed to its end as any client would)."""
    run = datris_runs(datris)
    deadline = time.monotonic() + EVENT_WAIT
    while not httpx.get(
        f"{datris.api_url}/pipeline/status",
        params={"publishertoken": run["publisherToken"], "withrollup": "true"},
        timeout=30,
    ).json()["rollup"]["allDone"]:
        assert time.monotonic() < deadline, "the stand-in's pipeline never finished"
        time.sleep(0.01)
    return run


class StateStore:
    """The asset state store of Airflow >= 3.3, as the triggerer hands it to a watcher."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.dumps(value)

    def has_seen(self, publisher_token: str) -> bool:
        """True when the saved cursor counts the run as decided (not merely pending)."""
        seen = json.loads(self.values.get(CURSOR_KEY, "{}")).get("seen", {})
        return any(key.endswith(f"|{publisher_token}") for key in seen)


class Watching:
    """One watcher running in its own event loop and thread, as in a triggerer."""

    def __init__(self, trigger: DatrisTapRunsTrigger, store: StateStore | None) -> None:
        trigger.asset_state_store = store
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        async def collect() -> None:
            async for event in self.trigger.run():
                self.events.append(event.payload)

        self._task = self.loop.create_task(collect())
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self._task)

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + EVENT_WAIT
        while not condition():
            assert self._thread.is_alive(), "the watcher stopped"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def wait_for_events(self, count: int) -> list[dict[str, Any]]:
        self.wait_until(lambda: len(self.events) >= count, f"{count} events")
        return self.events

    def settle(self, datris: StandInDatris, reads: int = 3) -> list[dict[str, Any]]:
        """The events after ``reads`` more polls: a run that would fire twice has done so by then."""
        target = len(datris.calls("GET /tap/logs/all")) + reads
        self.wait_until(lambda: len(datris.calls("GET /tap/logs/all")) >= target, f"{reads} more polls")
        return self.events

    def stop(self) -> None:
        """Stop it the way a triggerer shutdown does: the task is cancelled."""
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(EVENT_WAIT)
        self.loop.close()


def watcher(**kwargs: Any) -> DatrisTapRunsTrigger:
    return DatrisTapRunsTrigger(tap_name=TAP, poll_interval=0.05, lookback_seconds=3600, **kwargs)


@pytest.fixture
def store() -> StateStore:
    return StateStore()


@pytest.fixture
def watch(store: StateStore) -> Iterator[Callable[..., Watching]]:
    started: list[Watching] = []

    def start(trigger: DatrisTapRunsTrigger | None = None, *, with_store: bool = True) -> Watching:
        watching = Watching(trigger or watcher(), store if with_store else None)
        started.append(watching)
        if with_store:
            watching.wait_until(lambda: CURSOR_KEY in store.values, "the first read")
        return watching

    yield start
    for watching in started:
        if watching._thread.is_alive():
            watching.stop()


def test_serialised_kwargs_are_plain_json_and_round_trip():
    trigger = watcher(fire_on=["failed", "landed"], catch_up_runs=1)
    classpath, kwargs = trigger.serialize()

    assert json.loads(json.dumps(kwargs)) == kwargs
    module, _, name = classpath.rpartition(".")
    again = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert trigger.shared_stream_key() == ("datris-run-log", "datris_default", 0.05)


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [({"poll_interval": 0}, "poll_interval"), ({"fire_on": ["done"]}, "fire_on"), ({"catch_up_runs": -2}, "catch_up")],
)
def test_wrong_arguments_are_refused_when_the_dag_is_parsed(kwargs, fix):
    with pytest.raises(DatrisConfigError, match=fix):
        DatrisTapRunsTrigger(tap_name=TAP, **kwargs)


def test_each_landed_run_fires_once_with_its_details_and_history_does_not(datris, watch):
    landed_run(datris)  # landed before the watcher starts: history
    watching = watch()
    first, second = datris_runs(datris), datris_runs(datris)
    third = datris_runs(datris)

    events = {e["publisher"]: e for e in watching.wait_for_events(3)}

    # One event per run; runs fire in the order their pipelines finish, which need not be their start order.
    assert len(watching.settle(datris)) == 3
    assert sorted(events) == sorted(r["publisherToken"] for r in (first, second, third))
    assert events[first["publisherToken"]]["pipeline_jobs"] == first["pipelineTokens"]
    events = [events[first["publisherToken"]]]
    assert (events[0]["tap"], events[0]["status"], events[0]["outcome"], events[0]["record_count"]) == (
        TAP,
        "success",
        "landed",
        42,
    )
    assert events[0]["run_time"] in events[0]["run_key"]


def test_a_failed_run_fires_nothing_by_default(datris, watch):
    watching = watch()
    tap = datris.tap(TAP)
    tap.error = "Traceback: KeyError 'page'"
    datris_runs(datris)
    tap.error = None
    tap.pipeline_outcome = "error"
    datris_runs(datris)
    tap.pipeline_outcome = "success"
    good = datris_runs(datris)

    # Events come oldest first: the first one is the good run, so the failed ones fired nothing.
    assert watching.wait_for_events(1)[0]["publisher"] == good["publisherToken"]


def test_failed_runs_fire_when_asked_for(datris, watch):
    watching = watch(watcher(fire_on=["failed"]))
    datris.tap(TAP).error = "Traceback: KeyError 'page'"
    datris_runs(datris)

    event = watching.wait_for_events(1)[0]
    assert (event["outcome"], event["status"], event["error"]) == ("failed", "failure", "Traceback: KeyError 'page'")


def test_a_restarted_watcher_fires_the_run_it_missed_and_nothing_twice(datris, watch, store):
    watching = watch()
    first = datris_runs(datris)
    assert watching.wait_for_events(1)[0]["publisher"] == first["publisherToken"]
    watching.wait_until(lambda: store.has_seen(first["publisherToken"]), "the cursor naming the fired run")
    watching.stop()

    second = datris_runs(datris)  # lands while the triggerer is down
    restarted = watch()
    third = datris_runs(datris)

    restarted.wait_for_events(2)
    tokens = [e["publisher"] for e in restarted.settle(datris)]
    assert sorted(tokens) == sorted([second["publisherToken"], third["publisherToken"]])


def test_datris_errors_and_a_datris_restart_are_ridden_out(datris, watch):
    watching = watch()
    # More failures in a row than the client repeats one read: the watcher itself tries again later.
    datris.fail("GET /tap/logs/all", 503, times=9)
    datris.fail("GET /pipeline/status", 502, times=5)
    run = datris_runs(datris)
    # Datris restarting: connections cut, then its stored run log answers again.
    datris.reset("GET /tap/logs/all", times=6)
    datris.reset("GET /pipeline/status", times=6)
    later = datris_runs(datris)

    events = watching.wait_for_events(2)
    assert sorted(e["publisher"] for e in watching.settle(datris)) == sorted(
        [run["publisherToken"], later["publisherToken"]]
    )
    assert len(events) == 2


def test_without_a_state_store_the_watcher_still_fires_each_run_once(datris, watch):
    watching = watch(with_store=False)
    watching.wait_until(lambda: bool(datris.calls("GET /tap/logs/all")), "the first read")
    runs = [datris_runs(datris), datris_runs(datris)]

    assert sorted(e["publisher"] for e in watching.wait_for_events(2)) == sorted(r["publisherToken"] for r in runs)


def test_the_tap_runs_asset_carries_the_watcher_and_is_not_a_pipeline_asset():
    from urllib.parse import urlsplit

    from datris_provider.assets import datris_tap_runs_asset, pipeline_of, sanitize_uri

    asset = datris_tap_runs_asset(TAP, instance="eu", poll_interval=30, fire_on=["landed", "no_records"])

    assert asset.uri == f"datris://eu/taps/{TAP}/runs"
    assert sanitize_uri(urlsplit(asset.uri)) == urlsplit(asset.uri)
    assert pipeline_of(asset.uri) is None  # a tap task's outlets rules leave it alone
    (watcher_,) = asset.watchers
    assert watcher_.name == f"datris_{TAP}_runs"
    assert watcher_.trigger.serialize()[1]["fire_on"] == ["landed", "no_records"]
    with pytest.raises(ValueError, match="taps/<tap>/runs"):
        sanitize_uri(urlsplit("datris://eu/taps/x"))


@pytest.mark.dag
def test_the_example_dag_is_scheduled_on_the_tap_runs_asset_and_runs(datris_dag_runner):
    dag = datris_dag_runner.get_dag("datris_orders_reaction")
    (asset,) = dag.timetable.asset_condition.objects
    (watcher_,) = asset.watchers

    assert asset.uri == "datris://default/taps/orders_nightly/runs"
    assert watcher_.trigger.serialize()[1]["tap_name"] == "orders_nightly"
    # Run by hand (no asset event), the report has nothing to say.
    outcome = datris_dag_runner.run("datris_orders_reaction")
    assert outcome.state == "success"
    assert outcome.xcom("build_report") == []


def test_watchers_on_one_connection_share_each_read_of_the_run_log(datris, monkeypatch):
    shared_stream = pytest.importorskip("airflow.triggers.shared_stream", reason="shared streams need Airflow 3.3")
    other = "customers_nightly"
    datris.add_tap(StandInTap(name=other, cron=YEARLY_CRON, target_pipeline="customers", records=7))
    shared_reads = []
    opened = DatrisTapRunsTrigger.open_shared_stream.__func__  # type: ignore[attr-defined]

    async def counted(cls, kwargs):
        async for read in opened(cls, kwargs):
            shared_reads.append(read)
            yield read

    monkeypatch.setattr(DatrisTapRunsTrigger, "open_shared_stream", classmethod(counted))
    orders, customers = watcher(), DatrisTapRunsTrigger(tap_name=other, poll_interval=0.05, lookback_seconds=3600)
    assert orders.shared_stream_key() == customers.shared_stream_key()

    async def watch_both() -> dict[str, list[dict[str, Any]]]:
        manager = shared_stream.SharedStreamManager()
        events: dict[str, list[dict[str, Any]]] = {TAP: [], other: []}

        async def collect(trigger_id: int, trigger: DatrisTapRunsTrigger) -> None:
            stream = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=trigger.shared_stream_key())
            async for event in trigger.filter_shared_stream(stream):
                events[event.payload["tap"]].append(event.payload)

        tasks = [asyncio.create_task(collect(1, orders)), asyncio.create_task(collect(2, customers))]
        while len(shared_reads) < 2:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(datris_runs, datris)
        answer = await asyncio.to_thread(
            httpx.post, f"{datris.api_url}/tap/run", json={"name": other, "mode": "run"}, timeout=30
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + EVENT_WAIT
        while not (events[TAP] and events[other]):
            assert time.monotonic() < deadline, "timed out waiting for both watchers' events"
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await manager.stop_all()
        return events

    events = asyncio.run(watch_both())

    assert [len(events[TAP]), len(events[other])] == [1, 1]
    # Every read of the run log was the shared one: neither watcher read it on its own.
    assert len(datris.calls("GET /tap/logs/all")) <= len(shared_reads) + 1
