"""The stand-in's background scheduler: it moves jobs, fires cron taps and other clients' timed runs.

One thread, waiting on the stand-in clock for whatever falls due next: a job step (the 5 s
``findJobsToStart`` tick that starts a queued job, its progress events, its end), an
:meth:`~datris_provider.testing.StandInDatris.other_client_run` with ``when="after"``, or the next
fire time of an enabled cron tap (``TapScheduler``: computed from ``lastRunTime``, else
``updatedAt``/``createdAt``, and skipped while the tap is running).
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from datris_provider.testing.cron import next_fire_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from datris_provider.testing.clock import StandInClock
    from datris_provider.testing.model import ScriptRun, StandInTap
    from datris_provider.testing.runs import TapRunner
    from datris_provider.testing.state import StandInState

__all__ = ["Scheduler"]

# The scheduler re-reads the clock at least this often (real seconds), e.g. after a new time scale.
_LONGEST_REAL_WAIT = 0.5


def _parse_datris_time(text: str | None) -> int | None:
    if not text:
        return None
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


class Scheduler:
    """Fires what falls due on the stand-in clock.

    :param state: the server state (its condition is the one the clock notifies).
    :param clock: the stand-in clock.
    :param runner: starts the timed and cron runs.
    :param stopped: True once the server stops.
    """

    def __init__(self, state: StandInState, clock: StandInClock, runner: TapRunner, stopped: Callable[[], bool]):
        self.state = state
        self.clock = clock
        self.runner = runner
        self.stopped = stopped
        self._timed_runs: list[tuple[int, int, str, dict[str, Any]]] = []
        self._sequence = 0
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        """Start the scheduler thread (once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._loop, name="stand-in-datris scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Make the thread look again (after a stop or a change it cannot see)."""
        with self.state.changed:
            self.state.changed.notify_all()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end after the server stopped."""
        if self._thread is not None:
            self._thread.join(timeout)

    def reset(self) -> None:
        """Forget the timed runs (the caller holds the state lock)."""
        self._timed_runs.clear()

    def schedule_run(self, tap_name: str, params: dict[str, Any], after_seconds: float) -> None:
        """Start another client's run of ``tap_name`` ``after_seconds`` stand-in seconds from now."""
        with self.state.changed:
            self._sequence += 1
            due_ms = self.clock.now_ms() + int(after_seconds * 1000)
            self._timed_runs.append((due_ms, self._sequence, tap_name, dict(params)))
            self._timed_runs.sort()
            self.state.changed.notify_all()

    def fire_cron(self, tap_name: str) -> ScriptRun | None:
        """One cron run of the tap, now: no params, no debounce, ``lastRunTrigger: cron``.

        Returns None when the tap is running (the server's scheduler skips it then).
        """
        with self.state.lock:
            tap = self.state.taps[tap_name]
            if tap.last_run_status == "running":
                return None
            return self.runner.start_in_background(tap_name, {}, client="cron")

    # ---------------------------------------------------------------- what is due

    def cron_due_ms(self, tap: StandInTap) -> int | None:
        """When the scheduler fires this tap next (None: it does not)."""
        if not tap.cron or not tap.enabled or tap.last_run_status == "running":
            return None
        basis = (
            _parse_datris_time(tap.last_run_time)
            or _parse_datris_time(tap.updated_at)
            or _parse_datris_time(tap.created_at)
        )
        if basis is None:
            return None
        return next_fire_ms(tap.cron, basis)

    def _fire_due_locked(self, now_ms: int) -> None:
        while self._timed_runs and self._timed_runs[0][0] <= now_ms:
            _, _, tap_name, params = self._timed_runs.pop(0)
            if tap_name in self.state.taps:  # a tap removed meanwhile has nothing to run
                self.runner.start_in_background(tap_name, params, client="other")
        for tap in list(self.state.taps.values()):
            due_ms = self.cron_due_ms(tap)
            if due_ms is not None and due_ms <= now_ms:
                self.runner.start_in_background(tap.name, {}, client="cron")

    def _next_due_locked(self) -> int | None:
        candidates = [self._timed_runs[0][0]] if self._timed_runs else []
        job_due = self.state.next_due_locked()
        if job_due is not None:
            candidates.append(job_due)
        for tap in self.state.taps.values():
            cron_due = self.cron_due_ms(tap)
            if cron_due is not None:
                candidates.append(cron_due)
        return min(candidates, default=None)

    def _loop(self) -> None:
        state = self.state
        with state.changed:
            while not self.stopped():
                state.catch_up_locked()
                self._fire_due_locked(self.clock.now_ms())
                due_ms = self._next_due_locked()
                if due_ms is None:
                    timeout: float | None = None if self.clock.manual else _LONGEST_REAL_WAIT
                else:
                    real = self.clock.real_seconds((due_ms - self.clock.now_ms()) / 1000)
                    timeout = None if real is None else min(real, _LONGEST_REAL_WAIT)
                state.changed.wait(None if timeout is None else max(timeout, 0.001))
