"""Fault injection: failures, delays, cut connections, proxy pages, garbage and gateway time-outs.

Faults are queued per route (``"POST /tap/run"``) and used up in the order they were queued. The
kinds that answer instead of the server (``fail``, ``html``, ``garbage``, ``reset``) keep the real
handler from running; ``delay`` and ``proxy_timeout`` let it run.

Fault times are real seconds: they model the network and the proxy in front of Datris, whose time
outs the client measures on its own clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from datris_provider.testing.wire import API_PREFIX, Reply, gson_dumps, nginx_page, stack_trace_text, status_phrase

__all__ = ["FAULT_KINDS", "FaultInjector", "InjectedFault", "failure_reply", "normalise_route"]

FAULT_KINDS = ("fail", "delay", "reset", "html", "garbage", "proxy_timeout")


@dataclass
class InjectedFault:
    """One queued fault and how many more calls it answers."""

    kind: str
    remaining: int
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def normalise_route(route: str) -> str:
    """``"post /api/v1/tap/run"`` → ``"POST /tap/run"``."""
    method, _, path = route.strip().partition(" ")
    path = path.strip()
    if path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX) :]
    if not method or not path.startswith("/"):
        raise ValueError(f"route must look like 'POST /tap/run', not {route!r}")
    return f"{method.upper()} {path}"


class FaultInjector:
    """The queue of pending faults, per route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[InjectedFault]] = {}

    def add(self, route: str, fault: InjectedFault) -> None:
        """Queue a fault for ``route``; ValueError for a bad route, kind or count."""
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {fault.kind!r}")
        if fault.remaining < 1:
            raise ValueError("times must be at least 1")
        key = normalise_route(route)
        with self._lock:
            self._pending.setdefault(key, []).append(fault)

    def take(self, route: str) -> InjectedFault | None:
        """The fault that answers this call of ``route``, if one is queued (it is used up once)."""
        with self._lock:
            pending = self._pending.get(route)
            if not pending:
                return None
            fault = pending[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                pending.pop(0)
            return fault

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._pending.clear()

    def pending(self) -> dict[str, list[InjectedFault]]:
        """A snapshot of the queue, per route."""
        with self._lock:
            return {route: list(faults) for route, faults in self._pending.items() if faults}


def failure_reply(fault: InjectedFault, path: str, error_style: str) -> Reply:
    """The answer of a ``fail``, ``html`` or ``garbage`` fault."""
    if fault.kind == "html":
        return Reply(fault.status, nginx_page(fault.status), content_type="text/html")
    if fault.kind == "garbage":
        body = fault.body if isinstance(fault.body, bytes) else str(fault.body).encode("utf-8")
        return Reply(fault.status, body)
    headers = dict(fault.headers)
    content_type = "application/json"
    for name in list(headers):
        if name.lower() == "content-type":
            content_type = headers.pop(name)
    if fault.body is None:
        if fault.status == 500 and error_style == "stacktrace":
            body = stack_trace_text("java.lang.RuntimeException", "Injected failure", path)
        else:
            body = gson_dumps({"error": status_phrase(fault.status)})
    elif isinstance(fault.body, bytes):
        body = fault.body
    elif isinstance(fault.body, str):
        body = fault.body.encode("utf-8")
    else:
        body = gson_dumps(fault.body)
    return Reply(fault.status, body, content_type=content_type, headers=headers)
