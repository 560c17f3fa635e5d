"""The attempt record: which try of a task owns which Datris run, kept in Airflow's task state.

Airflow 3.3+ keeps a task's state across its tries (and discards it when the task is cleared). The
record says which run the task started and how far it got, so a retry follows only its own earlier
run, an upload is never sent twice, and a stopped try never kills the run a newer try has taken over.
Before 3.3 there is no such state: :attr:`AttemptLedger.available` is false and every method is a
no-op that answers "nothing recorded".
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

log = logging.getLogger(__name__)

TAP_RUN_KEY = "datris_run"
UPLOAD_KEY = "datris_upload"

# What the owning try knows of its run.
POSTING = "posting"  # about to post, or posted and waiting for the answer: the token is not known yet
FOLLOWING = "following"  # the token is known; the pipeline is being followed
JUDGED = "judged"  # the try saw the run to its end; a later run of the task starts anew


class AttemptLedger:
    """Reads and writes one task instance's attempt record under ``key``.

    :param context: the task's Airflow context.
    :param key: the task-state key (one per kind of run: tap run or upload).
    """

    def __init__(self, context: Context, key: str = TAP_RUN_KEY) -> None:
        self._store = context.get("task_state_store")
        self._key = key
        self.try_number = int(getattr(context["ti"], "try_number", None) or 1)
        self._wrote = False

    @property
    def available(self) -> bool:
        return self._store is not None

    def read(self) -> dict[str, Any] | None:
        if self._store is None:
            return None
        try:
            value = self._store.get(self._key)
        except Exception as err:  # a state backend that cannot answer must not fail the run
            log.debug("Could not read the Datris attempt record: %s", err)
            return None
        return value if isinstance(value, dict) else None

    def write(self, state: str, **fields: Any) -> None:
        """Record ``state`` for this try, keeping the fields earlier writes of this try set."""
        if self._store is None:
            return
        current = self.read() or {}
        if current.get("try_number") != self.try_number:
            current = {key: current[key] for key in ("started_at", "known_run_times") if key in current}
        record = {**current, **fields, "state": state, "try_number": self.try_number}
        try:
            self._store.set(self._key, record)
        except Exception as err:
            log.debug("Could not write the Datris attempt record: %s", err)
        else:
            self._wrote = True

    def posting(self, known_run_times: Sequence[str]) -> None:
        self.write(POSTING, known_run_times=list(known_run_times), started_at=time.time(), publisher_token=None)

    def claim(self) -> dict[str, Any] | None:
        """Take over the earlier try's unfinished run for this try; return what the earlier try recorded.

        Written before anything else, so the earlier try, if it is still alive and then told to stop,
        sees that its run now belongs to a newer try and leaves it running.
        """
        previous = self.read()
        if previous is not None and previous.get("try_number") != self.try_number and previous.get("state") != JUDGED:
            kept = {k: v for k, v in previous.items() if k not in ("try_number", "state")}
            self.write(str(previous.get("state")), **kept)
        return previous

    def why_not_kill(self) -> str | None:
        """Why this try must leave its run alone when it is told to stop, or None when it owns the run.

        A try replaced by a newer one can no longer read the record: Airflow answers for its task
        instance only while it is the current try. A record this try wrote that has become unreadable
        is therefore taken to mean that a newer try may follow the run.
        """
        if self._store is None:
            return None
        record = self.read()
        if record is None:
            if self._wrote:
                return (
                    "this try can no longer read its attempt record, so a newer try may be following its Datris "
                    "run; it stops without killing it (kill the run in the Datris UI if no try follows it)"
                )
            return None
        owner = record.get("try_number")
        if isinstance(owner, int) and owner > self.try_number:
            return f"try {owner} of this task has taken over its Datris run; this try stops without killing it"
        return None
