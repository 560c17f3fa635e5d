"""Datris operators. Importing this module stays cheap: HTTP libraries load when a task runs."""

from __future__ import annotations

from datris_provider.operators.tap import DatrisRunTapOperator
from datris_provider.operators.upload import DatrisUploadFileOperator

__all__ = ["DatrisRunTapOperator", "DatrisUploadFileOperator"]
