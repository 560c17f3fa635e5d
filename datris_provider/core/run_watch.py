"""Which runs of a Datris-scheduled tap have landed since the watcher last looked, each reported once.

Datris writes a run-log row when a run's script ends, stamped with the time the run *started*; the
pipeline jobs load the data afterwards. So a row can appear after newer ones, and a row seen while its
pipeline is still processing is not yet a landed run: it is kept as *pending* and checked again by its
publisher token until every job is terminal. Nothing here fires twice because a run's key (the
server's own ``<tap>|<runTime>`` row key, plus the publisher token) stays in the cursor until the run
is old enough that no later answer can show it again.

Reading the rows: ``GET /tap/logs/all?since=`` (flat rows of every tap since a time, no rollup) is the
read this module plans for. ``GET /tap/logs?name=`` is costlier (50 rows, each with its ``logs`` text
and a rollup the server computes per row) and unsafe (a run that ends late sorts by its start time and
can land below the 50th row, never to be seen). The rollup of a pending run comes from
``GET /pipeline/status?publishertoken=…&withrollup=true``, asked only while the run is pending.

Settled history: a row is written at most ``lookback`` after its run started (the server's script
limit plus staging and clock skew). After a successful read at ``now``, every row that started before
``now - lookback`` has been seen, so the cursor drops those keys and ignores such rows from then on:
the cursor stays small however long the watcher runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from datris_provider.client.errors import DatrisConfigError, DatrisError, DatrisProtocolError
from datris_provider.core.steps import Call, Steps

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from datris_provider.client.models import Rollup, RunLogEntry

# What a finished run amounts to.
LANDED = "landed"  # the pipelines ended success or warning: the data is there
FAILED = "failed"  # the script failed, or a pipeline job ended in error
NO_RECORDS = "no_records"  # the run loaded nothing (no records, no target pipeline, all documents known)
OUTCOMES = frozenset({LANDED, FAILED, NO_RECORDS})
DEFAULT_FIRE_ON = frozenset({LANDED})

# Added to the server's script limit: staging after the script, and clocks that disagree.
LOOKBACK_MARGIN_SECONDS = 900.0
# The most rows GET /tap/logs/all returns; an answer this long may have cut the oldest rows.
ALL_LOGS_LIMIT = 5000
CURSOR_VERSION = 1


def run_start_ms(run_time: str) -> int:
    """Epoch milliseconds of a run-log ``runTime`` (``yyyy-MM-dd HH:mm:ss z``, UTC by default)."""
    stamp, _, zone = run_time.strip().rpartition(" ")
    try:
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(zone or "UTC"))
    except (ValueError, ZoneInfoNotFoundError):
        raise DatrisProtocolError(
            f"A run-log runTime {run_time!r} is not 'yyyy-MM-dd HH:mm:ss <zone>'; runs cannot be ordered."
        ) from None
    return int(moment.timestamp() * 1000)


def run_key(row: RunLogEntry) -> str:
    """The server's row key, plus the token: a later run that overwrote a row in the same second is new."""
    return f"{row.tap_name}|{row.run_time}|{row.publisher_token or ''}"


@dataclass(frozen=True)
class LandedRun:
    """A run whose outcome is decided, as an asset event reports it.

    :param outcome: ``landed``, ``failed`` or ``no_records``.
    :param status: Datris's final word: the pipelines' rollup status (``success``, ``warning``,
        ``error``) or, without pipelines, the run-log status (``failure``, ``no_records``, ``success``).
    """

    key: str
    tap_name: str
    run_time: str
    started_ms: int
    publisher_token: str | None
    pipeline_tokens: tuple[str, ...]
    pipelines: tuple[str, ...]
    record_count: int
    status: str
    outcome: str
    error: str | None = None

    def to_event(self) -> dict[str, Any]:
        """The asset event's payload (plain JSON).

        ``publisher`` is the run's publisher token and ``pipeline_jobs`` its pipeline tokens: key names
        with "token" in them would be blanked out by Airflow's secret masker wherever the event is shown.
        """
        return {
            "tap": self.tap_name,
            "run_time": self.run_time,
            "run_key": self.key,
            "publisher": self.publisher_token,
            "pipeline_jobs": list(self.pipeline_tokens),
            "pipelines": list(self.pipelines),
            "record_count": self.record_count,
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(frozen=True)
class PendingRun:
    """A run whose row is written but whose pipelines are still loading."""

    tap_name: str
    run_time: str
    started_ms: int
    publisher_token: str
    record_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "tap": self.tap_name,
            "run_time": self.run_time,
            "started_ms": self.started_ms,
            "publisher": self.publisher_token,
            "record_count": self.record_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PendingRun:
        return cls(
            tap_name=str(data["tap"]),
            run_time=str(data["run_time"]),
            started_ms=int(data["started_ms"]),
            publisher_token=str(data["publisher"]),
            record_count=int(data["record_count"]),
        )


@dataclass(frozen=True)
class RunCursor:
    """What the watcher keeps between polls and across restarts (plain JSON).

    :param horizon_ms: runs that started before this are settled history and are ignored.
    :param seen: keys of decided runs that started at or after the horizon, with their start time.
    :param pending: runs seen whose pipelines were still loading, by key.
    """

    horizon_ms: int
    seen: dict[str, int] = field(default_factory=dict)
    pending: dict[str, PendingRun] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CURSOR_VERSION,
            "horizon_ms": self.horizon_ms,
            "seen": dict(self.seen),
            "pending": {key: run.to_json() for key, run in self.pending.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> RunCursor | None:
        """The cursor saved earlier, or ``None`` when nothing (or something unreadable) was saved."""
        if not isinstance(data, dict) or data.get("version") != CURSOR_VERSION:
            return None
        try:
            return cls(
                horizon_ms=int(data["horizon_ms"]),
                seen={str(key): int(ms) for key, ms in dict(data.get("seen", {})).items()},
                pending={str(key): PendingRun.from_json(run) for key, run in dict(data.get("pending", {})).items()},
            )
        except (KeyError, TypeError, ValueError):
            return None

    def same_runs(self, other: RunCursor | None) -> bool:
        """True when ``other`` knows the same runs (the horizon may differ)."""
        return other is not None and other.seen == self.seen and other.pending.keys() == self.pending.keys()


@dataclass(frozen=True)
class PollResult:
    """One poll: the cursor to keep, and the runs to report, oldest first."""

    cursor: RunCursor
    fired: tuple[LandedRun, ...]
    decided: tuple[LandedRun, ...]  # every run decided in this poll, fired or not
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunWatch:
    """The rules of one watcher: which tap, which outcomes fire, how far back rows can appear.

    :param tap_name: the Datris tap whose runs are watched.
    :param fire_on: the outcomes that fire an event; by default only ``landed``.
    :param lookback_seconds: the longest a run's row can take to appear after the run started.
    :param catch_up_runs: at the very first start, also fire for this many of the newest runs already
        decided (those that match ``fire_on``); 0 fires none of the history.
    """

    tap_name: str
    fire_on: frozenset[str] = DEFAULT_FIRE_ON
    lookback_seconds: float = 3600.0 + LOOKBACK_MARGIN_SECONDS
    catch_up_runs: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.tap_name, str) or not self.tap_name.strip():
            raise DatrisConfigError("The Datris run watcher needs the name of the tap to watch (tap_name).")
        unknown = set(self.fire_on) - OUTCOMES
        if unknown or not self.fire_on:
            raise DatrisConfigError(
                f"fire_on={sorted(self.fire_on)!r} is not a non-empty choice of {sorted(OUTCOMES)}; "
                f"for example fire_on=['landed', 'failed']."
            )
        if self.lookback_seconds <= 0:
            raise DatrisConfigError(f"lookback_seconds must be positive, got {self.lookback_seconds!r}.")
        if self.catch_up_runs < 0:
            raise DatrisConfigError(f"catch_up_runs must be 0 or more, got {self.catch_up_runs!r}.")

    @property
    def lookback_ms(self) -> int:
        return int(self.lookback_seconds * 1000)

    def since_ms(self, cursor: RunCursor | None, now_ms: int) -> int | None:
        """The ``since`` to ask ``/tap/logs/all`` for; ``None`` (the server's 30 days) for a catch-up."""
        if cursor is not None:
            return cursor.horizon_ms
        if self.catch_up_runs:
            return None
        return now_ms - self.lookback_ms

    def new_tokens(self, cursor: RunCursor | None, rows: Iterable[RunLogEntry]) -> list[str]:
        """Publisher tokens whose rollup the next :meth:`observe` needs, pending runs first."""
        tokens = [run.publisher_token for run in cursor.pending.values()] if cursor else []
        for row in self._rows_to_consider(cursor, rows):
            if row.publisher_token and row.rollup is None and row.publisher_token not in tokens:
                tokens.append(row.publisher_token)
        return tokens

    def observe(
        self,
        cursor: RunCursor | None,
        rows: Sequence[RunLogEntry],
        rollups: Mapping[str, Rollup],
        now_ms: int,
    ) -> PollResult:
        """Fold one successful read of the run log into the cursor.

        :param cursor: the cursor so far; ``None`` at the very first start.
        :param rows: the rows just read (any order, any taps; only this tap's ``mode=run`` rows count).
        :param rollups: rollups by publisher token, for the tokens :meth:`new_tokens` named. A token
            missing here (its read failed) keeps its run pending.
        :param now_ms: the time of the read (epoch milliseconds).
        """
        first_start = cursor is None
        current = cursor or RunCursor(horizon_ms=now_ms - self.lookback_ms)
        seen = dict(current.seen)
        pending = dict(current.pending)
        decided: list[LandedRun] = []

        for key, run in list(pending.items()):
            rollup = rollups.get(run.publisher_token)
            if rollup is not None and _finished(rollup):
                del pending[key]
                seen[key] = run.started_ms
                decided.append(_decide_pending(key, run, rollup))
            elif rollup is not None and not rollup.jobs and now_ms - run.started_ms > self.lookback_ms:
                # Datris answers "processing, no jobs" forever for a token it has no job for; a job it
                # knows ends by itself (timed_out after 8 h at the latest).
                del pending[key]
                seen[key] = run.started_ms
                decided.append(_no_jobs(key, run))

        history: list[LandedRun] = []
        # Oldest first; Datris lists the newest first, and same-second rows newest-written first.
        for row in reversed(self._rows_to_consider(current if not first_start else None, rows)):
            key = run_key(row)
            if key in seen or key in pending:
                continue
            started = run_start_ms(row.run_time)
            rollup = row.rollup if row.rollup is not None else rollups.get(row.publisher_token or "")
            if row.publisher_token and row.status != "failure" and (rollup is None or not _finished(rollup)):
                # Still loading, even at the first start: its data lands after the watcher looked.
                pending[key] = PendingRun(row.tap_name, row.run_time, started, row.publisher_token, row.record_count)
                continue
            seen[key] = started
            (history if first_start else decided).append(_decide_row(key, row, started, rollup))

        fired = [run for run in decided if run.outcome in self.fire_on]
        if first_start and self.catch_up_runs:
            matching = sorted((run for run in history if run.outcome in self.fire_on), key=_order)
            fired.extend(matching[-self.catch_up_runs :])

        horizon = max(current.horizon_ms, now_ms - self.lookback_ms)
        kept_seen = {key: ms for key, ms in seen.items() if ms >= horizon}
        warnings = []
        if len(rows) >= ALL_LOGS_LIMIT:
            warnings.append(
                f"Datris returned {len(rows)} run-log rows, its most per answer: older rows may have been cut. "
                "Lower poll_interval so each read covers fewer runs."
            )
        return PollResult(
            cursor=RunCursor(horizon_ms=horizon, seen=kept_seen, pending=pending),
            fired=tuple(sorted(fired, key=_order)),
            decided=tuple(sorted([*decided, *history], key=_order)),
            warnings=tuple(warnings),
        )

    def _rows_to_consider(self, cursor: RunCursor | None, rows: Iterable[RunLogEntry]) -> list[RunLogEntry]:
        chosen = []
        for row in rows:
            if row.tap_name != self.tap_name or row.mode != "run":
                continue
            if cursor is not None and run_start_ms(row.run_time) < cursor.horizon_ms:
                continue
            chosen.append(row)
        return chosen


def _finished(rollup: Rollup) -> bool:
    return rollup.all_done and bool(rollup.jobs) and all(job.finished for job in rollup.jobs)


def _order(run: LandedRun) -> int:
    # Sorting is stable: runs started in the same second keep the order Datris wrote them in.
    return run.started_ms


def _decide_pending(key: str, run: PendingRun, rollup: Rollup) -> LandedRun:
    return LandedRun(
        key=key,
        tap_name=run.tap_name,
        run_time=run.run_time,
        started_ms=run.started_ms,
        publisher_token=run.publisher_token,
        pipeline_tokens=tuple(job.pipeline_token for job in rollup.jobs),
        pipelines=_pipelines(rollup),
        record_count=run.record_count,
        status=rollup.status,
        outcome=LANDED if rollup.status in ("success", "warning") else FAILED,
        error=_first_error(rollup),
    )


def _no_jobs(key: str, run: PendingRun) -> LandedRun:
    return LandedRun(
        key=key,
        tap_name=run.tap_name,
        run_time=run.run_time,
        started_ms=run.started_ms,
        publisher_token=run.publisher_token,
        pipeline_tokens=(),
        pipelines=(),
        record_count=run.record_count,
        status="error",
        outcome=FAILED,
        error="Datris reports no pipeline job for this run's publisher token.",
    )


def _decide_row(key: str, row: RunLogEntry, started: int, rollup: Rollup | None) -> LandedRun:
    if row.status == "failure":
        outcome, status = FAILED, "failure"
    elif rollup is not None:
        outcome = LANDED if rollup.status in ("success", "warning") else FAILED
        status = rollup.status
    else:
        outcome, status = NO_RECORDS, row.status
    return LandedRun(
        key=key,
        tap_name=row.tap_name,
        run_time=row.run_time,
        started_ms=started,
        publisher_token=row.publisher_token,
        pipeline_tokens=tuple(job.pipeline_token for job in rollup.jobs) if rollup else (),
        pipelines=_pipelines(rollup) if rollup else (),
        record_count=row.record_count,
        status=status,
        outcome=outcome,
        error=row.error or (_first_error(rollup) if rollup else None),
    )


def _pipelines(rollup: Rollup) -> tuple[str, ...]:
    return tuple(sorted({job.pipeline for job in rollup.jobs if job.pipeline}))


def _first_error(rollup: Rollup) -> str | None:
    for job in rollup.jobs:
        if job.last_error is not None:
            return f"{job.last_error.process_name}: {job.last_error.description}"
    return None


@dataclass(frozen=True)
class RunLogRead:
    """One read of ``GET /tap/logs/all``, which every watcher on the same connection can use.

    :param since_ms: the ``since`` the read asked for.
    :param read_at_ms: when it was made (epoch milliseconds).
    """

    rows: tuple[RunLogEntry, ...]
    since_ms: int
    read_at_ms: int

    def covers(self, since_ms: int | None) -> bool:
        """True when this read reaches back at least to ``since_ms``."""
        return since_ms is not None and self.since_ms <= since_ms


def read_run_log(
    lookback_seconds: float, previous: RunLogRead | None = None, clock: Callable[[], float] = time.time
) -> Steps[RunLogRead]:
    """One shared read of every tap's recent runs, for the watchers on one connection.

    It reaches back as far as a watcher that made the ``previous`` read needs (its horizon), so every
    watcher keeping up with the shared reads can use them without a read of its own.
    """
    now_ms = int(clock() * 1000)
    since_ms = (previous.read_at_ms if previous is not None else now_ms) - int(lookback_seconds * 1000)
    rows: list[RunLogEntry] = yield Call("get_all_tap_logs", kwargs={"since_ms": since_ms, "limit": ALL_LOGS_LIMIT})
    return RunLogRead(tuple(rows), since_ms, now_ms)


def poll_runs(
    watch: RunWatch,
    cursor: RunCursor | None,
    *,
    shared: RunLogRead | None = None,
    clock: Callable[[], float] = time.time,
) -> Steps[PollResult]:
    """One poll as client calls: the run log since the horizon, then only the rollups still needed.

    :param shared: a read another watcher on the connection made; used when it reaches back far
        enough, otherwise (first start with catch-up, a restart after a long pause) the log is read
        again from this watcher's own horizon.

    A failed read of the run log raises (the cursor is unchanged, the caller tries again later); a
    failed read of one rollup only keeps that run pending.
    """
    now_ms = shared.read_at_ms if shared is not None else int(clock() * 1000)
    since_ms = watch.since_ms(cursor, now_ms)
    rows: Sequence[RunLogEntry]
    if shared is not None and shared.covers(since_ms):
        rows = shared.rows
    else:
        rows = yield Call("get_all_tap_logs", kwargs={"since_ms": since_ms, "limit": ALL_LOGS_LIMIT})
    rollups: dict[str, Rollup] = {}
    for token in watch.new_tokens(cursor, rows):
        try:
            status = yield Call("get_pipeline_status", (token,))
        except DatrisError:
            continue
        rollups[token] = status.rollup
    return watch.observe(cursor, rows, rollups, now_ms)
