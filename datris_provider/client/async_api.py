"""The asynchronous Datris API client (``httpx``), for triggers running in Airflow's triggerer.

It offers the same calls, answers and errors as :class:`~datris_provider.client.api.DatrisClient`;
only the transport differs, so the run-tracking core drives either one.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from typing import TYPE_CHECKING, Any

import httpx

from datris_provider.client.errors import DatrisRunCallInterrupted, DatrisTransientError
from datris_provider.client.models import (
    KillAnswer,
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
from datris_provider.client.settings import USER_AGENT

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from datris_provider.client.settings import ClientSettings


@functools.lru_cache(maxsize=8)
def _tls(verify: bool | str) -> ssl.SSLContext:
    """One TLS context per setting and process: loading the CA bundle costs ~850 KB and ~23 ms, which a
    triggerer watching a thousand runs must not pay a thousand times."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


class AsyncDatrisClient:
    """Calls the Datris REST API without blocking the event loop.

    :param settings: validated client settings.
    :param jitter: a function returning a float in ``[0, 1)`` for backoff jitter.
    :param transport: an httpx transport (tests and benchmarks may share one).
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        jitter: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._jitter = jitter
        self._reader = AnswerReader(settings.api_key)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        self._http = httpx.AsyncClient(
            base_url=settings.api_url,
            headers=headers,
            verify=_tls(settings.verify),
            timeout=settings.timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"AsyncDatrisClient(base_url={self.settings.base_url!r})"

    async def get_version(self) -> ServerVersion:
        return ServerVersion.parse(await self._get_json("/version"))

    async def get_tap(self, tap_name: str) -> TapConfig:
        return TapConfig.parse(await self._get_json("/tap", params={"name": tap_name}))

    async def get_tap_logs(self, tap_name: str) -> list[RunLogEntry]:
        return RunLogEntry.parse_list(await self._get_json("/tap/logs", params={"name": tap_name}))

    async def get_all_tap_logs(self, *, since_ms: int | None = None, limit: int = 5000) -> list[RunLogEntry]:
        """``GET /tap/logs/all``: every tap's run-log rows that started at or after ``since_ms`` (no rollup)."""
        params = {"limit": str(limit)} if since_ms is None else {"since": str(since_ms), "limit": str(limit)}
        return RunLogEntry.parse_list(await self._get_json("/tap/logs/all", params=params))

    async def get_pipeline_status(self, token: str, *, by_pipeline_token: bool = False) -> PipelineStatus:
        params = {"pipelinetoken" if by_pipeline_token else "publishertoken": token, "withrollup": "true"}
        return PipelineStatus.parse(await self._get_json("/pipeline/status", params=params))

    async def run_tap(self, tap_name: str, params: Mapping[str, Any], *, script_limit_seconds: float) -> TapRunResponse:
        """``POST /tap/run`` with ``mode=run``; never repeated (see the sync client)."""
        route = "POST /api/v1/tap/run"
        timeout = httpx.Timeout(self.settings.timeout, read=script_limit_seconds + RUN_CALL_MARGIN_SECONDS)
        try:
            response = await self._http.post(
                "/tap/run", json={"name": tap_name, "mode": "run", "params": dict(params)}, timeout=timeout
            )
        except httpx.HTTPError as err:
            no_answer = explain_no_answer(
                err,
                endpoint=self.settings.endpoint,
                route=route,
                timeout=self.settings.timeout,
                read_timeout=script_limit_seconds + RUN_CALL_MARGIN_SECONDS,
            )
            raise DatrisRunCallInterrupted(
                f"{route} was cut before Datris answered. {no_answer}", route=route
            ) from None
        return TapRunResponse.parse(self._reader.run_answer(response.status_code, response.content, route))

    async def kill_job(self, pipeline_token: str, *, timeout: float) -> KillAnswer:
        """``POST /job/kill``, repeated only while Datris cannot be reached, within ``timeout``."""
        route = "POST /api/v1/job/kill"
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + timeout
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            left = max(ends_at - loop.time(), 0.05)
            try:
                response = await self._http.post("/job/kill", json={"pipelineToken": pipeline_token}, timeout=left)
            except httpx.HTTPError as err:
                no_answer = explain_no_answer(err, endpoint=self.settings.endpoint, route=route, timeout=left)
                answer = KillAnswer(pipeline_token, False, no_answer, answered=False)
            else:
                answer = self._reader.kill_answer(pipeline_token, response.status_code, response.content, route)
                retry_after = retry_after_seconds(response.headers)
            pause = backoff_seconds(self.settings.retry, attempt, retry_after, self._jitter())
            if answer.answered or loop.time() + pause >= ends_at:
                return answer
            await asyncio.sleep(pause)

    async def _get_json(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        route = f"GET /api/v1{path}"
        policy = self.settings.retry
        for attempt in range(1, policy.max_attempts + 1):
            retry_after = None
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as err:
                no_answer = explain_no_answer(
                    err, endpoint=self.settings.endpoint, route=route, timeout=self.settings.timeout
                )
                error = DatrisTransientError(no_answer, route=route)
            else:
                if response.status_code not in REPEATABLE_STATUS_CODES:
                    return self._reader.json(response.status_code, response.content, route)
                error = self._reader.transient(response.status_code, response.content, route)
                retry_after = retry_after_seconds(response.headers)
            if attempt == policy.max_attempts:
                raise error
            await asyncio.sleep(backoff_seconds(policy, attempt, retry_after, self._jitter()))
        raise AssertionError("unreachable")
