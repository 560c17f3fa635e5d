"""The synchronous Datris API client: one ``requests`` session, typed answers, safe repeats.

Only calls that are safe to repeat are repeated (the GETs and ``job/kill``). ``POST /tap/run`` is
never repeated here: a cut run call may have started a run, and the run-tracking core goes to look
for it instead.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import requests

from datris_provider.client.errors import DatrisApiError, DatrisRunCallInterrupted, DatrisTransientError
from datris_provider.client.models import (
    KillAnswer,
    LineageView,
    PipelineStatus,
    RunLogEntry,
    ServerVersion,
    TapConfig,
    TapRunResponse,
)
from datris_provider.client.no_answer import explain_no_answer
from datris_provider.client.responses import (
    REPEATABLE_STATUS_CODES,
    RUN_CALL_MARGIN_SECONDS,
    AnswerReader,
    backoff_seconds,
    retry_after_seconds,
)
from datris_provider.client.settings import USER_AGENT, ClientSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class _KeySafeSession(requests.Session):
    """A session whose interrupted calls carry no traceback into ``requests`` and ``urllib3``.

    Airflow's ``execution_timeout`` (and a signal that stops the task) raises inside whatever is
    running, often a socket read deep in ``urllib3``, whose frames hold the request headers, the API
    key among them, as local variables. Airflow 3.0 prints a failed task's traceback with its locals
    and does not mask them. Cut at this frame, the traceback starts in the provider's own code, whose
    locals never hold the key. ``requests``' own errors are turned into Datris errors by the caller.
    """

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(*args, **kwargs)
        except requests.exceptions.RequestException:
            raise
        except BaseException as interrupt:
            raise interrupt.with_traceback(None) from None


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
        self._session = _KeySafeSession()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.headers["Accept"] = "application/json"
        if settings.api_key:
            self._session.headers["x-api-key"] = settings.api_key
        self._session.verify = settings.verify
        self._reader = AnswerReader(settings.api_key)

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

    def get_all_tap_logs(self, *, since_ms: int | None = None, limit: int = 5000) -> list[RunLogEntry]:
        """``GET /tap/logs/all``: every tap's run-log rows that started at or after ``since_ms`` (no rollup)."""
        params = {"limit": str(limit)} if since_ms is None else {"since": str(since_ms), "limit": str(limit)}
        return RunLogEntry.parse_list(self._get_json("/tap/logs/all", params=params))

    def get_pipeline_status(self, token: str, *, by_pipeline_token: bool = False) -> PipelineStatus:
        """Jobs and events of a publisher token (every job of a run), or of one pipeline token."""
        key = "pipelinetoken" if by_pipeline_token else "publishertoken"
        return PipelineStatus.parse(self._get_json("/pipeline/status", params={key: token, "withrollup": "true"}))

    def get_lineage(self, node_type: str, name: str, *, direction: str = "both") -> LineageView | None:
        """What is upstream and downstream of a node; ``None`` when the server has no lineage for it."""
        from urllib.parse import quote

        try:
            data = self._get_json(f"/lineage/{node_type}/{quote(name, safe='')}", params={"direction": direction})
        except DatrisApiError as err:
            if err.status_code == 404:
                return None
            raise
        return LineageView.parse(data)

    def check_key(self) -> str:
        """Prove the key is accepted, without side effects: ``/mcp/tools``, else ``/taps`` on older servers.

        :return: the route that accepted the call.
        """
        try:
            self._get_json("/mcp/tools", attempts=1)
            return "GET /api/v1/mcp/tools"
        except DatrisApiError as err:
            if err.status_code != 404:
                raise
        self._get_json("/taps", attempts=1)
        return "GET /api/v1/taps"

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
        except requests.exceptions.RequestException as err:
            raise DatrisRunCallInterrupted(self._cut(err, route, read_timeout), route=route) from None
        return TapRunResponse.parse(self._reader.run_answer(response.status_code, response.content, route))

    def upload_file(self, path: str, pipeline: str, *, filename: str, publisher_token: str, read_timeout: float) -> str:
        """``POST /pipeline/upload``: stream the file as multipart and return the plain-text answer.

        Not repeated: the caller chose the publisher token, so a cut call is followed by that token.
        """
        from datris_provider.client.multipart import MultipartFile

        route = "POST /api/v1/pipeline/upload"
        body = MultipartFile({"pipeline": pipeline, "publishertoken": publisher_token}, "file", path, filename)
        try:
            response = self._session.post(
                self.settings.api_url + "/pipeline/upload",
                data=body,
                headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
                timeout=(self.settings.timeout, read_timeout),
            )
        except requests.exceptions.RequestException as err:
            raise DatrisRunCallInterrupted(self._cut(err, route, read_timeout), route=route) from None
        if response.status_code != 200:
            self._reader.json(response.status_code, response.content, route)
        return response.content.decode("utf-8", "replace")

    def kill_job(self, pipeline_token: str, *, timeout: float) -> KillAnswer:
        """``POST /job/kill`` for one job, repeated only while Datris cannot be reached, within ``timeout``.

        "Job is not running" answers are normal (the job ended, or never started).
        """
        route = "POST /api/v1/job/kill"
        ends_at = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            left = max(ends_at - time.monotonic(), 0.05)
            try:
                response = self._session.post(
                    self.settings.api_url + "/job/kill", json={"pipelineToken": pipeline_token}, timeout=left
                )
            except requests.exceptions.RequestException as err:
                answer = KillAnswer(pipeline_token, False, self._no_answer(err, route, left), answered=False)
            else:
                answer = self._reader.kill_answer(pipeline_token, response.status_code, response.content, route)
                retry_after = retry_after_seconds(response.headers)
            pause = backoff_seconds(self.settings.retry, attempt, retry_after, self._jitter())
            if answer.answered or time.monotonic() + pause >= ends_at:
                return answer
            self._sleep(pause)

    # -- plumbing ----------------------------------------------------------------------------

    def _no_answer(self, err: BaseException, route: str, read_timeout: float | None = None) -> str:
        return explain_no_answer(
            err, endpoint=self.settings.endpoint, route=route, timeout=self.settings.timeout, read_timeout=read_timeout
        )

    def _cut(self, err: BaseException, route: str, read_timeout: float) -> str:
        return f"{route} was cut before Datris answered. {self._no_answer(err, route, read_timeout)}"

    def _get_json(self, path: str, *, params: Mapping[str, str] | None = None, attempts: int | None = None) -> Any:
        route = f"GET /api/v1{path}"
        policy = self.settings.retry
        max_attempts = attempts or policy.max_attempts
        for attempt in range(1, max_attempts + 1):
            retry_after = None
            try:
                response = self._session.get(self.settings.api_url + path, params=params, timeout=self.settings.timeout)
            except requests.exceptions.RequestException as err:
                error = DatrisTransientError(self._no_answer(err, route), route=route)
            else:
                if response.status_code not in REPEATABLE_STATUS_CODES:
                    return self._reader.json(response.status_code, response.content, route)
                error = self._reader.transient(response.status_code, response.content, route)
                retry_after = retry_after_seconds(response.headers)
            if attempt == max_attempts:
                raise error
            self._sleep(backoff_seconds(policy, attempt, retry_after, self._jitter()))
        raise AssertionError("unreachable")
