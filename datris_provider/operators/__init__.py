"""Datris operators. Importing this module stays cheap: HTTP libraries load when a task runs."""

from __future__ import annotations

from datris_provider.operators.tap import DatrisRunTapOperator

__all__ = ["DatrisRunTapOperator"]
