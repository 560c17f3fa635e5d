"""One stand-in per test module, on a manual clock, for the stand-in's own tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from datris_provider.testing import StandInDatris

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def shared_server() -> Iterator[StandInDatris]:
    with StandInDatris(clock="manual") as server:
        yield server
