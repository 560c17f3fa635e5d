"""How the stand-in Datris writes its answers: Gson-style JSON, timestamps, stack traces, proxy pages.

Everything a client sees byte for byte lives here, so the routes only decide *what* to answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "API_PREFIX",
    "ERROR_STYLES",
    "Reply",
    "compact_json",
    "controller_error",
    "drop_nulls",
    "format_datris_time",
    "format_elapsed",
    "gson_dumps",
    "iso_instant",
    "job_failure_detail",
    "nginx_page",
    "param_value_text",
    "seconds_text",
    "spring_error",
    "stack_trace_text",
    "status_phrase",
]

API_PREFIX = "/api/v1"

# "json": newer servers' ApiErrors ({"error": ...}); "stacktrace": older controllers (500 + Java trace).
ERROR_STYLES = ("json", "stacktrace")

# Which Scala class "throws" on each route, for realistic stack traces.
_ROUTE_CONTROLLERS: dict[str, tuple[str, str]] = {
    "/tap": ("TapAPIController", "getTap"),
    "/taps": ("TapAPIController", "getTaps"),
    "/tap/run": ("TapAPIController", "runTap"),
    "/tap/test": ("TapAPIController", "testTap"),
    "/tap/logs": ("TapAPIController", "getTapLogs"),
    "/tap/logs/all": ("TapAPIController", "getAllTapLogs"),
    "/pipeline/status": ("PipelineStatusAPIController", "getStatus"),
    "/job/kill": ("QueryAPIController", "killJob"),
    "/pipeline/upload": ("FileUploadAPIController", "uploadRawFile"),
    "/mcp/tools": ("MCPToolsAPIController", "listTools"),
}

_NGINX_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def format_datris_time(epoch_ms: int) -> str:
    """Format epoch milliseconds the way the server writes ``dateTime``: ``yyyy-MM-dd HH:mm:ss UTC``.

    :param epoch_ms: the instant in milliseconds since the epoch.
    """
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_elapsed(elapsed_ms: int) -> str:
    """Render a duration like the server's ``ElapsedTimeUtil``: ``3.25 sec``, ``1 min 3.25 sec``, ...

    Hours and minutes are shown only when they are non-zero at the front; the part after the decimal
    point is hundredths of a second.

    :param elapsed_ms: the duration in milliseconds (negative values are treated as 0).
    """
    elapsed_ms = max(0, int(elapsed_ms))
    hours, remainder = divmod(elapsed_ms, 3_600_000)
    minutes, remainder = divmod(remainder, 60_000)
    seconds, millis = divmod(remainder, 1000)
    seconds_text = f"{seconds}.{millis // 10:02d} sec"
    if hours:
        return f"{hours} hr {minutes} min {seconds_text}"
    if minutes:
        return f"{minutes} min {seconds_text}"
    return seconds_text


def iso_instant(epoch_ms: int) -> str:
    """Java's ``Instant.toString``: ISO-8601 UTC, with milliseconds only when there are any."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    millis = epoch_ms % 1000
    fraction = f".{millis:03d}" if millis else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def drop_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out keys whose value is None, as Gson does without ``serializeNulls``."""
    return {key: value for key, value in values.items() if value is not None}


def gson_dumps(payload: Any) -> bytes:
    """Serialise like Gson's defaults: compact, UTF-8, with its HTML-safe escapes.

    Gson escapes ``< > & = '`` inside strings. None of these characters can appear in JSON outside a
    string, so replacing them in the whole text only touches string contents.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("=", "\\u003d"),
        ("'", "\\u0027"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode("utf-8")


def compact_json(value: Any) -> str:
    """Compact JSON text of an object or array param value, as the script receives it."""
    return gson_dumps(value).decode("utf-8")


def param_value_text(value: Any) -> str:
    """Turn one tap param value into the text of its ``DATRIS_TAP_PARAM_<key>`` variable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return compact_json(value)
    return str(value)


def seconds_text(seconds: float) -> str:
    """Seconds as /version writes them: an integer string when the value is whole."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def status_phrase(status: int) -> str:
    """The reason phrase of an HTTP status (``Error`` for a code HTTP does not name)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def nginx_page(status: int) -> bytes:
    """The HTML error page nginx answers with when it cannot (or will not) reach the server."""
    return _NGINX_PAGE.format(code=status, reason=status_phrase(status)).encode("ascii")


def stack_trace_text(exception_class: str, message: str, path: str) -> bytes:
    """A Java stack trace like the one older controllers put in the body of their 500s."""
    controller, method = _ROUTE_CONTROLLERS.get(path, ("TapAPIController", "handle"))
    lines = [
        f"{exception_class}: {message}",
        f"\tat ai.datris.api.{controller}.$anonfun${method}$1({controller}.scala:148)",
        "\tat scala.util.Try$.apply(Try.scala:217)",
        f"\tat ai.datris.api.{controller}.{method}({controller}.scala:141)",
        "\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
        "\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def job_failure_detail(error: str) -> str:
    """The stack trace of a failed JobRunner (``detail`` on newer servers, ``description`` on older)."""
    return (
        f"ai.datris.model.DatrisException: {error}\n"
        "\tat ai.datris.controller.JobRunner.runLoaders(JobRunner.scala:287)\n"
        "\tat ai.datris.controller.JobRunner.run(JobRunner.scala:118)\n"
        "\tat java.base/java.lang.Thread.run(Thread.java:1583)\n"
    )


@dataclass
class Reply:
    """One HTTP answer, before it becomes a werkzeug response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Reply:
        """A Gson-style JSON answer."""
        return cls(status, gson_dumps(payload))


def controller_error(
    error_style: str,
    message: str,
    path: str,
    status: int = 500,
    exception_class: str = "ai.datris.model.DatrisException",
) -> Reply:
    """An exception caught by a controller: ``{"error": ...}`` (newer) or a stack trace (older).

    Older controllers answer 500 for everything; only the newer ``ApiErrors`` maps validation
    problems to 400.
    """
    if error_style == "json":
        return Reply.json({"error": message.splitlines()[0] if message else ""}, status)
    return Reply(500, stack_trace_text(exception_class, message, path))


def spring_error(status: int, full_path: str) -> Reply:
    """Spring Boot's default error JSON (the same in both generations)."""
    timestamp = datetime.now(tz=timezone.utc).isoformat(timespec="milliseconds")
    return Reply.json(
        {"timestamp": timestamp, "status": status, "error": status_phrase(status), "path": full_path},
        status,
    )
