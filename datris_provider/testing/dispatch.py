"""From a werkzeug request to a route's answer: faults first, then Spring's checks, auth, the handler.

The order follows the server: unknown paths and methods get Spring's 404/405, a JSON route refuses
another content type (415) before any interceptor runs, the upload size limit sits in front of the
application, then the key is resolved and the controller runs.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from datris_provider.testing.auth import ANONYMOUS
from datris_provider.testing.injection import failure_reply
from datris_provider.testing.model import DatrisError
from datris_provider.testing.routes import find_route, path_is_known
from datris_provider.testing.serving import Call, ConnectionCut
from datris_provider.testing.wire import API_PREFIX, Reply, controller_error, nginx_page, spring_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from werkzeug import Request, Response

    from datris_provider.testing.auth import Caller
    from datris_provider.testing.injection import FaultInjector, InjectedFault
    from datris_provider.testing.journal import Journal
    from datris_provider.testing.routes import RouteContext

__all__ = ["Dispatcher", "to_response"]

_UPLOAD_PATH = "/pipeline/upload"
_LINEAGE_PATH = "/lineage"


def to_response(reply: Reply) -> Response:
    """The werkzeug response of a reply."""
    from werkzeug import Response

    response = Response(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response.headers[name] = value
    return response


class Dispatcher:
    """Answers requests, and knows how many are being handled (for :meth:`wait_until_idle`).

    :param context: the parts the routes use.
    :param faults: the queue of injected faults.
    :param journal: where every request is recorded.
    :param sleep: waits real seconds, waking early when the server stops.
    :param on_trim: called when the journal dropped old requests (to trim the HTTP server's log too).
    :param extra_handler: tried first for paths outside ``/api/v1`` (the admin routes); None: not ours.
    """

    def __init__(
        self,
        context: RouteContext,
        faults: FaultInjector,
        journal: Journal,
        sleep: Callable[[float], None],
        on_trim: Callable[[], None],
        extra_handler: Callable[[Call], Reply | None] | None = None,
    ) -> None:
        self.context = context
        self.faults = faults
        self.journal = journal
        self.sleep = sleep
        self.on_trim = on_trim
        self.extra_handler = extra_handler
        self.idle = threading.Condition()
        self.busy_handlers = 0

    # ---------------------------------------------------------------- entry point

    def serve(self, request: Request) -> Response:
        """The pytest-httpserver handler of every request."""
        call = Call.from_request(request)
        if self.extra_handler is not None and not call.full_path.startswith(API_PREFIX + "/"):
            reply = self.extra_handler(call)
            if reply is not None:
                return to_response(reply)
        fault = self.faults.take(call.route)
        if self.journal.record_request(call, fault.kind if fault else None):
            self.on_trim()
        if fault is None:
            return to_response(self.handle_tracked(call))
        return self._apply_fault(fault, call, request)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Count the enclosed work as a request being handled."""
        self.enter_busy()
        try:
            yield
        finally:
            self.leave_busy()

    def enter_busy(self) -> None:
        """One more request is being handled."""
        with self.idle:
            self.busy_handlers += 1

    def leave_busy(self) -> None:
        """One request less is being handled."""
        with self.idle:
            self.busy_handlers -= 1
            self.idle.notify_all()

    def wait_until_idle(self, timeout: float) -> bool:
        """Block until nothing is being handled; False after ``timeout`` real seconds."""
        with self.idle:
            return self.idle.wait_for(lambda: self.busy_handlers == 0, timeout=timeout)

    def handle_tracked(self, call: Call) -> Reply:
        """Handle a call, counted as busy."""
        with self.busy():
            return self.handle(call)

    # ---------------------------------------------------------------- faults

    def _apply_fault(self, fault: InjectedFault, call: Call, request: Request) -> Response:
        if fault.kind == "delay":
            self.sleep(fault.seconds)
            return to_response(self.handle_tracked(call))
        if fault.kind == "reset":
            connection = request.environ.get("werkzeug.socket")
            if connection is not None:
                # The client may already be gone; the outcome is the same.
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionCut(f"stand-in Datris cut the connection of {call.route}")
        if fault.kind == "proxy_timeout":
            # Count the detached work as busy before the client can see the 504, so a
            # wait_until_idle() issued right after the 504 always waits for it.
            self.enter_busy()
            worker = threading.Thread(
                target=self._handle_detached, args=(call,), name=f"stand-in-datris {call.route}", daemon=True
            )
            worker.start()
            self.sleep(fault.seconds)
            return to_response(Reply(504, nginx_page(504), content_type="text/html"))
        return to_response(failure_reply(fault, call.path, self.context.settings.error_style))

    def _handle_detached(self, call: Call) -> None:
        try:
            self.handle(call)
        finally:
            self.leave_busy()

    # ---------------------------------------------------------------- routing and auth

    def handle(self, call: Call) -> Reply:
        """Route one call and run its handler."""
        settings = self.context.settings
        if not call.full_path.startswith(API_PREFIX + "/"):
            return spring_error(404, call.full_path)
        is_lineage = call.path == _LINEAGE_PATH or call.path.startswith(_LINEAGE_PATH + "/")
        if is_lineage and not settings.has_lineage:
            return spring_error(404, call.full_path)
        route = find_route(call.method, call.path)
        if route is None:
            return spring_error(405 if path_is_known(call.path) else 404, call.full_path)
        if call.path == "/mcp/tools" and not settings.has_mcp_tools:
            return spring_error(404, call.full_path)
        # Spring checks `consumes = application/json` while choosing the handler, before interceptors.
        if route.json_body and not call.sends_json():
            return spring_error(415, call.full_path)
        # The size limit sits in front of the application (proxy / multipart resolver).
        if call.path == _UPLOAD_PATH and call.file_part is not None and call.file_part.size > settings.max_upload_bytes:
            return Reply.json(
                {
                    "error": (
                        f"File too large: {call.file_part.size} bytes exceeds the upload limit of "
                        f"{settings.max_upload_bytes} bytes"
                    )
                },
                413,
            )

        caller: Caller | Reply
        if route.public:
            caller = ANONYMOUS  # the key is not even read
        else:
            caller = self.context.keys.authorize(
                method=call.method,
                path=call.path,
                full_path=call.full_path,
                api_key_value=call.headers.get("x-api-key", "").strip() or None,
                required=route.capability,
                checks_key=route.checks_key,
                error_style=settings.error_style,
            )
        if isinstance(caller, Reply):
            return caller
        state = self.context.state
        with state.lock:
            state.catch_up_locked()  # answer as of now, even if the scheduler thread has not looked yet
        try:
            return route.handler(self.context, call, caller)
        except DatrisError as problem:
            return controller_error(
                settings.error_style,
                problem.message,
                call.path,
                status=problem.status,
                exception_class=problem.exception_class,
            )
