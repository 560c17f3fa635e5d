"""Plain words for a call that got no HTTP answer, shared by the sync and the async client.

``requests`` and ``httpx`` wrap the socket error that matters (refused, unknown host, TLS) under
two or three layers of their own exceptions; the user needs the bottom one, said plainly, with the
URL and port that were tried.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


def explain_no_answer(
    err: BaseException, *, endpoint: str, route: str, timeout: float, read_timeout: float | None = None
) -> str:
    """One or two sentences saying why ``route`` to ``endpoint`` got no answer, and what to check.

    :param err: what the HTTP library raised.
    :param endpoint: the base URL tried, port included.
    :param route: the call, e.g. ``GET /api/v1/version``.
    :param timeout: the connect timeout in seconds (and the read timeout, unless given apart).
    :param read_timeout: the read timeout in seconds, when it differs (the blocking tap run).
    """
    causes = list(_causes(err))
    names = {type(cause).__name__ for cause in causes}
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return (
            f"Nothing is listening at {endpoint}: the connection was refused ({route}). "
            "Check the connection's Host and Port, and that Datris is running."
        )
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return f"The host name in {endpoint} could not be resolved ({route}). Check the connection's Host."
    if any(isinstance(cause, ssl.SSLError) for cause in causes) or "SSLError" in names:
        return (
            f"The TLS handshake with {endpoint} failed ({route}): {_tls_reason(causes)}. Check the connection's "
            "'verify' and 'ca_bundle' extras, or use http:// if this Datris does not serve TLS."
        )
    if names & {"ConnectTimeout", "ConnectTimeoutError"}:
        return (
            f"{endpoint} did not accept a connection within {timeout:g} s ({route}). "
            "Check the connection's Host and Port, and any firewall between Airflow and Datris."
        )
    if names & {"ReadTimeout", "ReadTimeoutError", "WriteTimeout", "PoolTimeout"}:
        return (
            f"{endpoint} took the call but sent no answer within {read_timeout or timeout:g} s ({route}). "
            "If Datris is only slow, raise the connection's extra 'timeout'."
        )
    if any(isinstance(cause, ConnectionResetError) for cause in causes) or names & {
        "RemoteDisconnected",
        "RemoteProtocolError",
        "ProtocolError",
    }:
        return f"{endpoint} closed the connection before answering ({route})."
    return f"{route} got no answer from {endpoint} ({type(err).__name__})."


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and everything it wraps: ``__cause__``, ``__context__``, urllib3's ``reason`` and ``args``."""
    seen: set[int] = set()
    queue = [err]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args):
            if isinstance(inner, BaseException):
                queue.append(inner)


def _tls_reason(causes: list[BaseException]) -> str:
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = getattr(cause, "verify_message", None) or "certificate verify failed"
            return f"the server's certificate was not trusted ({detail})"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return str(cause.reason)
    return "no details"
