"""Datris TaskFlow decorators; ``datris_tap_task`` is also registered as ``@task.datris_tap``."""

from __future__ import annotations

from datris_provider.decorators.datris_tap import datris_tap_task

__all__ = ["datris_tap_task"]
