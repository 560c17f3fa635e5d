"""The stand-in's clock: every server-side time (scripts, debounce, scheduler ticks, jobs, cron) runs on it.

Two modes:

* scaled (the default): stand-in time runs ``time_scale`` times as fast as real time, so a 5 s
  scheduler tick at ``time_scale=50`` takes 0.1 s;
* manual: time stands still and moves only through :meth:`StandInClock.advance`, for tests that need
  exact control.

:meth:`StandInClock.advance` also jumps a scaled clock forward. Everything that waits on the clock
waits on one condition, which every change of the clock (and of the server's state) notifies.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CLOCK_MODES", "StandInClock"]

CLOCK_MODES = ("scaled", "manual")

# A scaled wait re-reads the clock at least this often (real seconds), so a changed scale is seen.
_LONGEST_REAL_WAIT = 0.5


def _never() -> bool:
    return False


class StandInClock:
    """Stand-in time, in epoch seconds.

    :param time_scale: stand-in seconds per real second (ignored while the clock is manual).
    :param manual: start in manual mode.
    :param condition: the condition waiters wait on (the server shares its state's condition).
    :param start: the stand-in time to start at (default: now, whole seconds in manual mode).
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        *,
        manual: bool = False,
        condition: threading.Condition | None = None,
        start: float | None = None,
    ) -> None:
        _check_scale(time_scale)
        self.condition = condition if condition is not None else threading.Condition(threading.RLock())
        if start is None:
            start = float(math.floor(time.time())) if manual else time.time()
        self._base = start
        self._real_start = time.monotonic()
        self._scale = float(time_scale)
        self._manual = manual
        self.origin = start

    # ---------------------------------------------------------------- reading

    @property
    def time_scale(self) -> float:
        """Stand-in seconds per real second while the clock is scaled."""
        return self._scale

    @property
    def manual(self) -> bool:
        """True while time moves only through :meth:`advance`."""
        return self._manual

    @property
    def mode(self) -> str:
        """``manual`` or ``scaled``."""
        return "manual" if self._manual else "scaled"

    def now(self) -> float:
        """The stand-in time in epoch seconds."""
        if self._manual:
            return self._base
        return self._base + (time.monotonic() - self._real_start) * self._scale

    def now_ms(self) -> int:
        """The stand-in time in epoch milliseconds (as events are stamped)."""
        return int(self.now() * 1000)

    def real_seconds(self, stand_in_seconds: float) -> float | None:
        """How long ``stand_in_seconds`` take in real time; None while the clock is manual."""
        if self._manual:
            return None
        return max(0.0, stand_in_seconds) / self._scale

    # ---------------------------------------------------------------- moving

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (either mode) and return the new time.

        Everything due by then happens, in order, at its own stand-in time.
        """
        if seconds < 0 or math.isnan(seconds):
            raise ValueError(f"the clock only moves forward; advance({seconds!r}) is not allowed")
        with self.condition:
            self._base += seconds
            self.condition.notify_all()
            return self.now()

    def pause(self) -> None:
        """Switch to manual mode: time stands still until :meth:`advance` or :meth:`resume`."""
        with self.condition:
            self._base = self.now()
            self._manual = True
            self.condition.notify_all()

    def resume(self, time_scale: float | None = None) -> None:
        """Switch to scaled mode from the current time (optionally with a new ``time_scale``)."""
        if time_scale is not None:
            _check_scale(time_scale)
        with self.condition:
            self._base = self.now()
            self._real_start = time.monotonic()
            if time_scale is not None:
                self._scale = float(time_scale)
            self._manual = False
            self.condition.notify_all()

    def set_mode(self, mode: str, time_scale: float | None = None) -> None:
        """``manual`` (as :meth:`pause`) or ``scaled`` (as :meth:`resume`)."""
        if mode not in CLOCK_MODES:
            raise ValueError(f"clock must be one of {CLOCK_MODES}, not {mode!r}")
        if mode == "manual":
            self.pause()
        else:
            self.resume(time_scale)

    # ---------------------------------------------------------------- waiting

    def wait_until(self, target: float, stop: Callable[[], bool] = _never) -> bool:
        """Block until the clock reads ``target`` (True) or ``stop()`` holds (False)."""
        with self.condition:
            while True:
                if stop():
                    return False
                remaining = target - self.now()
                if remaining <= 0:
                    return True
                real = self.real_seconds(remaining)
                self.condition.wait(None if real is None else min(real, _LONGEST_REAL_WAIT))

    def sleep(self, seconds: float, stop: Callable[[], bool] = _never) -> bool:
        """Block for ``seconds`` of stand-in time; False when ``stop()`` ended the wait early."""
        if seconds <= 0:
            return not stop()
        return self.wait_until(self.now() + seconds, stop)


def _check_scale(time_scale: float) -> None:
    if not time_scale > 0 or math.isinf(time_scale):
        raise ValueError(
            f"time_scale must be a positive number of stand-in seconds per real second, not {time_scale!r}"
        )
