"""The tap run as the Datris server really behaves, followed from start to terminal state.

1. Policy: a tap Datris schedules itself (cron, enabled) is refused before anything runs.
2. ``POST /tap/run`` blocks until the script ends. A cut call is never repeated: the run is found
   through ``GET /tap`` and ``GET /tap/logs`` instead.
3. The script outcome is judged from ``status``/``persisted``/``persistedReason``.
4. The pipeline is polled until every job is terminal, each event streamed once, every wait bounded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from datris_provider.client.errors import (
    DatrisAuthError,
    DatrisRunCallInterrupted,
    DatrisRunNotFoundError,
    DatrisRunStoppedError,
    DatrisScheduledTapError,
    DatrisTransientError,
    DatrisWaitTimeoutError,
)
from datris_provider.core.log_stream import EventCursor, describe_event, iter_lines
from datris_provider.core.outcome import (
    ScriptOutcome,
    jobs_summary,
    judge_rollup,
    judge_script,
    rollup_is_done,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from datris_provider.client.api import DatrisClient
    from datris_provider.client.models import KillAnswer, PipelineEvent, Rollup, RunLogEntry, TapConfig

# Checks of an idle tap before concluding that a cut run call never reached Datris.
IDLE_CHECKS_BEFORE_NOT_FOUND = 3


class RunListener(Protocol):
    """Where the core reports progress: the Airflow task log and XComs, or a test's list."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def tokens_known(self, publisher_token: str | None, pipeline_tokens: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class TapRunSpec:
    """What to run and how long to wait.

    :param tap_name: the Datris tap.
    :param params: checked per-run parameters.
    :param wait_for_completion: follow the pipeline to its end, or return once jobs are submitted.
    :param poll_interval: seconds between status polls.
    :param timeout: seconds the whole wait may take (``None``: no bound beyond the server's own).
    :param no_job_timeout: seconds a publisher token may show no job before the wait fails.
    :param max_poll_failures: consecutive failed polls tolerated before the wait fails.
    :param is_retry: an Airflow retry: attach to a previous attempt's run still being processed.
    """

    tap_name: str
    params: dict[str, Any] = field(default_factory=dict)
    wait_for_completion: bool = True
    poll_interval: float = 15.0
    timeout: float | None = None
    no_job_timeout: float = 300.0
    max_poll_failures: int = 5
    is_retry: bool = False


@dataclass
class TapRunResult:
    """The run as downstream tasks see it (the operator's return value)."""

    tap_name: str
    status: str
    publisher_token: str | None = None
    pipeline_tokens: list[str] = field(default_factory=list)
    row_count: int = 0
    duration_ms: int = 0
    persisted: bool = False
    persisted_reason: str | None = None
    pipeline_status: str | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TapRunTracker:
    """Runs one tap and follows it. One instance serves one run.

    :param client: the Datris API client.
    :param spec: what to run and how long to wait.
    :param listener: receives log lines, warnings and the tokens as soon as they are known.
    :param clock: a monotonic clock in seconds (replaced in tests).
    """

    def __init__(
        self,
        client: DatrisClient,
        spec: TapRunSpec,
        listener: RunListener,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.spec = spec
        self.listener = listener
        self._clock = clock
        self._stop = threading.Event()
        self._cursor = EventCursor()
        self._pipeline_tokens: tuple[str, ...] = ()
        self._last_rollup: Rollup | None = None
        self._started_at = 0.0

    # -- public ------------------------------------------------------------------------------

    def run(self) -> TapRunResult:
        """Run the tap, stream its logs and wait for its pipeline as the spec says."""
        self._started_at = self._clock()
        name = self.spec.tap_name
        version = self.client.get_version()
        tap = self.client.get_tap(name)
        self._refuse_if_datris_scheduled(tap)
        history = self.client.get_tap_logs(name)

        outcome = self._attach_to_run_in_flight(tap, history, version.run_script_limit_seconds)
        if outcome is None:
            outcome = self._start_run(tap, history, version.run_script_limit_seconds)

        for line in iter_lines(outcome.logs):
            self.listener.info(f"[tap {name}] {line}")
        verdict = judge_script(name, outcome)
        result = TapRunResult(
            tap_name=name,
            status=verdict.final_status,
            publisher_token=outcome.publisher_token,
            pipeline_tokens=list(outcome.pipeline_tokens),
            row_count=outcome.record_count,
            persisted=outcome.persisted,
            persisted_reason=outcome.persisted_reason,
        )
        if verdict.warning:
            self.listener.warning(verdict.warning)
        if not verdict.track or outcome.publisher_token is None:
            return self._finish(result)

        self._pipeline_tokens = outcome.pipeline_tokens
        self.listener.tokens_known(outcome.publisher_token, outcome.pipeline_tokens)
        if not self.spec.wait_for_completion:
            result.status = "submitted"
            return self._finish(result)

        rollup = self.wait_for_pipeline(outcome.publisher_token, outcome.pipeline_tokens)
        result.pipeline_tokens = [job.pipeline_token for job in rollup.jobs]
        result.pipeline_status = rollup.status
        result.jobs = jobs_summary(rollup)
        warning = judge_rollup(name, rollup)
        if warning:
            self.listener.warning(warning)
            result.status = "warning"
        return self._finish(result)

    def stop(self) -> None:
        """Make the wait loop end at its next step (called from Airflow's ``on_kill``)."""
        self._stop.set()

    def kill_unfinished_jobs(self, *, per_call_timeout: float = 1.5, budget: float = 4.0) -> list[KillAnswer]:
        """Ask Datris, once per job and briefly, to kill every job not finished yet.

        Airflow leaves a killed task about five seconds, so the calls share ``budget`` seconds and
        nothing waits for the jobs to stop. "Not running" answers are normal and only logged.
        """
        self.stop()
        if self._last_rollup is not None:
            tokens = [job.pipeline_token for job in self._last_rollup.jobs if not job.finished]
        else:
            tokens = list(self._pipeline_tokens)
        if not tokens:
            self.listener.info("No Datris pipeline job to kill (the tap script phase cannot be cancelled on Datris).")
            return []
        answers = []
        ends_at = self._clock() + budget
        for token in tokens:
            left = ends_at - self._clock()
            if left <= 0:
                self.listener.warning(f"No time left to kill Datris job {token}.")
                continue
            try:
                answer = self.client.kill_job(token, timeout=min(per_call_timeout, left))
            except DatrisAuthError as err:
                self.listener.warning(f"Could not kill Datris job {token}: {err}")
                continue
            answers.append(answer)
            if answer.killed:
                self.listener.info(f"Asked Datris to kill pipeline job {token}: cancelled.")
            else:
                self.listener.info(f"Datris did not kill pipeline job {token}: {answer.detail} (normal if it ended).")
        return answers

    def wait_for_pipeline(self, publisher_token: str, expected_tokens: tuple[str, ...]) -> Rollup:
        """Poll the publisher token until every job is terminal, streaming each new event once."""
        spec = self.spec
        started = self._clock()
        deadline = None if spec.timeout is None else started + spec.timeout
        failures = 0
        while True:
            self._raise_if_stopped()
            try:
                status = self.client.get_pipeline_status(publisher_token)
            except DatrisTransientError as err:
                failures += 1
                if failures > spec.max_poll_failures:
                    raise DatrisTransientError(
                        f"Gave up polling Datris after {failures} failed polls in a row; last: {err}",
                        status_code=err.status_code,
                        route=err.route,
                    ) from None
                self.listener.warning(f"Polling Datris failed ({failures}/{spec.max_poll_failures}): {err}")
            else:
                failures = 0
                self._stream_events(status.events)
                self._last_rollup = status.rollup
                if rollup_is_done(status.rollup, expected_tokens):
                    return status.rollup
                waited = self._clock() - started
                if not status.rollup.jobs and waited > spec.no_job_timeout:
                    raise DatrisWaitTimeoutError(
                        f"Publisher token {publisher_token} showed no pipeline job for {waited:.0f} s "
                        f"(no_job_timeout={spec.no_job_timeout:g} s). Datris does not know this token, or "
                        "its status rows were never written; check the tap's Run History in Datris."
                    )
            if deadline is not None and self._clock() >= deadline:
                raise DatrisWaitTimeoutError(
                    f"The pipeline of tap '{spec.tap_name}' did not finish within timeout={spec.timeout:g} s; "
                    f"last state: {self._describe_last_rollup()}."
                )
            self._sleep(spec.poll_interval)

    # -- steps -------------------------------------------------------------------------------

    def _refuse_if_datris_scheduled(self, tap: TapConfig) -> None:
        if tap.scheduled_by_datris:
            raise DatrisScheduledTapError(
                f"Tap '{tap.name}' is Datris-scheduled (cron '{tap.cron_expression}'), so Datris's own "
                "scheduler already fires it and triggering it from Airflow would run it twice. Remove the "
                "tap's cron in Datris to let Airflow drive it, or remove this task and let Datris run it."
            )

    def _attach_to_run_in_flight(
        self, tap: TapConfig, history: list[RunLogEntry], script_limit: float
    ) -> ScriptOutcome | None:
        """Join a run already going on rather than start a second one."""
        if tap.is_running:
            self.listener.warning(
                f"Tap '{tap.name}' is already running on Datris; following that run instead of starting a second one."
            )
            return self._find_run_after(tap, history, script_limit, reason="a run was already in flight")
        if self.spec.is_retry:
            previous = _newest_run(history)
            if (
                previous
                and previous.publisher_token
                and previous.rollup
                and previous.rollup.jobs
                and not previous.rollup.all_done
            ):
                self.listener.warning(
                    f"This is a retry and the previous run of tap '{tap.name}' ({previous.run_time}) is "
                    "still being processed by its pipeline; following it instead of starting another."
                )
                return ScriptOutcome.from_run_log(previous, has_target_pipeline=tap.target_pipeline is not None)
        return None

    def _start_run(self, tap: TapConfig, history: list[RunLogEntry], script_limit: float) -> ScriptOutcome:
        self.listener.info(
            f"Running Datris tap '{tap.name}' (the call returns when the tap script ends, up to {script_limit:g} s)."
        )
        try:
            response = self.client.run_tap(tap.name, self.spec.params, script_limit_seconds=script_limit)
        except DatrisRunCallInterrupted as err:
            self.listener.warning(
                f"{err} Not starting another run: looking for this one through GET /tap and GET /tap/logs."
            )
            return self._find_run_after(tap, history, script_limit, reason=str(err))
        return ScriptOutcome.from_response(response)

    def _find_run_after(
        self, tap: TapConfig, history: list[RunLogEntry], script_limit: float, *, reason: str
    ) -> ScriptOutcome:
        """Wait for a run newer than ``history`` to finish its script phase and read its run-log row."""
        known = {entry.run_time for entry in history}
        newest_known = max(known, default="")
        deadline = self._clock() + script_limit + 300.0
        idle_checks = 0
        while True:
            self._raise_if_stopped()
            try:
                current = self.client.get_tap(tap.name)
                entries = [] if current.is_running else self.client.get_tap_logs(tap.name)
            except DatrisTransientError as err:
                self.listener.warning(f"Looking for the run failed, trying again: {err}")
            else:
                if not current.is_running:
                    new_run = next(
                        (
                            e
                            for e in entries
                            if e.mode == "run" and e.run_time not in known and e.run_time >= newest_known
                        ),
                        None,
                    )
                    if new_run is not None:
                        self.listener.info(f"Found the run of tap '{tap.name}' that started at {new_run.run_time}.")
                        return ScriptOutcome.from_run_log(new_run, has_target_pipeline=tap.target_pipeline is not None)
                    idle_checks += 1
                    if idle_checks >= IDLE_CHECKS_BEFORE_NOT_FOUND:
                        raise DatrisRunNotFoundError(
                            f"Tap '{tap.name}' is idle and its run history shows no new run after the run "
                            f"call ended ({reason}): the run never started on Datris. An Airflow retry may "
                            "start it."
                        )
            if self._clock() >= deadline:
                raise DatrisWaitTimeoutError(
                    f"Tap '{tap.name}' was still running {script_limit + 300:g} s after the run call was cut."
                )
            self._sleep(self.spec.poll_interval)

    # -- helpers -----------------------------------------------------------------------------

    def _stream_events(self, events: Sequence[PipelineEvent]) -> None:
        for event in self._cursor.new_events(events):
            line = describe_event(event)
            if event.code == "error":
                self.listener.error(line)
            elif event.code == "warning":
                self.listener.warning(line)
            else:
                self.listener.info(line)

    def _finish(self, result: TapRunResult) -> TapRunResult:
        result.duration_ms = int((self._clock() - self._started_at) * 1000)
        return result

    def _sleep(self, seconds: float) -> None:
        # Waiting on the stop event lets on_kill end the wait at once.
        self._stop.wait(seconds)
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        if self._stop.is_set():
            raise DatrisRunStoppedError(f"Stopped waiting for tap '{self.spec.tap_name}': the task is being killed.")

    def _describe_last_rollup(self) -> str:
        if self._last_rollup is None:
            return "no status read yet"
        jobs = ", ".join(f"{job.pipeline} {job.status}" for job in self._last_rollup.jobs) or "no jobs"
        return f"{self._last_rollup.status} ({jobs})"


def _newest_run(history: list[RunLogEntry]) -> RunLogEntry | None:
    return next((entry for entry in history if entry.mode == "run"), None)
