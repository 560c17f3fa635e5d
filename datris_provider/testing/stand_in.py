"""``StandInDatris``: the stand-in Datris server's public face, a thin layer over its parts.

The parts: :mod:`~datris_provider.testing.state` (what the server knows),
:mod:`~datris_provider.testing.runs` (a tap run), :mod:`~datris_provider.testing.auth` (keys and
capabilities), :mod:`~datris_provider.testing.injection` (faults), :mod:`~datris_provider.testing.routes`
(one module per route family), :mod:`~datris_provider.testing.wire` (how answers are written) and
:mod:`~datris_provider.testing.journal` (what happened, for assertions).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from datris_provider.testing.auth import KeyRing
from datris_provider.testing.clock import CLOCK_MODES, StandInClock
from datris_provider.testing.dispatch import Dispatcher
from datris_provider.testing.injection import FaultInjector, InjectedFault
from datris_provider.testing.journal import Journal
from datris_provider.testing.model import (
    DEFAULT_DATASET,
    DEFAULT_JOB_SECONDS,
    DEFAULT_PIPELINE_ERROR,
    DEFAULT_PIPELINE_WARNING,
    SettingField,
    Settings,
    StandInPipeline,
    StandInTap,
)
from datris_provider.testing.routes import RouteContext
from datris_provider.testing.routes.admin import handle_admin
from datris_provider.testing.routes.meta import HEALTH_STATUSES
from datris_provider.testing.runs import TapRunner
from datris_provider.testing.scheduler import Scheduler
from datris_provider.testing.serving import MatchEveryPath, StandInHTTPServer
from datris_provider.testing.state import StandInState
from datris_provider.testing.wire import API_PREFIX, ERROR_STYLES

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from pytest_httpserver import HTTPServer

    from datris_provider.testing.model import RecordedRequest, RecordedUpload, ScriptRun, StandInJob

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_TIME_SCALE", "OTHER_RUN_MOMENTS", "StandInDatris"]

DEFAULT_MAX_UPLOAD_BYTES = 1024**3
# Stand-in seconds per real second unless told otherwise: a 5 s scheduler tick takes 0.1 s, a
# default job (at most one tick plus 2 s) about 0.15 s. Pass time_scale=1 for real time.
DEFAULT_TIME_SCALE = 50.0
_WAIT_FOR_RECHECK_SECONDS = 0.02
# When another client's run starts (see StandInDatris.other_client_run).
OTHER_RUN_MOMENTS = ("now", "on_tap_read", "before_next_run", "after")


class StandInDatris:
    """A stand-in Datris API server on a local port, built on ``pytest_httpserver``.

    Use it as a context manager (or call :meth:`start`/:meth:`stop`), add taps with :meth:`add_tap`
    (and pipelines for uploads with :meth:`add_pipeline`) and point a client at :attr:`url`. Every
    request is recorded in :attr:`requests`; every uploaded file also in :attr:`uploads`.

    :param host: the interface to listen on.
    :param port: the port; 0 picks a free one.
    :param error_style: ``json`` (newer servers: ``{"error": "<first line>"}``, 401 for a missing key)
        or ``stacktrace`` (older controllers: HTTP 500 with a Java stack trace as plain text).
    :param debounce_seconds: the ``mode=run`` debounce window, counted from the start of the last
        accepted run of the same tap. 0 disables it.
    :param tap_run_timeout_seconds: the script time limit for ``mode=run`` (and non-test modes).
    :param tap_script_timeout_seconds: the script time limit for ``mode=test`` (for every mode when
        ``legacy_version`` is set).
    :param version: the version string reported by ``/version``.
    :param has_mcp_tools: False models an older server where ``/mcp/tools`` answers 404.
    :param legacy_version: model an older server: ``/version`` lacks the timeout, payload and newer
        flags, and one script time limit applies to every mode.
    :param request_log_limit: keep at most this many entries in :attr:`requests` (None: keep all);
        useful for a long-running demo server.
    :param debounce_clock: a separate monotonic clock (seconds) for the debounce window; None (the
        default) uses the stand-in clock.
    :param has_lineage: False models an older server without the lineage controller: every
        ``/lineage`` path answers Spring's 404.
    :param max_upload_bytes: the largest file ``POST /pipeline/upload`` accepts (default 1 GB); a larger
        file gets ``413 {"error":"File too large…"}`` before any key or parameter is checked.
    :param time_scale: stand-in seconds per real second (default 50: a 5 s scheduler tick takes
        0.1 s). Every server-side time runs on this clock: script durations, the debounce window, the
        scheduler tick, job durations, event times, ``elapsed``, run-log times and cron.
    :param clock: ``scaled`` (the default) or ``manual``: time moves only through
        ``clock.advance(seconds)``.
    :param scheduler_tick_seconds: how often the server's ``findJobsToStart`` starts queued jobs.
    """

    error_style: SettingField[str] = SettingField()
    debounce_seconds: SettingField[float] = SettingField()
    tap_run_timeout_seconds: SettingField[float] = SettingField()
    tap_script_timeout_seconds: SettingField[float] = SettingField()
    version: SettingField[str] = SettingField()
    has_mcp_tools: SettingField[bool] = SettingField()
    legacy_version: SettingField[bool] = SettingField()
    has_lineage: SettingField[bool] = SettingField()
    max_upload_bytes: SettingField[int] = SettingField()
    scheduler_tick_seconds: SettingField[float] = SettingField()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        error_style: str = "json",
        debounce_seconds: float = 5.0,
        tap_run_timeout_seconds: float = 3600,
        tap_script_timeout_seconds: float = 300,
        version: str = "1.38.3",
        has_mcp_tools: bool = True,
        legacy_version: bool = False,
        request_log_limit: int | None = None,
        debounce_clock: Callable[[], float] | None = None,
        has_lineage: bool = True,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        time_scale: float = DEFAULT_TIME_SCALE,
        clock: str = "scaled",
        scheduler_tick_seconds: float = 5.0,
    ) -> None:
        if error_style not in ERROR_STYLES:
            raise ValueError(f"error_style must be one of {ERROR_STYLES}, not {error_style!r}")
        if clock not in CLOCK_MODES:
            raise ValueError(f"clock must be one of {CLOCK_MODES}, not {clock!r}")
        if scheduler_tick_seconds < 0:
            raise ValueError("scheduler_tick_seconds cannot be negative")
        self.host = host
        self.port = port
        self.settings = Settings(
            error_style=error_style,
            debounce_seconds=debounce_seconds,
            tap_run_timeout_seconds=tap_run_timeout_seconds,
            tap_script_timeout_seconds=tap_script_timeout_seconds,
            version=version,
            has_mcp_tools=has_mcp_tools,
            legacy_version=legacy_version,
            has_lineage=has_lineage,
            max_upload_bytes=max_upload_bytes,
            request_log_limit=request_log_limit,
            scheduler_tick_seconds=scheduler_tick_seconds,
        )
        # reset_state() puts these back, so a test can change them on a shared server.
        self._initial_settings = dataclasses.replace(self.settings)
        self._initial_debounce_clock = debounce_clock

        self._initial_clock = (clock, time_scale)
        self._clock_watches = 0
        self._stopping = threading.Event()
        self._httpserver: HTTPServer | None = None
        condition = threading.Condition(threading.RLock())
        #: The stand-in clock: ``clock.now()``, ``clock.advance(seconds)``, ``clock.pause()``/``resume()``.
        self.clock = StandInClock(time_scale, manual=clock == "manual", condition=condition)
        self._state = StandInState(self.settings, self.clock.now_ms, condition)
        self._state.debounce_clock = debounce_clock
        self._keys = KeyRing()
        self._faults = FaultInjector()
        self._journal = Journal(self._state, request_log_limit)
        self._runner = TapRunner(self._state, self.clock, self._stopping.is_set, self._in_background)
        self._scheduler = Scheduler(self._state, self.clock, self._runner, self._stopping.is_set)
        self._dispatcher = Dispatcher(
            RouteContext(self.settings, self._state, self._runner, self._keys, self),
            self._faults,
            self._journal,
            self._sleep,
            self._trim_http_log,
            extra_handler=lambda call: handle_admin(self, call),
        )

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> StandInDatris:
        """Start listening (in a background thread) and return self."""
        if self._httpserver is not None:
            return self
        self._stopping.clear()
        server = StandInHTTPServer(host=self.host, port=self.port, threaded=True)
        server.expect_request(MatchEveryPath()).respond_with_handler(self._dispatcher.serve)
        server.start()
        self._httpserver = server
        self.port = server.port
        self._scheduler.start()
        return self

    def stop(self) -> None:
        """Stop listening. Runs still sleeping in their script phase wake up and finish early."""
        self._stopping.set()
        self._scheduler.wake()
        server, self._httpserver = self._httpserver, None
        if server is not None and server.is_running():
            server.stop()
        self._scheduler.join(timeout=5)

    def __enter__(self) -> StandInDatris:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL without ``/api/v1``, e.g. ``http://127.0.0.1:54321``."""
        if self._httpserver is None:
            raise RuntimeError("the stand-in Datris server is not running; call start() first")
        return self._httpserver.url_for("/").rstrip("/")

    @property
    def api_url(self) -> str:
        """The API base URL: :attr:`url` + ``/api/v1``."""
        return self.url + API_PREFIX

    def reset_state(self) -> None:
        """Forget taps, pipelines, keys, jobs, events, run logs, requests, uploads, faults and debounce;
        keep serving.

        Auth goes back to "keys off", the key store back up, and the constructor settings (error style,
        debounce window, time limits, version flags) to the values the server was created with.
        Runs still in flight finish without writing into the fresh state.
        """
        with self._state.lock:
            for settings_field in dataclasses.fields(Settings):
                setattr(self.settings, settings_field.name, getattr(self._initial_settings, settings_field.name))
            self._journal.limit = self.settings.request_log_limit
            self._state.debounce_clock = self._initial_debounce_clock
            mode, scale = self._initial_clock
            self.clock.set_mode(mode, scale)
            self._keys.reset()
            self._faults.clear()
            self._journal.clear()
            self._clock_watches += 1  # a watcher of the test before must not move this test's clock
            self._runner.reset()
            self._scheduler.reset()
            self._state.reset()
            if self._httpserver is not None:
                self._httpserver.clear_log()
                self._httpserver.clear_handler_errors()

    def _sleep(self, seconds: float) -> None:
        """Sleep real seconds without holding the lock; wakes early when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _in_background(self, work: Callable[[], object], name: str) -> None:
        """Run server work in a thread of its own, counted as busy until it ends."""
        self._dispatcher.enter_busy()

        def target() -> None:
            try:
                work()
            finally:
                self._dispatcher.leave_busy()

        threading.Thread(target=target, name=name, daemon=True).start()

    def _trim_http_log(self) -> None:
        # pytest-httpserver keeps its own log too; trim it for the same reason.
        if self._httpserver is not None:
            self._httpserver.clear_log()

    # ---------------------------------------------------------------- settings kept elsewhere

    @property
    def request_log_limit(self) -> int | None:
        """Keep at most this many entries in :attr:`requests` (None: keep all)."""
        return self._journal.limit

    @request_log_limit.setter
    def request_log_limit(self, limit: int | None) -> None:
        self.settings.request_log_limit = limit
        self._journal.limit = limit

    @property
    def debounce_clock(self) -> Callable[[], float] | None:
        """A separate clock (seconds) for the debounce window; None: the stand-in clock."""
        return self._state.debounce_clock

    @debounce_clock.setter
    def debounce_clock(self, clock: Callable[[], float] | None) -> None:
        self._state.debounce_clock = clock

    # ---------------------------------------------------------------- configuration

    def add_tap(self, tap: StandInTap | None = None, /, **fields: Any) -> StandInTap:
        """Register (or replace) a tap and return the stored object.

        Pass a :class:`StandInTap`, or its fields as keyword arguments (``name`` is required then).
        The returned object is live: changing its fields changes later runs. The tap's
        ``target_pipeline`` is registered as a pipeline with the defaults unless it already is.
        """
        if tap is None:
            tap = StandInTap(**fields)
        elif fields:
            tap = dataclasses.replace(tap, **fields)
        return self._state.add_tap(tap)

    def tap(self, name: str) -> StandInTap:
        """Return the stored tap (KeyError if unknown)."""
        with self._state.lock:
            return self._state.taps[name]

    def add_pipeline(
        self,
        name: str,
        *,
        outcome: str = "success",
        error: str = DEFAULT_PIPELINE_ERROR,
        warning: str = DEFAULT_PIPELINE_WARNING,
        loader: str | None = "PostgresLoader",
        job_start_seconds: float = 0.0,
        job_seconds: float | None = DEFAULT_JOB_SECONDS,
        dataset: str | None = DEFAULT_DATASET,
        catalog: str | None = None,
        data_type: str = "csv",
        records: int | None = None,
        archive_entries: int | list[str] = 1,
    ) -> StandInPipeline:
        """Register (or replace) a pipeline configuration and return the stored, live object.

        See :class:`StandInPipeline` for the fields. ``dataset`` defaults to
        ``postgres:datris.public.<name>``; pass None for a pipeline without a dataset in lineage.
        """
        pipeline = StandInPipeline(
            name=name,
            outcome=outcome,
            error=error,
            warning=warning,
            loader=loader,
            job_start_seconds=job_start_seconds,
            job_seconds=job_seconds,
            dataset=dataset,
            catalog=catalog,
            data_type=data_type,
            records=records,
            archive_entries=list(archive_entries) if isinstance(archive_entries, list) else archive_entries,
        )
        return self._state.add_pipeline(pipeline)

    def pipeline(self, name: str) -> StandInPipeline:
        """Return the stored pipeline, including one registered implicitly by a tap (KeyError if unknown)."""
        with self._state.lock:
            self._state.register_tap_pipelines_locked()
            return self._state.pipelines[name]

    def require_api_keys(self, enabled: bool = True) -> None:
        """Turn ``useApiKeys`` on or off. Off (the default) allows everything, key or no key."""
        self._keys.keys_required = enabled

    def add_api_key(
        self,
        value: str,
        *,
        label: str,
        capabilities: tuple[str, ...] | list[str] = ("*:*",),
        revoked: bool = False,
    ) -> None:
        """Register an API key.

        :param value: the secret sent in ``x-api-key``.
        :param label: the key's label (reported in 403 bodies, matched by ``owner=self``).
        :param capabilities: capability strings such as ``tap:run`` or ``tap:run:owner=self``.
        :param revoked: a revoked key gets 401.
        """
        self._keys.add(value, label, capabilities, revoked)

    def revoke_api_key(self, value: str) -> None:
        """Mark a registered key as revoked."""
        self._keys.revoke(value)

    def key_store_down(self, down: bool = True) -> None:
        """Simulate an unreadable key store: requests carrying a key get 503 while keys are on."""
        self._keys.store_down = down

    def set_service_health(self, service: str, status: str, message: str | None = None) -> None:
        """What ``GET /health/services`` reports for one backend (``up``, ``down``, ``not_configured``)."""
        if status not in HEALTH_STATUSES:
            raise ValueError(f"status must be one of {HEALTH_STATUSES}, not {status!r}")
        health = {"status": status} if message is None else {"status": status, "message": message}
        with self._state.lock:
            self._state.service_health[service] = health

    # ---------------------------------------------------------------- other clients and cron

    def other_client_run(
        self,
        tap_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        when: str = "now",
        after_seconds: float | None = None,
    ) -> ScriptRun | None:
        """Start a run of ``tap_name`` by another client, exactly like an accepted ``POST /tap/run``
        with ``mode=run`` from someone else (debounce, ``lastRunStatus``, run log, jobs).

        :param tap_name: the tap (KeyError if unknown).
        :param params: the run's ``params`` object.
        :param when: ``now`` (start it at once, in the background); ``on_tap_read`` (start it while
            answering the next ``GET /tap?name=<tap>``, so that answer already shows
            ``lastRunStatus: running``); ``before_next_run`` (when the next ``POST /tap/run`` for the
            tap arrives, accept this run first, so the arriving call is answered ``debounced``);
            ``after`` (``after_seconds`` stand-in seconds from now).
        :param after_seconds: with ``when="after"`` only.
        :return: for ``now``, the accepted run (None when the debounce window turned it away);
            None for the other modes.
        """
        if when not in OTHER_RUN_MOMENTS:
            raise ValueError(f"when must be one of {OTHER_RUN_MOMENTS}, not {when!r}")
        if (when == "after") != (after_seconds is not None):
            raise ValueError('after_seconds goes with when="after", and when="after" needs after_seconds')
        if after_seconds is not None and not after_seconds >= 0:
            raise ValueError(f"after_seconds cannot be negative, not {after_seconds!r}")
        with self._state.lock:
            if tap_name not in self._state.taps:
                raise KeyError(f"no tap named {tap_name!r}; add it with add_tap() first")
            run_params = dict(params or {})
            if when == "now":
                run = self._runner.start_in_background(tap_name, run_params, client="other")
                return None if run is None else dataclasses.replace(run)
            if when == "on_tap_read":
                self._runner.on_tap_read.setdefault(tap_name, []).append(run_params)
            elif when == "before_next_run":
                self._runner.before_next_run.setdefault(tap_name, []).append(run_params)
            else:
                self._scheduler.schedule_run(tap_name, run_params, float(after_seconds or 0.0))
        return None

    def fire_cron(self, tap_name: str) -> ScriptRun | None:
        """Fire one cron run of the tap now, as Datris's scheduler does: ``mode=run``, no params, no
        debounce, ``lastRunTrigger: cron``. The stand-in's scheduler also fires enabled cron taps by
        itself, on its clock.

        :return: the accepted run, or None when the tap is running (the scheduler skips it then).
        """
        with self._state.lock:
            if tap_name not in self._state.taps:
                raise KeyError(f"no tap named {tap_name!r}; add it with add_tap() first")
            run = self._scheduler.fire_cron(tap_name)
            return None if run is None else dataclasses.replace(run)

    # ---------------------------------------------------------------- fault injection

    def fail(
        self,
        route: str,
        status: int,
        times: int = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``route`` with ``status``; the real handler does not run.

        :param route: e.g. ``"POST /tap/run"``.
        :param status: the HTTP status to answer with.
        :param times: how many calls the fault applies to.
        :param body: a str/bytes body, or an object sent as JSON; default: a JSON error body.
        :param headers: extra headers, e.g. ``{"Retry-After": "2"}`` for a 429.
        """
        self._faults.add(route, InjectedFault("fail", times, status=status, body=body, headers=dict(headers or {})))

    def delay(self, route: str, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` (real time) before handling the next ``times`` calls of ``route`` normally."""
        self._faults.add(route, InjectedFault("delay", times, seconds=seconds))

    def reset(self, route: str, times: int = 1) -> None:
        """Cut the TCP connection of the next ``times`` calls of ``route`` without any HTTP response."""
        self._faults.add(route, InjectedFault("reset", times))

    def html(self, route: str, status: int = 502, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with a proxy's HTML error page."""
        self._faults.add(route, InjectedFault("html", times, status=status))

    def garbage(self, route: str, body: str = "not json", status: int = 200, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with a body that is not (complete) JSON."""
        self._faults.add(route, InjectedFault("garbage", times, status=status, body=body))

    def proxy_timeout(self, route: str = "POST /tap/run", times: int = 1, after_seconds: float = 0.0) -> None:
        """Model a proxy cutting a blocking call: the request is handled for real in a background
        thread (it finishes and writes its run-log row and jobs as usual) while the client gets a
        504 HTML page after ``after_seconds`` (real time). Use :meth:`wait_until_idle` to wait for
        the real work.
        """
        self._faults.add(route, InjectedFault("proxy_timeout", times, status=504, seconds=after_seconds))

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()

    # ---------------------------------------------------------------- inspection

    @property
    def journal(self) -> Journal:
        """What the stand-in received and did, with assertion helpers (see :class:`Journal`)."""
        return self._journal

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order (the live list)."""
        return self._journal.requests

    @property
    def uploads(self) -> list[RecordedUpload]:
        """Every uploaded file part, in arrival order (the live list)."""
        return self._journal.uploads

    @property
    def kills(self) -> list[str]:
        """The pipeline tokens of the jobs killed so far, in order (the live list)."""
        return self._state.kills

    def calls(self, route: str) -> list[RecordedRequest]:
        """The recorded requests of one route, e.g. ``calls("POST /tap/run")``."""
        return self._journal.calls(route)

    def events(self, publisher_token: str) -> list[dict[str, Any]]:
        """The stored status events of a publisher token (copies, ascending)."""
        return self._state.events_of_publisher(publisher_token)

    def jobs(self, publisher_token: str) -> list[StandInJob]:
        """Snapshots of the jobs submitted under a publisher token, in submission order."""
        return self._state.jobs_of_publisher(publisher_token)

    def job(self, pipeline_token: str) -> StandInJob:
        """A snapshot of one job (KeyError if unknown)."""
        with self._state.lock:
            self._state.catch_up_locked()
            return dataclasses.replace(self._state.jobs[pipeline_token])

    def run_logs(self, tap_name: str) -> list[dict[str, Any]]:
        """Every run-log row of a tap, newest first, without ``pipelineRollup`` (not capped at 50)."""
        return self._state.run_log_fields(tap_name)

    def script_runs(self, tap_name: str | None = None) -> list[ScriptRun]:
        """The accepted (not debounced) runs, oldest first, optionally for one tap."""
        return self._journal.script_runs(tap_name)

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Block until no request handling is in progress, including runs detached by
        :meth:`proxy_timeout`. Raises TimeoutError after ``timeout`` seconds."""
        if not self._dispatcher.wait_until_idle(timeout):
            raise TimeoutError(f"stand-in Datris still busy after {timeout} s")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` holds; it is checked after every change of the stand-in's state
        or clock. Raises TimeoutError after ``timeout`` real seconds.

        Example: ``datris.wait_for(lambda: datris.run_logs("orders")[0]["status"] == "success")``.
        """
        deadline = time.monotonic() + timeout
        with self._state.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the condition did not hold within {timeout} s")
                # Time passing on a scaled clock notifies nobody: look again now and then.
                self._state.changed.wait(min(remaining, _WAIT_FOR_RECHECK_SECONDS))

    def advance_clock_when(self, predicate: Callable[[], bool], seconds: float, *, timeout: float = 60.0) -> None:
        """Advance the clock by ``seconds`` as soon as ``predicate()`` holds (watched in the background),
        and at the latest after ``timeout`` real seconds, so a test whose condition never comes fails
        on its assertions instead of hanging on a clock that stands still. Lets a DAG test on a paused
        clock say "this job ends once those polls have failed" without guessing at wall-clock times."""
        self._once(predicate, timeout, lambda: self.clock.advance(seconds))

    def hold_clock_until(self, predicate: Callable[[], bool], *, timeout: float = 60.0) -> None:
        """Stop the stand-in's time now, and let it run again (scaled) once ``predicate()`` holds, at the
        latest after ``timeout`` real seconds. Jobs started meanwhile stay where they are: "this load is
        still running when the retry looks" holds however slow the machine is."""
        self.clock.pause()
        self._once(predicate, timeout, self.clock.resume)

    def _once(self, predicate: Callable[[], bool], timeout: float, action: Callable[[], object]) -> None:
        watches = self._clock_watches

        def watch() -> None:
            with suppress(TimeoutError):
                self.wait_for(lambda: predicate() or self._clock_watches != watches, timeout)
            with self._state.lock:
                if self._clock_watches == watches:
                    action()

        threading.Thread(target=watch, name="stand-in-datris clock watcher", daemon=True).start()

    def wait_until_running(self, tap_name: str, timeout: float = 10.0) -> None:
        """Block until a run of ``tap_name`` is in its script phase (any mode).
        Raises TimeoutError after ``timeout`` seconds."""
        if not self._state.wait_for(lambda: self._state.running_runs.get(tap_name, 0) > 0, timeout):
            raise TimeoutError(f"no run of tap {tap_name!r} started within {timeout} s")
