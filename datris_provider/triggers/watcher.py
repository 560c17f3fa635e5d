"""Airflow reacts to Datris: an asset watcher that fires one event per run of a tap whose data landed.

Datris schedules the tap (its own cron); Airflow only watches. Put the trigger in an asset's watchers
and schedule the downstream DAG on that asset::

    Asset(
        datris_tap_runs_uri("orders_nightly"),
        watchers=[AssetWatcher(name="orders_nightly_runs", trigger=DatrisTapRunsTrigger(tap_name="orders_nightly"))],
    )

The rules (which rows are new, which fire, what the cursor keeps) live in
:mod:`datris_provider.core.run_watch`; this module reads Datris, fires the events and keeps the cursor:

- Airflow >= 3.3: in the asset state store, so a triggerer restart resumes where it stopped. The
  cursor is written after the events of a poll have had a poll interval to reach the metadata
  database: a triggerer killed inside that interval fires those runs again rather than miss them.
- Airflow 3.0-3.2: in the triggerer's memory only. Nothing fires twice while the triggerer runs;
  after a restart the watcher starts afresh, so runs that landed while it was down do not fire
  (``catch_up_runs`` can fire the newest few again), and runs still loading at the restart do.

Watchers on one connection with the same poll interval share one read of Datris's run log on
Airflow >= 3.3 (``shared_stream_key``); each still reads the rollups of its own pending runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from datris_provider.client.errors import DatrisError
from datris_provider.core.run_watch import (
    DEFAULT_FIRE_ON,
    LOOKBACK_MARGIN_SECONDS,
    RunCursor,
    RunLogRead,
    RunWatch,
    poll_runs,
    read_run_log,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Iterable

    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.core.run_watch import PollResult

log = logging.getLogger(__name__)

# The key under which the cursor is kept in the watched asset's state store (Airflow >= 3.3).
CURSOR_KEY = "datris_run_cursor"
# A cursor that only moved its horizon is saved at most this often.
HORIZON_SAVE_EVERY_MS = 10 * 60 * 1000
# Used when Datris does not report its script limit (GET /version).
DEFAULT_SCRIPT_LIMIT_SECONDS = 3600.0


async def _client(datris_conn_id: str) -> AsyncDatrisClient:
    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.hooks.datris import DatrisHook

    return AsyncDatrisClient(await DatrisHook.aget_settings(datris_conn_id))


async def _lookback_seconds(client: AsyncDatrisClient, configured: float | None) -> float:
    """How long after its start a run's row can still appear: Datris's script limit plus a margin."""
    if configured is not None:
        return configured
    try:
        limit = float((await client.get_version()).run_script_limit_seconds)
    except DatrisError:
        limit = DEFAULT_SCRIPT_LIMIT_SECONDS
    return limit + LOOKBACK_MARGIN_SECONDS


class DatrisTapRunsTrigger(BaseEventTrigger):
    """Fires one asset event per run of a Datris tap whose data landed (or per chosen outcome).

    The event's payload (the asset event's ``extra["payload"]``) names the run: ``tap``, ``run_time``,
    ``run_key``, ``publisher`` (the publisher token), ``pipeline_jobs`` (its pipeline tokens), ``pipelines``,
    ``record_count``, ``status`` (Datris's final status), ``outcome`` and ``error``.

    :param tap_name: the Datris tap to watch (typically one Datris runs on its own cron).
    :param datris_conn_id: the Airflow connection of type ``datris``.
    :param poll_interval: seconds between reads of Datris's run log.
    :param fire_on: which outcomes fire: ``landed`` (the pipelines ended success or warning; the
        default), ``failed`` (the script failed or a pipeline job ended in error), ``no_records``
        (the run loaded nothing).
    :param catch_up_runs: at the watcher's very first start, also fire for this many of the newest
        runs already decided. 0 (the default) fires none of them.
    :param lookback_seconds: the longest a run's row can take to appear after the run started; by
        default Datris's script limit (``GET /version``) plus 15 minutes.
    """

    def __init__(
        self,
        *,
        tap_name: str,
        datris_conn_id: str = "datris_default",
        poll_interval: float = 60.0,
        fire_on: Iterable[str] = DEFAULT_FIRE_ON,
        catch_up_runs: int = 0,
        lookback_seconds: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        from datris_provider.client.errors import DatrisConfigError

        if not isinstance(poll_interval, (int, float)) or isinstance(poll_interval, bool) or poll_interval <= 0:
            raise DatrisConfigError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}.")
        if isinstance(fire_on, str):
            fire_on = [fire_on]
        self.tap_name = tap_name
        self.datris_conn_id = datris_conn_id
        self.poll_interval = float(poll_interval)
        self.fire_on = sorted(set(fire_on))
        self.catch_up_runs = catch_up_runs
        self.lookback_seconds = lookback_seconds
        # Checks every argument now, so a mistake shows when the DAG file is parsed.
        self._watch(lookback_seconds or 1.0)
        self._saved: RunCursor | None = None
        self._memory_only = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tap_name": self.tap_name,
                "datris_conn_id": self.datris_conn_id,
                "poll_interval": self.poll_interval,
                "fire_on": list(self.fire_on),
                "catch_up_runs": self.catch_up_runs,
                "lookback_seconds": self.lookback_seconds,
            },
        )

    def _watch(self, lookback_seconds: float) -> RunWatch:
        return RunWatch(
            tap_name=self.tap_name,
            fire_on=frozenset(self.fire_on),
            lookback_seconds=lookback_seconds,
            catch_up_runs=self.catch_up_runs,
        )

    # ------------------------------------------------------------------ one poll loop per connection

    def shared_stream_key(self) -> Hashable | None:
        """Airflow >= 3.3: watchers on one connection and poll interval share one read of the run log."""
        return ("datris-run-log", self.datris_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[RunLogRead | None]:
        """Read every tap's recent runs once per poll interval; ``None`` when Datris could not be read."""
        from datris_provider.core.steps import drive_async

        poll_interval = float(kwargs["poll_interval"])
        client = await _client(str(kwargs["datris_conn_id"]))
        try:
            lookback = await _lookback_seconds(client, kwargs.get("lookback_seconds"))
            previous: RunLogRead | None = None
            while True:
                try:
                    previous = await drive_async(read_run_log(lookback, previous), client)
                    yield previous
                except DatrisError as err:
                    log.warning("Reading Datris's run log failed; trying again in %ss: %s", poll_interval, err)
                    yield None
                await asyncio.sleep(poll_interval)
        finally:
            await client.aclose()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Turn each shared read into this tap's events, keeping this watcher's cursor."""
        from datris_provider.core.steps import drive_async

        client = await _client(self.datris_conn_id)
        try:
            watch = self._watch(await _lookback_seconds(client, self.lookback_seconds))
            cursor = await self._load_cursor()
            unsaved: RunCursor | None = None
            async for shared in shared_stream:
                # The previous poll's events have had a poll interval to reach the metadata DB.
                if unsaved is not None:
                    await self._save_cursor(unsaved)
                    unsaved = None
                if shared is None:
                    continue
                try:
                    result = await drive_async(poll_runs(watch, cursor, shared=shared), client)
                except DatrisError as err:
                    self.log.warning(
                        "Watching tap %r: Datris could not be read (%s); trying again.", self.tap_name, err
                    )
                    continue
                self._report(result)
                for run in result.fired:
                    yield TriggerEvent(run.to_event())  # type: ignore[no-untyped-call]
                cursor = result.cursor
                if result.fired:
                    unsaved = cursor
                else:
                    await self._save_cursor(cursor)
        finally:
            await client.aclose()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Airflow < 3.3 (or no shared stream): this watcher's own poll loop, the same rules."""
        async for event in self.filter_shared_stream(type(self).open_shared_stream(self.serialize()[1])):
            yield event

    # ------------------------------------------------------------------ reporting and the cursor

    def _report(self, result: PollResult) -> None:
        for warning in result.warnings:
            self.log.warning(warning)
        fired = {run.key for run in result.fired}
        for run in result.decided:
            if run.key in fired:
                self.log.info(
                    "Datris run %s of tap %r ended %s (%s, %s records): firing.",
                    run.run_time,
                    run.tap_name,
                    run.outcome,
                    run.status,
                    run.record_count,
                )
            else:
                self.log.info(
                    "Datris run %s of tap %r ended %s (%s): not firing (fire_on=%s%s).",
                    run.run_time,
                    run.tap_name,
                    run.outcome,
                    run.status,
                    self.fire_on,
                    "; it was there before the watcher first started" if run.outcome in self.fire_on else "",
                )

    def _store(self) -> Any:
        return None if self._memory_only else getattr(self, "asset_state_store", None)

    async def _load_cursor(self) -> RunCursor | None:
        store = self._store()
        if store is None:
            if not hasattr(self, "asset_state_store"):
                self.log.info("This Airflow has no asset state store (3.3+): the run cursor is kept in memory.")
            return None
        # A triggerer's first state-store call builds Airflow's in-process execution API, which can
        # take tens of seconds; the shared reads queue up meanwhile and are folded in order.
        self.log.info("Reading the run cursor of tap %r from the asset state store.", self.tap_name)
        try:
            cursor = RunCursor.from_json(await store.aget(CURSOR_KEY))
        except ValueError as err:
            # More than one asset shares this exact watcher; the store cannot tell which to use.
            self._memory_only = True
            self.log.warning("The run cursor is kept in memory: %s", err)
            return None
        self._saved = cursor
        if cursor is not None:
            self.log.info(
                "Resuming the watch of tap %r from the saved cursor (%s runs pending).",
                self.tap_name,
                len(cursor.pending),
            )
        return cursor

    async def _save_cursor(self, cursor: RunCursor) -> None:
        store = self._store()
        if store is None:
            return
        saved = self._saved
        if (
            saved is not None
            and cursor.same_runs(saved)
            and cursor.horizon_ms - saved.horizon_ms < HORIZON_SAVE_EVERY_MS
        ):
            return
        try:
            await store.aset(CURSOR_KEY, cursor.to_json())
        except Exception as err:
            # The next poll tries again; the cursor in memory keeps this process exact meanwhile.
            self.log.warning("Saving the run cursor failed (%s: %s); will retry.", type(err).__name__, err)
            return
        self._saved = cursor
