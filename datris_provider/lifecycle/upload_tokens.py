"""The publisher tokens of an upload's tries where Airflow keeps no task state (before 3.3).

Datris lets the caller choose an upload's publisher token. Without a record that survives a try, each
try's token is derived from what every automatic retry of the task instance shares: its identity, its
``max_tries`` (which clearing a finished task raises) and its DAG run's start and clear count (so a
re-created or cleared run starts a fresh series). A retry then knows the tokens its earlier tries
sent under.

One case keeps the old series: clearing a task while it runs leaves ``max_tries`` as it was, so the
next try follows the stopped try's upload, unless that upload loaded nothing (the stop kills its jobs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Context

# The namespace of the derived tokens; changing it would hide every earlier try's upload from a retry.
_NAMESPACE = uuid.UUID("5f0d3c8e-2a57-4b1e-9f61-7c2b9d4e8a10")


@dataclass(frozen=True)
class UploadTokens:
    """The derived tokens of one task instance's tries.

    :param series: what every automatic retry of the task instance shares, and a clear changes.
    :param try_number: this try.
    :param first_try: the first try of this series (a clear starts a new one).
    """

    series: str
    try_number: int
    first_try: int

    @classmethod
    def of(cls, context: Context, *, try_number: int, retries: int) -> UploadTokens:
        ti, dag_run = context["ti"], context["dag_run"]
        max_tries = int(getattr(ti, "max_tries", None) or retries)
        series = "/".join(
            str(part)
            for part in (
                ti.dag_id,
                ti.run_id,
                ti.task_id,
                ti.map_index,
                max_tries,
                getattr(dag_run, "start_date", None),
                getattr(dag_run, "clear_number", None),
            )
        )
        # Clearing a finished task sets max_tries to the try it cleared plus retries; try 1 before any clear.
        return cls(series=series, try_number=try_number, first_try=max(1, max_tries - retries + 1))

    def token(self, try_number: int) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{self.series}/{try_number}"))

    @property
    def current(self) -> str:
        """This try's token."""
        return self.token(self.try_number)

    def earlier(self) -> list[str]:
        """The tokens of this series' earlier tries, newest first."""
        return [self.token(number) for number in range(self.try_number - 1, self.first_try - 1, -1)]
