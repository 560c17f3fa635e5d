"""One tap run, as ``TapRunner`` does it: debounce, the blocking script phase, staging and the run log.

No HTTP here: the tap-run route turns a request body into a call of :meth:`TapRunner.run` and sends
back the payload it returns.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datris_provider.testing.auth import ANONYMOUS
from datris_provider.testing.model import DatrisError, ScriptRun, StandInTap
from datris_provider.testing.wire import (
    drop_nulls,
    format_datris_time,
    gson_dumps,
    param_value_text,
    seconds_text,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from datris_provider.testing.auth import Caller
    from datris_provider.testing.clock import StandInClock
    from datris_provider.testing.state import StandInState

__all__ = ["DEFAULT_TEST_LIMIT", "TapRunner", "param_env", "parse_test_limit", "preview_records"]

# Tap param keys become environment variable names, so the server refuses anything else.
PARAM_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_TEST_LIMIT = 20
PREVIEW_RECORDS_MAX = 20
# How often (real seconds) a run held by a gate checks the stand-in clock for its time limit.
_GATE_CHECK_SECONDS = 0.02


def parse_test_limit(raw: Any, error_style: str) -> int | None:
    """``testLimit`` for test runs: absent → 20; 0 or negative → no limit; not a number → 400.

    Older controllers (the ``stacktrace`` generation) do not read it at all: no limit.
    """
    if error_style == "stacktrace":
        return None
    if raw is None:
        return DEFAULT_TEST_LIMIT
    number: float | None
    if isinstance(raw, bool):
        number = None
    elif isinstance(raw, (int, float)):
        number = float(raw)
    else:
        try:
            number = float(str(raw).strip())
        except ValueError:
            number = None
    if number is None or math.isnan(number):
        raise DatrisError(f"testLimit must be a number, got '{raw}'", status=400)
    return int(number) if number > 0 else None


def param_env(params: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """Build the ``DATRIS_TAP_PARAM_<key>`` variables; an invalid key fails the run."""
    env: dict[str, str] = {}
    for raw_key, value in params.items():
        key = str(raw_key).strip()
        if not key:
            continue  # empty keys are skipped, not refused
        if not PARAM_KEY_PATTERN.match(key):
            return env, (
                f"Invalid tap param key '{key}': keys must match {PARAM_KEY_PATTERN.pattern} "
                "because they become environment variable names"
            )
        env[f"DATRIS_TAP_PARAM_{key}"] = param_value_text(value)
    return env, None


def preview_records(tap: StandInTap, count: int) -> list[dict[str, Any]]:
    """The records (or documents) the stand-in "script" returns."""
    if tap.tap_type == "document":
        return [
            {"documentName": f"{tap.name}-document-{index + 1}.pdf", "sizeBytes": 20_480 * (index + 1)}
            for index in range(count)
        ]
    return [{"id": index + 1, "amount": round(9.5 + index * 1.25, 2), "status": "paid"} for index in range(count)]


@dataclass
class _AcceptedRun:
    """A run past the tap lookup, the owner check and the debounce: its script is about to start."""

    tap: StandInTap
    settings: StandInTap
    run: ScriptRun
    mode: str
    start_ms: int
    generation: int
    param_error: str | None


class TapRunner:
    """Runs taps against a :class:`StandInState`, on the stand-in clock.

    :param state: the state the runs read and write.
    :param clock: the stand-in clock (script durations, debounce, run times).
    :param stopped: True once the server stops (sleeping scripts then finish early).
    :param background: runs a callable in a background thread, counted as busy by the server.
    """

    def __init__(
        self,
        state: StandInState,
        clock: StandInClock,
        stopped: Callable[[], bool],
        background: Callable[[Callable[[], object], str], None],
    ) -> None:
        self.state = state
        self.clock = clock
        self.stopped = stopped
        self.background = background
        # Runs of other clients waiting for their moment, per tap: their params.
        self.before_next_run: dict[str, list[dict[str, Any]]] = {}
        self.on_tap_read: dict[str, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        """Forget the runs waiting for their moment (the state lock is held by the caller)."""
        self.before_next_run.clear()
        self.on_tap_read.clear()

    def run(
        self,
        name: str,
        mode: str,
        params: dict[str, Any],
        test_limit: int | None,
        caller: Caller,
        *,
        client: str = "airflow",
        unsaved: StandInTap | None = None,
    ) -> dict[str, Any]:
        """Run a tap and return the ``/tap/run`` answer; DatrisError for what the controller throws.

        :param unsaved: the tap to run when ``name`` is not stored (``POST /tap/test`` runs the
            configuration it is sent).
        """
        with self.state.lock:
            if client == "airflow" and mode == "run":
                for other_params in self.before_next_run.pop(name, []):
                    self.start_in_background(name, other_params, client="other")
            accepted = self._accept_locked(name, mode, params, test_limit, caller, client, unsaved)
        if isinstance(accepted, dict):
            return accepted
        return self._execute(accepted)

    def start_in_background(self, name: str, params: dict[str, Any], *, client: str) -> ScriptRun | None:
        """Accept a ``mode=run`` run now (as an arriving POST would be) and run its script in the
        background. Returns the accepted run, or None when it was debounced."""
        with self.state.lock:
            accepted = self._accept_locked(name, "run", params, None, ANONYMOUS, client)
        if isinstance(accepted, dict):
            return None
        self.background(lambda: self._execute(accepted), f"stand-in-datris {client} run of {name}")
        return accepted.run

    def start_waiting_on_read(self, name: str) -> None:
        """``GET /tap`` for this tap arrived: start the runs that wait for it, before it is answered."""
        with self.state.lock:
            for other_params in self.on_tap_read.pop(name, []):
                self.start_in_background(name, other_params, client="other")

    def _accept_locked(
        self,
        name: str,
        mode: str,
        params: dict[str, Any],
        test_limit: int | None,
        caller: Caller,
        client: str,
        unsaved: StandInTap | None = None,
    ) -> _AcceptedRun | dict[str, Any]:
        state = self.state
        # Building the script environment is where an invalid param key fails the run.
        env, param_error = param_env(params)
        tap = state.taps.get(name, unsaved)
        if tap is None:
            raise DatrisError(f"Tap: {name} not found")
        if not caller.owner_allowed("tap", "run", tap.owner):
            raise DatrisError(
                f"capability denied: key '{caller.label}' does not hold capability 'tap:run' "
                f"for the targeted resource (scope: owner={tap.owner})"
            )
        # Cron runs skip the debounce.
        if mode == "run" and client != "cron":
            debounced = self._debounce_locked(tap, mode)
            if debounced is not None:
                return debounced
        start_ms = state.now_ms()
        run = ScriptRun(
            tap_name=tap.name,
            mode=mode,
            params=dict(params),
            env=env,
            test_limit=test_limit,
            run_time=format_datris_time(start_ms),
            client=client,
            started_at_ms=start_ms,
        )
        state.script_runs.append(run)
        if mode == "run":
            tap.last_run_status = "running"
            tap.last_run_time = run.run_time
            tap.last_run_trigger = "cron" if client == "cron" else "manual"
        state.running_runs[tap.name] = state.running_runs.get(tap.name, 0) + 1
        state.changed.notify_all()
        # Copy what the script phase needs, so it never reads shared state without the lock.
        return _AcceptedRun(tap, dataclasses.replace(tap), run, mode, start_ms, state.generation, param_error)

    def _execute(self, accepted: _AcceptedRun) -> dict[str, Any]:
        state = self.state
        error = accepted.param_error
        try:
            if error is None:
                error = self._run_script(accepted.settings, accepted.mode)
        finally:
            with state.changed:
                if accepted.generation == state.generation:
                    state.running_runs[accepted.tap.name] -= 1
                state.changed.notify_all()
        return self._finish(accepted, error)

    def _debounce_locked(self, tap: StandInTap, mode: str) -> dict[str, Any] | None:
        """The atomic check-and-set of the debounce map."""
        state = self.state
        window = state.settings.debounce_seconds
        if window <= 0:
            return None
        now = state.debounce_clock() if state.debounce_clock is not None else self.clock.now()
        last_start = state.debounce_started.get(tap.name)
        if last_start is not None and now - last_start < window:
            ago_ms = int((now - last_start) * 1000)
            window_ms = int(window * 1000)
            return drop_nulls(
                {
                    "tap": tap.name,
                    "description": tap.description,
                    "status": "skipped",
                    "mode": mode,
                    "targetPipeline": tap.target_pipeline,
                    "persisted": False,
                    "persistedReason": "debounced",
                    "recordCount": 0,
                    "error": (
                        f"Tap '{tap.name}' was triggered {ago_ms} ms ago; ignoring this duplicate "
                        f"request (debounce window: {window_ms} ms). Wait for the window to pass "
                        "before triggering the tap again."
                    ),
                }
            )
        state.debounce_started[tap.name] = now
        return None

    def _script_limit_seconds(self, mode: str) -> float:
        settings = self.state.settings
        if settings.legacy_version or mode == "test":
            return settings.tap_script_timeout_seconds
        return settings.tap_run_timeout_seconds

    def _run_script(self, tap: StandInTap, mode: str) -> str | None:
        """The script phase: block like the real script would. Returns an error text or None."""
        limit = self._script_limit_seconds(mode)
        deadline = self.clock.now() + limit
        timed_out = False
        if tap.gate is not None:
            # The gate is a real event; the time limit is on the stand-in clock.
            while not tap.gate.wait(_GATE_CHECK_SECONDS):
                if self.stopped():
                    break
                if self.clock.now() >= deadline:
                    timed_out = True
                    break
        if not timed_out:
            if self.clock.now() + tap.script_seconds > deadline:
                self.clock.wait_until(deadline, self.stopped)
                timed_out = True
            else:
                self.clock.sleep(tap.script_seconds, self.stopped)
        if timed_out:
            legacy = self.state.settings.legacy_version
            limit_name = "TAP_SCRIPT_TIMEOUT_SECONDS" if mode == "test" or legacy else "TAP_RUN_TIMEOUT_SECONDS"
            return (
                f"Tap script timed out after {seconds_text(limit)} seconds ({mode} mode; raise {limit_name}, "
                "or chunk the source range via run_tap params)"
            )
        return tap.error

    def _finish(self, accepted: _AcceptedRun, error: str | None) -> dict[str, Any]:
        state = self.state
        tap, settings, run, mode = accepted.tap, accepted.settings, accepted.run, accepted.mode
        start_ms, generation = accepted.start_ms, accepted.generation
        script_started = accepted.param_error is None
        is_document_tap = settings.tap_type == "document"
        data_type = "document" if is_document_tap else settings.data_type
        returned = 0 if error is not None else settings.records
        if mode == "test" and run.test_limit is not None:
            returned = min(returned, run.test_limit)
        persisted = mode == "run" and bool(settings.target_pipeline) and error is None and returned > 0
        persisted_reason = _persisted_reason(persisted, mode, error, returned, settings.target_pipeline)

        run_status = "failure" if error is not None else ("no_records" if returned == 0 else "success")
        logs = self._script_logs(settings, returned, error, start_ms, data_type) if script_started else None
        columns = ["id", "amount", "status"] if data_type == "csv" and error is None else None

        preview: list[dict[str, Any]] | None = None
        truncated: bool | None = None
        if mode != "run" and error is None:
            preview = preview_records(settings, min(returned, PREVIEW_RECORDS_MAX))
            # The preview is "cut" when the script had more records than it shows.
            truncated = True if settings.records > len(preview) else None

        publisher_token: str | None = None
        pipeline_tokens: list[str] = []
        with state.lock:
            if generation != state.generation:
                return {"tap": settings.name, "status": "failure", "error": "server state was reset"}
            if persisted:
                job_count = settings.documents if is_document_tap else 1
                if job_count > 0:
                    publisher_token = str(uuid.uuid4())
                    for index in range(job_count):
                        pipeline_tokens.append(self._submit_job_locked(settings, publisher_token, index, returned))
            duration_ms = max(0, state.now_ms() - start_ms)
            submitted = len(pipeline_tokens) if (is_document_tap and mode == "run") else returned
            state.write_run_log_locked(
                settings.name,
                start_ms,
                {
                    "tapName": settings.name,
                    "runTime": run.run_time,
                    "status": run_status,
                    "recordCount": submitted,
                    "dataType": data_type,
                    "logs": logs,
                    "error": error,
                    "mode": mode,
                    "durationMs": duration_ms,
                    "publisherToken": publisher_token,
                },
            )
            live_tap = state.taps.get(settings.name, tap)
            _update_tap_after_run(live_tap, mode, run, run_status, returned, error, data_type, columns)
            run.status = run_status
            run.publisher_token = publisher_token
            run.error = error
            run.record_count = returned
            run.ended_at_ms = state.now_ms()
            state.changed.notify_all()

        return drop_nulls(
            {
                "tap": settings.name,
                "description": settings.description,
                "status": "failure" if error is not None else "success",
                "mode": mode,
                "targetPipeline": settings.target_pipeline,
                "persisted": persisted,
                "persistedReason": persisted_reason,
                "publisherToken": publisher_token,
                "pipelineTokens": pipeline_tokens or None,
                "records": preview,
                "recordsTruncated": truncated,
                "recordCount": returned,
                "error": error,
                "logs": logs,
                "dataType": data_type,
                "columns": columns,
            }
        )

    def _script_logs(self, tap: StandInTap, returned: int, error: str | None, start_ms: int, data_type: str) -> str:
        if tap.logs is not None:
            return "\n".join(tap.logs)
        lines = ["[wrapper] loading tap script", "[wrapper] calling fetch()"]
        seconds = max(0, self.state.now_ms() - start_ms) / 1000
        if error is not None:
            lines.append(f"[wrapper] fetch() failed after {seconds:.2f}s: {error}")
        elif data_type == "document":
            lines.append(f"[wrapper] fetch() returned {returned} document(s) in {seconds:.2f}s")
        else:
            lines.append(f"[wrapper] fetch() returned {returned} {data_type} record(s) in {seconds:.2f}s")
        return "\n".join(lines)

    def _submit_job_locked(self, tap: StandInTap, publisher_token: str, index: int, returned: int) -> str:
        """StreamNotifier's work inside the run request: three events and a queued job."""
        is_document = tap.tap_type == "document"
        job = self.state.new_job(
            publisher_token,
            str(tap.target_pipeline),
            tap.name,
            record_count=1 if is_document else returned,
            data_type="document" if is_document else tap.data_type,
            outcome=tap.pipeline_outcome,
            pipeline_error=tap.pipeline_error,
            pipeline_warning=tap.pipeline_warning,
            loader=tap.loader,
            job_start_seconds=tap.job_start_seconds,
            job_seconds=tap.job_seconds,
        )
        if is_document:
            staged_name = f"{tap.name}-document-{index + 1}.pdf"
            payload_size = 20_480 * (index + 1)
        else:
            staged_name = f"tap-{tap.name}.json"
            payload_size = len(gson_dumps(preview_records(tap, returned)))
        self.state.stage_job_locked(job, staged_name, payload_size)
        return job.pipeline_token


def _persisted_reason(
    persisted: bool, mode: str, error: str | None, returned: int, target_pipeline: str | None
) -> str | None:
    """The first reason that applies, in the server's order."""
    if persisted:
        return None
    if mode != "run":
        return "test_mode"
    if error is not None:
        return "run_error"
    if returned == 0:
        return "no_records"
    if not target_pipeline:
        return "no_target_pipeline"
    return "unknown"


def _update_tap_after_run(
    tap: StandInTap,
    mode: str,
    run: ScriptRun,
    run_status: str,
    returned: int,
    error: str | None,
    data_type: str,
    columns: list[str] | None,
) -> None:
    if mode == "run":
        tap.last_run_status = run_status
        tap.last_run_time = run.run_time
        tap.last_run_record_count = returned
        tap.last_run_error = error
        tap.last_run_data_type = data_type
        tap.last_run_columns = columns
    else:
        tap.last_test_run_status = "failure" if error is not None else "success"
        tap.last_test_run_time = run.run_time
        tap.last_test_run_record_count = returned
        tap.last_test_run_error = error
        tap.last_test_run_data_type = data_type
