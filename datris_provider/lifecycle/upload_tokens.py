"""The publisher tokens of an upload's tries where Airflow keeps no task state (before 3.3).

Datris lets the caller choose an upload's publisher token. Without a record that survives a try, each
try's token is derived from the task instance, its try number and its ``max_tries``: the tries a
retry follows are then known to it, and a clear, which raises ``max_tries``, starts a fresh series.
"""

from __future__ import annotations

import uuid
from typing import Any

# The namespace of the derived tokens; changing it would hide every earlier try's upload from a retry.
_NAMESPACE = uuid.UUID("5f0d3c8e-2a57-4b1e-9f61-7c2b9d4e8a10")


def derived_token(ti: Any, try_number: int) -> str:
    """The publisher token of try ``try_number`` of this task instance, in its current clear."""
    name = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/{ti.max_tries}/{try_number}"
    return str(uuid.uuid5(_NAMESPACE, name))


def earlier_tokens(ti: Any, retries: int) -> list[str]:
    """The tokens of this clear's earlier tries, newest first.

    A clear sets ``max_tries`` to the try number it cleared plus ``retries``, so this clear's first try
    is ``max_tries - retries + 1`` (try 1 before any clear).
    """
    try_number = int(ti.try_number or 1)
    max_tries = getattr(ti, "max_tries", None)
    first = max(1, int(max_tries) - retries + 1) if isinstance(max_tries, int) else 1
    return [derived_token(ti, number) for number in range(try_number - 1, first - 1, -1)]
