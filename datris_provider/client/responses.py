"""Reading Datris answers, whatever the transport: error bodies, status codes, JSON, backoff.

Shared by the synchronous client (``requests``) and the asynchronous one (``httpx``), so both
give the same errors for the same answers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from datris_provider.client.errors import (
    DatrisApiError,
    DatrisAuthError,
    DatrisProtocolError,
    DatrisRunCallInterrupted,
    DatrisTransientError,
)
from datris_provider.client.models import KillAnswer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from datris_provider.client.settings import RetryPolicy

REPEATABLE_STATUS_CODES = frozenset({429, 502, 503, 504})
REQUIRED_CAPABILITIES = "tap:read, tap:run, job:read and job:kill"
# Beyond the server's own script limit, the run still stages its data inside the request.
RUN_CALL_MARGIN_SECONDS = 300.0
MAX_ERROR_TEXT = 500


def first_line_of_error(body: str | bytes) -> tuple[str, dict[str, Any] | None]:
    """The useful part of an error body, whichever generation of server wrote it.

    Newer servers answer ``{"error": "..."}`` (403s add ``required`` and ``route``); older ones send a
    plain-text Java stack trace whose first line holds the message; proxies send HTML pages.
    """
    text = body if isinstance(body, str) else body[:65536].decode("utf-8", "replace")
    stripped = text.strip()
    if not stripped:
        return "empty answer", None
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            message = parsed.get("message") or parsed.get("error") or stripped
            return str(message)[:MAX_ERROR_TEXT], parsed
    if stripped[:15].lower().startswith(("<!doctype", "<html")):
        return "an HTML error page (from a proxy in front of Datris?)", None
    line = stripped.splitlines()[0].strip()
    # "ai.datris.model.DatrisException: Tap: foo not found" -> keep the message, drop the class.
    head, sep, tail = line.partition(": ")
    if sep and "." in head and " " not in head:
        line = tail
    return line[:MAX_ERROR_TEXT], None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def backoff_seconds(policy: RetryPolicy, attempt: int, retry_after: float | None, jitter: float) -> float:
    """Exponential backoff with full jitter; a server's ``Retry-After`` wins, within ``max_delay``."""
    if retry_after is not None:
        return min(retry_after, policy.max_delay)
    ceiling: float = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return ceiling * jitter


class AnswerReader:
    """Turns one HTTP answer into parsed JSON or the right error.

    :param api_key: redacted from any server text that makes it into a message.
    """

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    def json(self, status: int, body: bytes, route: str) -> Any:
        """The JSON of a 200 answer; any other answer raises the error that fits it.

        The body is parsed from its bytes, so a large answer (a run's logs) is not also held as text.
        """
        if status in (401, 403):
            raise self.auth_error(status, body, route)
        if status in REPEATABLE_STATUS_CODES:
            raise self.transient(status, body, route)
        if status != 200:
            message, _ = first_line_of_error(body)
            if "x-api-key" in message or "capability denied" in message:
                # Older servers (and owner-scope denials) answer auth problems with a 500.
                raise DatrisAuthError(self._auth_advice(route, status, message))
            raise DatrisApiError(
                f"{route} failed with HTTP {status}: {self.redact(message)}", status_code=status, route=route
            )
        try:
            return json.loads(body)
        except ValueError:
            snippet, _ = first_line_of_error(body)
            raise DatrisProtocolError(
                f"{route} answered HTTP 200 with a body that is not JSON ({len(body)} bytes, "
                f"starting: {self.redact(snippet)[:120]!r}). Is Host pointing at the Datris API?"
            ) from None

    def run_answer(self, status: int, body: bytes, route: str) -> Any:
        """Like :meth:`json`, but a proxy's 502/504 on the blocking run call means "cut", not "failed"."""
        if status in (502, 504):
            raise DatrisRunCallInterrupted(
                f"{route} was cut by a proxy (HTTP {status}) while the run may go on.", status_code=status, route=route
            )
        return self.json(status, body, route)

    def kill_answer(self, pipeline_token: str, status: int, body: bytes, route: str) -> KillAnswer:
        """Read a ``job/kill`` answer; refused keys raise, everything else is an answer to log."""
        if status == 200:
            return KillAnswer(pipeline_token, True, "cancelled")
        if status in (401, 403):
            raise self.auth_error(status, body, route)
        message = self.redact(first_line_of_error(body)[0])
        if status in REPEATABLE_STATUS_CODES:
            return KillAnswer(pipeline_token, False, f"HTTP {status}: {message}", answered=False)
        return KillAnswer(pipeline_token, False, message)

    def transient(self, status: int, body: bytes, route: str) -> DatrisTransientError:
        message, _ = first_line_of_error(body)
        if status == 503 and "api key" in message.lower():
            message += " (Datris cannot read its API-key store; check its secret store, then retry)"
        return DatrisTransientError(
            f"{route} failed with HTTP {status}: {self.redact(message)}", status_code=status, route=route
        )

    def auth_error(self, status: int, body: bytes, route: str) -> DatrisAuthError:
        message, details = first_line_of_error(body)
        if status == 403 and details and details.get("required"):
            return DatrisAuthError(
                f"{route}: the API key '{details.get('key', '?')}' lacks the capability '{details['required']}' "
                f"(Datris route {details.get('route', route)}). Give the key {REQUIRED_CAPABILITIES}."
            )
        return DatrisAuthError(self._auth_advice(route, status, message))

    def _auth_advice(self, route: str, status: int, message: str) -> str:
        if not self._api_key:
            fix = "This Datris requires an API key: set the connection's password to a key."
        elif status == 403 or "capability" in message:
            fix = f"Give the key {REQUIRED_CAPABILITIES}, unscoped or owning the tap."
        else:
            fix = "Check the connection's password: the key is unknown, revoked or mistyped."
        return f"{route} was refused (HTTP {status}: {self.redact(message)}). {fix}"

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text
