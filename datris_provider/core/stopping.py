"""A stop signal for a run followed in this thread: Airflow's ``on_kill`` ends the wait at once."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from datris_provider.client.errors import DatrisRunStoppedError
from datris_provider.core.steps import drive

if TYPE_CHECKING:
    from datris_provider.core.steps import Steps, T


class StopSignal:
    """Drives steps with a client, sleeping on an event that :meth:`stop` sets from another thread.

    Made when the task runs, never at DAG parse: an ``Event`` cannot be deep-copied, and Airflow
    deep-copies operators.

    :param what: how the stop message names what was awaited.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._event = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def stop(self) -> None:
        self._event.set()

    def drive(self, steps: Steps[T], client: Any) -> T:
        self._raise_if_stopped()
        return drive(steps, client, self.sleep)

    def sleep(self, seconds: float) -> None:
        self._event.wait(seconds)
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        if self._event.is_set():
            raise DatrisRunStoppedError(f"Stopped waiting for {self.what}: the task is being killed.")
