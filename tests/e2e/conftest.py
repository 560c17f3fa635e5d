"""Fixtures of the real-Airflow tests: a throw-away PostgreSQL cluster (``postgres_cluster``,
``postgres_url``) and ``airflow_stacks``, which builds :class:`AirflowStack` instances in the module's
temporary directory and stops them at the end of the module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from airflow_stack import AirflowStack
from postgres import postgres_cluster, postgres_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["airflow_stacks", "postgres_cluster", "postgres_url"]


@pytest.fixture(scope="module")
def airflow_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., AirflowStack]]:
    """``airflow_stacks(**kwargs)`` returns a new, not yet started :class:`AirflowStack` (``kwargs``
    as its constructor's, without ``home``); every stack made is stopped at the end of the module."""
    made: list[AirflowStack] = []

    def make(**kwargs: Any) -> AirflowStack:
        stack = AirflowStack(home=tmp_path_factory.mktemp("airflow-e2e-home"), **kwargs)
        made.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(made):
            stack.stop()
