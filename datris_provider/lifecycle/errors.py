"""How Datris errors reach Airflow: what a retry cannot fix fails the task for good."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from datris_provider._compat import AirflowFailException
from datris_provider.client.errors import DatrisError

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def airflow_errors() -> Iterator[None]:
    """Let retryable Datris errors retry; fail for good on the ones a retry cannot fix."""
    try:
        yield
    except DatrisError as err:
        if not err.retryable:
            raise AirflowFailException(str(err)) from None
        raise
