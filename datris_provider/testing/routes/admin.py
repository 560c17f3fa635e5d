"""The stand-in's own admin routes, for steering a serving stand-in from outside its process.

Outside ``/api/v1`` and without a key (they are not part of Datris, and are never journaled):

* ``POST /_stand_in/other-run`` ``{"tap", "params", "when", "after_seconds"}``: another client's run;
* ``POST /_stand_in/cron-tick`` ``{"tap"}``: one cron run of the tap, now;
* ``POST /_stand_in/fault`` ``{"route", "kind", ...the fault's arguments}``: queue a fault;
* ``POST /_stand_in/clock/advance`` ``{"seconds"}``: move the stand-in clock forward;
* ``GET /_stand_in/clock``: the clock's time, mode and scale;
* ``GET /_stand_in/journal[?tap=<name>]``: the journal as JSON (script runs with their params and env).

A refused command answers ``400 {"error": "<what to fix>"}``.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from datris_provider.testing.injection import FAULT_KINDS
from datris_provider.testing.wire import Reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from datris_provider.testing.model import ScriptRun
    from datris_provider.testing.serving import Call
    from datris_provider.testing.stand_in import StandInDatris

__all__ = ["ADMIN_PREFIX", "handle_admin"]

ADMIN_PREFIX = "/_stand_in"


class _Refused(Exception):
    """A command the stand-in cannot act on; the message says what to fix."""


def handle_admin(stand_in: StandInDatris, call: Call) -> Reply | None:
    """Answer an admin route, or None when the path is not one (it is then handled as usual)."""
    if call.full_path != ADMIN_PREFIX and not call.full_path.startswith(ADMIN_PREFIX + "/"):
        return None
    action = call.full_path[len(ADMIN_PREFIX) :]
    routes: dict[tuple[str, str], Callable[[StandInDatris, Call], Any]] = {
        ("POST", "/other-run"): _other_run,
        ("POST", "/cron-tick"): _cron_tick,
        ("POST", "/fault"): _fault,
        ("POST", "/clock/advance"): _advance,
        ("GET", "/clock"): _clock,
        ("GET", "/journal"): _journal,
    }
    handler = routes.get((call.method, action))
    if handler is None:
        known = ", ".join(f"{method} {ADMIN_PREFIX}{path}" for method, path in routes)
        return Reply.json({"error": f"no admin route {call.method} {call.full_path}; the routes are: {known}"}, 404)
    try:
        return Reply.json(handler(stand_in, call))
    except (_Refused, ValueError, KeyError, TypeError) as problem:
        message = problem.args[0] if isinstance(problem, KeyError) and problem.args else str(problem)
        return Reply.json({"error": str(message)}, 400)


def _body(call: Call) -> dict[str, Any]:
    if not call.body:
        return {}
    try:
        parsed = json.loads(call.body)
    except ValueError:
        raise _Refused("the body must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise _Refused("the body must be a JSON object")
    return parsed


def _required(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is None:
        raise _Refused(f"{name!r} is required")
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Refused(f"{name!r} has the wrong type: {value!r}")
    return value


def _run_json(run: ScriptRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "tap_name": run.tap_name,
        "client": run.client,
        "params": run.params,
        "run_time": run.run_time,
        "started_at_ms": run.started_at_ms,
    }


def _other_run(stand_in: StandInDatris, call: Call) -> dict[str, Any]:
    body = _body(call)
    unknown = set(body) - {"tap", "params", "when", "after_seconds"}
    if unknown:
        raise _Refused(f"unknown field(s) {sorted(unknown)}; send tap, params, when, after_seconds")
    tap = _required(body, "tap", str)
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise _Refused("'params' must be a JSON object")
    when = body.get("when", "now")
    after = body.get("after_seconds")
    if after is not None and (isinstance(after, bool) or not isinstance(after, (int, float))):
        raise _Refused("'after_seconds' must be a number")
    run = stand_in.other_client_run(tap, params, when=str(when), after_seconds=after)
    return {"tap": tap, "when": when, "started": run is not None, "run": _run_json(run)}


def _cron_tick(stand_in: StandInDatris, call: Call) -> dict[str, Any]:
    tap = _required(_body(call), "tap", str)
    run = stand_in.fire_cron(tap)
    return {"tap": tap, "fired": run is not None, "run": _run_json(run)}


def _fault(stand_in: StandInDatris, call: Call) -> dict[str, Any]:
    body = _body(call)
    kind = _required(body, "kind", str)
    if kind not in FAULT_KINDS:
        raise _Refused(f"'kind' must be one of {', '.join(FAULT_KINDS)}, not {kind!r}")
    method = getattr(stand_in, kind)
    arguments = {name: value for name, value in body.items() if name != "kind"}
    accepted = set(inspect.signature(method).parameters)
    unknown = set(arguments) - accepted
    if unknown:
        raise _Refused(f"a {kind} fault takes {', '.join(sorted(accepted))}; not {', '.join(sorted(unknown))}")
    try:
        inspect.signature(method).bind(**arguments)
    except TypeError as problem:
        raise _Refused(f"a {kind} fault: {problem}") from None
    method(**arguments)
    return {"queued": kind, "route": arguments.get("route")}


def _advance(stand_in: StandInDatris, call: Call) -> dict[str, Any]:
    seconds = _required(_body(call), "seconds", (int, float))
    stand_in.clock.advance(float(seconds))
    return _clock(stand_in, call)


def _clock(stand_in: StandInDatris, call: Call) -> dict[str, Any]:
    clock = stand_in.clock
    return {"now_ms": clock.now_ms(), "mode": clock.mode, "time_scale": clock.time_scale}


def _journal(stand_in: StandInDatris, call: Call) -> dict[str, Any]:
    return stand_in.journal.to_json(call.query.get("tap") or None)
