"""What a task does when its tap is busy with a run it did not start.

Datris cannot say who started a run or with which params (no owner, no params in ``GET /tap`` or
``GET /tap/logs``), and its debounce answers a second ``POST /tap/run`` within 5 s of an accepted
one with ``debounced`` and no token. So a busy tap is someone else's run, and the provider itself
decides what to do about it:

``wait``
    wait until the tap is idle (and out of the debounce window), then post this task's own run.
    The default when the task has ``tap_params``: a backfill window must never be reported as loaded
    by another window's run.
``join``
    follow the run in flight as if it were this task's (the default without ``tap_params``, where
    any run of the tap loads the same thing).
``fail``
    fail at once, with an error a retry can act on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from datris_provider.client.errors import DatrisConfigError, DatrisTapBusyError, DatrisTransientError
from datris_provider.core.steps import Call, Sleep, Steps

if TYPE_CHECKING:
    from collections.abc import Mapping

    from datris_provider.client.models import TapConfig
    from datris_provider.core.tap_run import RunListener

WAIT = "wait"
JOIN = "join"
FAIL = "fail"
BUSY_ACTIONS = (WAIT, JOIN, FAIL)

# Why the tap is busy, as the task log names it.
RUN_IN_FLIGHT = "a run of the tap is in flight on Datris (lastRunStatus: running)"
DEBOUNCED = "Datris debounced this task's run call: another run of the tap started less than 5 s before it"

# "Tap 'x' was triggered 1200 ms ago; ignoring this duplicate request (debounce window: 5000 ms)."
DEBOUNCE_TEXT = re.compile(r"triggered (\d+) ms ago.*debounce window: (\d+) ms", re.DOTALL)

# The run in flight can last the whole script limit; staging and the debounce window come after it.
BUSY_WAIT_MARGIN_SECONDS = 300.0
# A waiting task says what it waits for at least this often.
BUSY_REPORT_EVERY_SECONDS = 60.0


def resolve_if_busy(if_busy: str | None, params: Mapping[str, Any] | None, *, owner: str) -> str:
    """The action for a busy tap: the user's choice, else ``wait`` with params and ``join`` without."""
    if if_busy is None:
        return WAIT if params else JOIN
    if if_busy not in BUSY_ACTIONS:
        raise DatrisConfigError(
            f"{owner}: if_busy must be one of {', '.join(repr(a) for a in BUSY_ACTIONS)}, not {if_busy!r}."
        )
    return if_busy


def debounce_left_seconds(error: str | None) -> float:
    """Seconds left of the debounce window a ``debounced`` answer reports (0 when it does not say)."""
    found = DEBOUNCE_TEXT.search(error or "")
    if found is None:
        return 0.0
    ago_ms, window_ms = (int(group) for group in found.groups())
    return max(0.0, (window_ms - ago_ms) / 1000.0)


def busy_error(tap_name: str, reason: str, *, action: str, waited: float | None = None) -> DatrisTapBusyError:
    if waited is None:
        return DatrisTapBusyError(
            f"Tap '{tap_name}' is busy: {reason}. The task has if_busy='{action}', so it did not start its own "
            "run. Retry once the other run has ended, or set if_busy='wait' to wait for it."
        )
    return DatrisTapBusyError(
        f"Tap '{tap_name}' stayed busy for {waited:.3g} s, the task's busy_timeout: {reason}. This task's own "
        "run was never started, so nothing was loaded for it; a retry waits again. Raise busy_timeout if "
        "runs of this tap take longer."
    )


def wait_until_idle(
    tap_name: str,
    reason: str,
    listener: RunListener,
    *,
    poll_interval: float,
    bound: float,
    waited_before: float = 0.0,
    first_sleep: float = 0.0,
) -> Steps[tuple[TapConfig, float]]:
    """Poll ``GET /tap`` until no run is in flight; return the idle tap and the seconds waited in all.

    The wait is counted in the poll sleeps it makes (plus ``waited_before``), so it is the same in the
    worker and in the triggerer, and it ends with :class:`DatrisTapBusyError` past ``bound``.
    """
    waited = waited_before
    listener.warning(
        f"Tap '{tap_name}' is busy: {reason}. Waiting for it to be idle before starting this task's own run "
        f"(up to {bound:g} s; if_busy='wait')."
    )
    last_report = waited
    # After a debounce the tap may already be idle, yet still inside the window: sleep past it first.
    first = reason == DEBOUNCED
    if first and first_sleep > poll_interval:
        yield Sleep(first_sleep)
        waited += first_sleep
        first = False
    while True:
        if not first:
            try:
                tap: TapConfig = yield Call("get_tap", (tap_name,))
            except DatrisTransientError as err:
                listener.warning(f"Reading tap '{tap_name}' failed while waiting for it to be idle: {err}")
            else:
                if not tap.is_running:
                    listener.info(f"Tap '{tap_name}' is idle after {waited:.0f} s; starting this task's own run.")
                    return tap, waited
        first = False
        if waited >= bound:
            raise busy_error(tap_name, reason, action=WAIT, waited=waited)
        if waited - last_report >= BUSY_REPORT_EVERY_SECONDS:
            listener.warning(
                f"Still waiting for tap '{tap_name}' to be idle: {waited:.0f} s of {bound:g} s ({reason})."
            )
            last_report = waited
        yield Sleep(poll_interval)
        waited += poll_interval
