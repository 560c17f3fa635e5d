"""The synchronous Datris API client: one ``requests`` session, typed answers, safe repeats.

Only calls that are safe to repeat are repeated (the GETs and ``job/kill``). ``POST /tap/run`` is
never repeated here: a cut run call may have started a run, and the run-tracking core goes to look
for it instead.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any

import requests

from datris_provider.client.errors import (
    DatrisApiError,
    DatrisAuthError,
    DatrisProtocolError,
    DatrisRunCallInterrupted,
    DatrisTransientError,
)
from datris_provider.client.models import (
    KillAnswer,
    PipelineStatus,
    RunLogEntry,
    ServerVersion,
    TapConfig,
    TapRunResponse,
)
from datris_provider.client.settings import USER_AGENT, ClientSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from datris_provider.client.settings import RetryPolicy

REPEATABLE_STATUS_CODES = frozenset({429, 502, 503, 504})
REQUIRED_CAPABILITIES = "tap:read, tap:run, job:read and job:kill"
# Beyond the server's own script limit the run still stages its data inside the request.
RUN_CALL_MARGIN_SECONDS = 300.0
MAX_ERROR_TEXT = 500


def first_line_of_error(text: str) -> tuple[str, dict[str, Any] | None]:
    """The useful part of an error body, whichever generation of server wrote it.

    Newer servers answer ``{"error": "..."}`` (403s add ``required`` and ``route``); older ones send a
    plain-text Java stack trace whose first line holds the message; proxies send HTML pages.
    """
    stripped = text.strip()
    if not stripped:
        return "empty answer", None
    if stripped.startswith("{"):
        try:
            body = json.loads(stripped)
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = body.get("message") or body.get("error") or stripped
            return str(message)[:MAX_ERROR_TEXT], body
    if stripped[:15].lower().startswith(("<!doctype", "<html")):
        return "an HTML error page (from a proxy in front of Datris?)", None
    line = stripped.splitlines()[0].strip()
    # "ai.datris.model.DatrisException: Tap: foo not found" -> keep the message, drop the class.
    head, sep, tail = line.partition(": ")
    if sep and "." in head and " " not in head:
        line = tail
    return line[:MAX_ERROR_TEXT], None


class DatrisClient:
    """Calls the Datris REST API and returns typed answers.

    :param settings: validated client settings.
    :param sleep: how to wait between repeats (replaced in tests).
    :param jitter: a function returning a float in ``[0, 1)`` for backoff jitter.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._jitter = jitter
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.headers["Accept"] = "application/json"
        if settings.api_key:
            self._session.headers["x-api-key"] = settings.api_key
        self._session.verify = settings.verify

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"DatrisClient(base_url={self.settings.base_url!r})"

    # -- the calls ---------------------------------------------------------------------------

    def get_version(self) -> ServerVersion:
        return ServerVersion.parse(self._get_json("/version"))

    def get_tap(self, tap_name: str) -> TapConfig:
        return TapConfig.parse(self._get_json("/tap", params={"name": tap_name}))

    def get_tap_logs(self, tap_name: str) -> list[RunLogEntry]:
        return RunLogEntry.parse_list(self._get_json("/tap/logs", params={"name": tap_name}))

    def get_pipeline_status(self, publisher_token: str) -> PipelineStatus:
        return PipelineStatus.parse(
            self._get_json("/pipeline/status", params={"publishertoken": publisher_token, "withrollup": "true"})
        )

    def check_key(self) -> str:
        """Prove the key is accepted, without side effects: ``/mcp/tools``, else ``/taps`` on older servers."""
        try:
            self._get_json("/mcp/tools", attempts=1)
            return "the API key is accepted"
        except DatrisApiError as err:
            if err.status_code != 404:
                raise
        self._get_json("/taps", attempts=1)
        return "the API key is accepted (checked with GET /taps)"

    def run_tap(self, tap_name: str, params: Mapping[str, Any], *, script_limit_seconds: float) -> TapRunResponse:
        """``POST /tap/run`` with ``mode=run``. It blocks until the tap script ends.

        The read timeout follows the server's own script limit plus a margin, not the short request
        timeout. A cut call raises :class:`DatrisRunCallInterrupted`; it is never repeated here.
        """
        route = "POST /api/v1/tap/run"
        body = {"name": tap_name, "mode": "run", "params": dict(params)}
        read_timeout = script_limit_seconds + RUN_CALL_MARGIN_SECONDS
        try:
            response = self._session.post(
                self.settings.api_url + "/tap/run",
                json=body,
                timeout=(self.settings.timeout, read_timeout),
            )
        except requests.exceptions.ConnectTimeout as err:
            raise DatrisRunCallInterrupted(
                f"{route} could not connect to Datris: {type(err).__name__}.", route=route
            ) from None
        except requests.exceptions.RequestException as err:
            raise DatrisRunCallInterrupted(
                f"{route} was cut before Datris answered ({type(err).__name__}).", route=route
            ) from None
        if response.status_code in (502, 504):
            raise DatrisRunCallInterrupted(
                f"{route} was cut by a proxy (HTTP {response.status_code}) while the run may go on.",
                status_code=response.status_code,
                route=route,
            )
        return TapRunResponse.parse(self._decode(response, route))

    def kill_job(self, pipeline_token: str, *, timeout: float) -> KillAnswer:
        """``POST /job/kill`` for one job, once and briefly. "Not running" answers are normal."""
        route = "POST /api/v1/job/kill"
        try:
            response = self._session.post(
                self.settings.api_url + "/job/kill", json={"pipelineToken": pipeline_token}, timeout=timeout
            )
        except requests.exceptions.RequestException as err:
            return KillAnswer(pipeline_token, False, f"no answer ({type(err).__name__})")
        if response.status_code == 200:
            return KillAnswer(pipeline_token, True, "cancelled")
        message, _ = first_line_of_error(response.text)
        if response.status_code in (401, 403):
            self._raise_for_auth(response, route)
        return KillAnswer(pipeline_token, False, message)

    # -- plumbing ----------------------------------------------------------------------------

    def _get_json(self, path: str, *, params: Mapping[str, str] | None = None, attempts: int | None = None) -> Any:
        route = f"GET /api/v1{path}"
        policy: RetryPolicy = self.settings.retry
        max_attempts = attempts or policy.max_attempts
        last_error: DatrisTransientError | None = None
        for attempt in range(1, max_attempts + 1):
            try:
                response = self._session.get(self.settings.api_url + path, params=params, timeout=self.settings.timeout)
            except requests.exceptions.RequestException as err:
                last_error = DatrisTransientError(
                    f"{route} failed: {type(err).__name__} talking to {self.settings.base_url}.", route=route
                )
                retry_after = None
            else:
                if response.status_code not in REPEATABLE_STATUS_CODES:
                    return self._decode(response, route)
                last_error = self._transient_error(response, route)
                retry_after = _retry_after_seconds(response)
            if attempt < max_attempts:
                self._sleep(self._backoff(attempt, retry_after))
        assert last_error is not None
        raise last_error

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        policy = self.settings.retry
        if retry_after is not None:
            return min(retry_after, policy.max_delay)
        ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        return ceiling * self._jitter()

    def _decode(self, response: requests.Response, route: str) -> Any:
        if response.status_code in (401, 403):
            self._raise_for_auth(response, route)
        if response.status_code in REPEATABLE_STATUS_CODES:
            raise self._transient_error(response, route)
        if response.status_code != 200:
            message, _ = first_line_of_error(response.text)
            if "x-api-key" in message or "capability denied" in message:
                # Older servers (and owner-scope denials) answer auth problems with a 500.
                raise DatrisAuthError(self._auth_advice(route, response.status_code, message))
            raise DatrisApiError(
                f"{route} failed with HTTP {response.status_code}: {self._redact(message)}",
                status_code=response.status_code,
                route=route,
            )
        try:
            return response.json()
        except ValueError:
            snippet, _ = first_line_of_error(response.text)
            raise DatrisProtocolError(
                f"{route} answered HTTP 200 with a body that is not JSON ({len(response.content)} bytes, "
                f"starting: {self._redact(snippet)[:120]!r}). Is Host pointing at the Datris API?"
            ) from None

    def _transient_error(self, response: requests.Response, route: str) -> DatrisTransientError:
        message, _ = first_line_of_error(response.text)
        if response.status_code == 503 and "api key" in message.lower():
            message += " (Datris cannot read its API-key store; check its secret store, then retry)"
        return DatrisTransientError(
            f"{route} failed with HTTP {response.status_code}: {self._redact(message)}",
            status_code=response.status_code,
            route=route,
        )

    def _raise_for_auth(self, response: requests.Response, route: str) -> None:
        message, body = first_line_of_error(response.text)
        if response.status_code == 403 and body and body.get("required"):
            raise DatrisAuthError(
                f"{route}: the API key '{body.get('key', '?')}' lacks the capability '{body['required']}' "
                f"(Datris route {body.get('route', route)}). Give the key {REQUIRED_CAPABILITIES}."
            )
        raise DatrisAuthError(self._auth_advice(route, response.status_code, message))

    def _auth_advice(self, route: str, status: int, message: str) -> str:
        if not self.settings.api_key:
            fix = "This Datris requires an API key: set the connection's password to a key."
        elif status == 403 or "capability" in message:
            fix = f"Give the key {REQUIRED_CAPABILITIES}, unscoped or owning the tap."
        else:
            fix = "Check the connection's password: the key is unknown, revoked or mistyped."
        return f"{route} was refused (HTTP {status}: {self._redact(message)}). {fix}"

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text


def _retry_after_seconds(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None
