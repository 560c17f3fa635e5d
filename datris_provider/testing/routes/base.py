"""What every route handler gets: the server's parts, and the request reduced to data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datris_provider.testing.wire import Reply, spring_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from datris_provider.testing.auth import Caller, KeyRing
    from datris_provider.testing.model import Settings
    from datris_provider.testing.runs import TapRunner
    from datris_provider.testing.serving import Call
    from datris_provider.testing.state import StandInState

__all__ = ["Route", "RouteContext", "json_object_body"]


@dataclass
class RouteContext:
    """The parts of the stand-in a route may use."""

    settings: Settings
    state: StandInState
    runner: TapRunner
    keys: KeyRing
    # The facade, for the admin routes (typed loosely to keep routes free of the facade's import).
    stand_in: Any = None


@dataclass(frozen=True)
class Route:
    """One route of the table.

    :param capability: what ``CapabilityRoutes`` requires (None: skipped or unmapped).
    :param json_body: the route declares ``consumes = application/json`` (415 otherwise).
    :param checks_key: the controller calls ``validate()`` (the lineage controller does not).
    :param public: the key is not even read (``/version``).
    """

    method: str
    template: str
    handler: Callable[[RouteContext, Call, Caller], Reply]
    capability: str | None = None
    json_body: bool = False
    checks_key: bool = True
    public: bool = False


def json_object_body(call: Call) -> dict[str, Any] | Reply:
    """The body as a JSON object, or Spring's 400 when it is missing or not an object."""
    parsed = call.parsed_json()
    if not isinstance(parsed, dict):
        return spring_error(400, call.full_path)
    return parsed
