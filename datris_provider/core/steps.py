"""Run-tracking logic written once, executed by a synchronous or an asynchronous driver.

The logic is a generator that yields what it needs done (:class:`Call` a client method, or
:class:`Sleep`) and receives the answer, or has the client's error thrown back into it. The operator
drives it with the ``requests`` client, the triggers with the ``httpx`` client; the rules cannot
drift apart because there is only one copy of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from datris_provider.client.errors import DatrisError

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """Call ``method`` of the client with these arguments and send back its answer."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds before going on."""

    seconds: float


Command = Call | Sleep
Steps = Generator[Command, Any, T]


def drive(steps: Steps[T], client: Any, sleep: Callable[[float], None]) -> T:
    """Run ``steps`` to their end with a synchronous client."""
    reply: Any = None
    error: DatrisError | None = None
    try:
        command = next(steps)
        while True:
            reply, error = None, None
            try:
                if isinstance(command, Sleep):
                    sleep(command.seconds)
                else:
                    reply = getattr(client, command.method)(*command.args, **command.kwargs)
            except DatrisError as err:
                error = err
            command = steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as finished:
        return cast("T", finished.value)


async def drive_async(steps: Steps[T], client: Any) -> T:
    """Run ``steps`` to their end with an asynchronous client, never blocking the event loop."""
    reply: Any = None
    error: DatrisError | None = None
    try:
        command = next(steps)
        while True:
            reply, error = None, None
            try:
                if isinstance(command, Sleep):
                    await asyncio.sleep(command.seconds)
                else:
                    reply = await getattr(client, command.method)(*command.args, **command.kwargs)
            except DatrisError as err:
                error = err
            command = steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as finished:
        return cast("T", finished.value)
