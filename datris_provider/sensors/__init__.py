"""Datris sensors."""

from __future__ import annotations

from datris_provider.sensors.pipeline import DatrisPipelineSensor

__all__ = ["DatrisPipelineSensor"]
