"""The tap run as the Datris server really behaves, followed from start to terminal state.

1. Plan: a tap Datris schedules itself (cron, enabled) is refused before anything runs; a run
   already in flight (or, on a retry, a previous run still being loaded) is joined, not repeated.
2. ``POST /tap/run`` blocks until the script ends. A cut call is never repeated: the run is found
   through ``GET /tap`` and ``GET /tap/logs`` instead.
3. The script outcome is judged from ``status``/``persisted``/``persistedReason``.
4. The pipeline is polled until every job is terminal, each event streamed once, every wait bounded.

Each step is a generator of commands (see :mod:`datris_provider.core.steps`), so the operator, the
triggers and the sensor share this one copy of the rules.
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
from datris_provider.core.outcome import ScriptOutcome, jobs_summary, judge_rollup, judge_script, rollup_is_done
from datris_provider.core.steps import Call, Sleep, Steps, drive

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from datris_provider.client.api import DatrisClient
    from datris_provider.client.models import (
        KillAnswer,
        PipelineEvent,
        PipelineStatus,
        Rollup,
        RunLogEntry,
        TapConfig,
    )

# Checks of an idle tap before concluding that a cut run call never reached Datris.
IDLE_CHECKS_BEFORE_NOT_FOUND = 3
# How long after the script limit a cut run is still looked for (staging happens after the script).
FIND_RUN_MARGIN_SECONDS = 300.0


class RunListener(Protocol):
    """Where the core reports progress: the Airflow task log and XComs, or a test's list."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def tokens_known(
        self, publisher_token: str | None, pipeline_tokens: Sequence[str], pipeline: str | None
    ) -> None: ...

    def pipeline_ended(self, publisher_token: str) -> None: ...


@dataclass(frozen=True)
class TapRunSpec:
    """What to run and how long to wait.

    :param tap_name: the Datris tap.
    :param params: checked per-run parameters.
    :param wait_for_completion: follow the pipeline to its end, or return once jobs are submitted.
    :param poll_interval: seconds between status polls.
    :param timeout: seconds the pipeline wait may take (``None``: no bound beyond the server's own).
    :param no_job_timeout: seconds a publisher token may show no job before the wait fails.
    :param max_poll_failures: consecutive failed polls tolerated before the wait fails.
    :param is_retry: an Airflow retry: join a previous attempt's run still being processed.
    :param previous_attempt: what an earlier attempt of this task recorded about its run
        (``{"publisher_token", "state"}``, state ``following`` or ``judged``), when Airflow keeps task
        state; it tells this attempt's own run from anyone else's.
    """

    tap_name: str
    params: dict[str, Any] = field(default_factory=dict)
    wait_for_completion: bool = True
    poll_interval: float = 15.0
    timeout: float | None = None
    no_job_timeout: float = 300.0
    max_poll_failures: int = 5
    is_retry: bool = False
    previous_attempt: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TapRunSpec:
        return cls(**data)


@dataclass(frozen=True)
class RunPlan:
    """What the checks before a run decided: start a run, join one in flight, or follow a previous one."""

    script_limit_seconds: float
    known_run_times: tuple[str, ...]
    target_pipeline: str | None
    join_in_flight: bool = False
    previous_run: ScriptOutcome | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["known_run_times"] = list(self.known_run_times)
        data["previous_run"] = None if self.previous_run is None else self.previous_run.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunPlan:
        previous = data.get("previous_run")
        return cls(
            script_limit_seconds=float(data["script_limit_seconds"]),
            known_run_times=tuple(data["known_run_times"]),
            target_pipeline=data.get("target_pipeline"),
            join_in_flight=bool(data.get("join_in_flight", False)),
            previous_run=None if previous is None else ScriptOutcome.from_json(previous),
        )


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TapRunResult:
        return cls(**data)


# -- step 1: plan ------------------------------------------------------------------------------


def refuse_if_datris_scheduled(tap: TapConfig) -> None:
    """The one-scheduler rule: a tap with a cron that Datris will fire belongs to Datris."""
    if tap.scheduled_by_datris:
        raise DatrisScheduledTapError(
            f"Tap '{tap.name}' is Datris-scheduled (cron '{tap.cron_expression}'), so Datris's own "
            "scheduler already fires it and triggering it from Airflow would run it twice. Remove the "
            "tap's cron in Datris to let Airflow drive it, or remove this task and let Datris run it."
        )


def plan_run(spec: TapRunSpec, listener: RunListener) -> Steps[RunPlan]:
    """Read the server's limits and the tap, refuse a Datris-scheduled tap, and spot runs to join."""
    version = yield Call("get_version")
    tap = yield Call("get_tap", (spec.tap_name,))
    refuse_if_datris_scheduled(tap)
    history: list[RunLogEntry] = yield Call("get_tap_logs", (spec.tap_name,))
    plan = RunPlan(
        script_limit_seconds=float(version.run_script_limit_seconds),
        known_run_times=tuple(entry.run_time for entry in history),
        target_pipeline=tap.target_pipeline,
    )
    if tap.is_running:
        listener.warning(
            f"Tap '{tap.name}' is already running on Datris; following that run instead of starting a second one."
        )
        return RunPlan(plan.script_limit_seconds, plan.known_run_times, plan.target_pipeline, join_in_flight=True)
    if spec.is_retry:
        previous = _previous_attempts_run(spec, history, listener)
        if previous is not None:
            outcome = ScriptOutcome.from_run_log(previous, target_pipeline=plan.target_pipeline)
            return RunPlan(plan.script_limit_seconds, plan.known_run_times, plan.target_pipeline, previous_run=outcome)
    return plan


def _previous_attempts_run(
    spec: TapRunSpec, history: Sequence[RunLogEntry], listener: RunListener
) -> RunLogEntry | None:
    """The run an earlier attempt started and did not see to its end, if a retry should follow it.

    With the task state Airflow keeps (3.3+), the earlier attempt's own publisher token is known: its
    run is followed unless its pipeline failed (then a fresh run is the point of the retry), and a run
    the earlier attempt already judged is never followed again (a cleared task runs anew). Without it,
    the newest run still being processed is followed.
    """
    recorded = spec.previous_attempt or {}
    token = recorded.get("publisher_token")
    if token:
        if recorded.get("state") != "following":
            return None
        previous = next((entry for entry in history if entry.publisher_token == token), None)
        if previous is None or previous.rollup is None:
            listener.warning(f"The previous attempt's run ({token}) is not in the tap's recent history; starting anew.")
            return None
        if previous.rollup.all_done and previous.rollup.status == "error":
            listener.warning(f"The previous attempt's run ({token}) ended in a pipeline error; starting a new run.")
            return None
        listener.warning(
            f"This is a retry: following the previous attempt's run of tap '{spec.tap_name}' ({previous.run_time}, "
            f"pipeline {previous.rollup.status}) instead of starting another."
        )
        return previous
    previous = next((entry for entry in history if entry.mode == "run"), None)
    rollup = previous.rollup if previous else None
    if previous and previous.publisher_token and rollup and rollup.jobs and not rollup.all_done:
        listener.warning(
            f"This is a retry and the previous run of tap '{spec.tap_name}' ({previous.run_time}) is still "
            "being processed by its pipeline; following it instead of starting another."
        )
        return previous
    return None


# -- step 2: start, or find --------------------------------------------------------------------


def start_run(spec: TapRunSpec, plan: RunPlan, listener: RunListener, *, recheck: bool) -> Steps[ScriptOutcome]:
    """Start the run (or join the one the plan names) and return the end of its script phase.

    :param recheck: look for a run started since the plan before posting. A trigger sets it: if the
        triggerer restarts it after it posted, it must find that run rather than post again.
    """
    if plan.previous_run is not None:
        return plan.previous_run
    if plan.join_in_flight:
        return (yield from find_run_after(spec, plan, listener, reason="a run was already in flight"))
    if recheck:
        tap = yield Call("get_tap", (spec.tap_name,))
        history: list[RunLogEntry] = yield Call("get_tap_logs", (spec.tap_name,))
        if tap.is_running or _new_run(history, plan) is not None:
            listener.warning(f"A run of tap '{spec.tap_name}' started since this task checked; following it.")
            return (yield from find_run_after(spec, plan, listener, reason="a run had started since the check"))
    listener.info(
        f"Running Datris tap '{spec.tap_name}' (the call returns when the tap script ends, "
        f"up to {plan.script_limit_seconds:g} s)."
    )
    try:
        response = yield Call(
            "run_tap", (spec.tap_name, spec.params), {"script_limit_seconds": plan.script_limit_seconds}
        )
    except DatrisRunCallInterrupted as err:
        listener.warning(f"{err} Not starting another run: looking for this one through GET /tap and GET /tap/logs.")
        return (yield from find_run_after(spec, plan, listener, reason=str(err)))
    return ScriptOutcome.from_response(response)


def _new_run(history: Sequence[RunLogEntry], plan: RunPlan) -> RunLogEntry | None:
    newest_known = max(plan.known_run_times, default="")
    return next(
        (
            entry
            for entry in history
            if entry.mode == "run" and entry.run_time not in plan.known_run_times and entry.run_time >= newest_known
        ),
        None,
    )


def find_run_after(spec: TapRunSpec, plan: RunPlan, listener: RunListener, *, reason: str) -> Steps[ScriptOutcome]:
    """Wait for a run newer than the plan's history to end its script phase, and read its run-log row."""
    waited = 0.0
    bound = plan.script_limit_seconds + FIND_RUN_MARGIN_SECONDS
    idle_checks = 0
    while True:
        try:
            tap = yield Call("get_tap", (spec.tap_name,))
            history = [] if tap.is_running else (yield Call("get_tap_logs", (spec.tap_name,)))
        except DatrisTransientError as err:
            listener.warning(f"Looking for the run failed, trying again: {err}")
        else:
            if not tap.is_running:
                new_run = _new_run(history, plan)
                if new_run is not None:
                    listener.info(f"Found the run of tap '{spec.tap_name}' that started at {new_run.run_time}.")
                    return ScriptOutcome.from_run_log(new_run, target_pipeline=plan.target_pipeline)
                idle_checks += 1
                if idle_checks >= IDLE_CHECKS_BEFORE_NOT_FOUND:
                    raise DatrisRunNotFoundError(
                        f"Tap '{spec.tap_name}' is idle and its run history shows no new run after the run call "
                        f"ended ({reason}): the run never started on Datris. An Airflow retry may start it."
                    )
        if waited >= bound:
            raise DatrisWaitTimeoutError(
                f"Tap '{spec.tap_name}' was still running {bound:g} s after the run call was cut."
            )
        yield Sleep(spec.poll_interval)
        waited += spec.poll_interval


# -- step 3: the script's outcome --------------------------------------------------------------


def report_script(spec: TapRunSpec, outcome: ScriptOutcome, listener: RunListener) -> tuple[bool, TapRunResult]:
    """Stream the script's log, judge its outcome, and say whether a pipeline must be followed."""
    for line in iter_lines(outcome.logs):
        listener.info(f"[tap {spec.tap_name}] {line}")
    verdict = judge_script(spec.tap_name, outcome)
    if verdict.warning:
        listener.warning(verdict.warning)
    result = TapRunResult(
        tap_name=spec.tap_name,
        status=verdict.final_status,
        publisher_token=outcome.publisher_token,
        pipeline_tokens=list(outcome.pipeline_tokens),
        row_count=outcome.record_count,
        persisted=outcome.persisted,
        persisted_reason=outcome.persisted_reason,
    )
    track = verdict.track and outcome.publisher_token is not None
    if track:
        listener.tokens_known(outcome.publisher_token, outcome.pipeline_tokens, outcome.target_pipeline)
        if not spec.wait_for_completion:
            result.status = "submitted"
    return track and spec.wait_for_completion, result


# -- step 4: the pipeline ----------------------------------------------------------------------


class PipelineFollower:
    """Polls one publisher token to a terminal state, streaming each new event exactly once.

    :param listener: receives the event lines.
    :param poll_interval: seconds between polls.
    :param no_job_timeout: seconds the token may show no job before the wait fails.
    :param max_poll_failures: failed polls in a row tolerated.
    :param clock: returns seconds; deadlines are in the same clock.
    :param cursor: events already streamed (restored after a deferral).
    """

    def __init__(
        self,
        listener: RunListener,
        *,
        poll_interval: float,
        no_job_timeout: float,
        max_poll_failures: int,
        clock: Callable[[], float] = time.monotonic,
        cursor: EventCursor | None = None,
    ) -> None:
        self.listener = listener
        self.poll_interval = poll_interval
        self.no_job_timeout = no_job_timeout
        self.max_poll_failures = max_poll_failures
        self.clock = clock
        self.cursor = cursor or EventCursor()
        self.last_rollup: Rollup | None = None

    @classmethod
    def for_spec(
        cls, spec: TapRunSpec, listener: RunListener, *, clock: Callable[[], float] = time.monotonic
    ) -> PipelineFollower:
        """A follower with the spec's poll interval and bounds."""
        return cls(
            listener,
            poll_interval=spec.poll_interval,
            no_job_timeout=spec.no_job_timeout,
            max_poll_failures=spec.max_poll_failures,
            clock=clock,
        )

    def follow(
        self,
        token: str,
        expected_tokens: Sequence[str],
        *,
        deadline_at: float | None,
        what: str,
        by_pipeline_token: bool = False,
    ) -> Steps[Rollup]:
        """Poll until every job is terminal; fail on too many failed polls, no jobs, or the deadline."""
        started = self.clock()
        failures = 0
        while True:
            try:
                status: PipelineStatus = yield Call(
                    "get_pipeline_status", (token,), {"by_pipeline_token": by_pipeline_token}
                )
            except DatrisTransientError as err:
                failures += 1
                if failures > self.max_poll_failures:
                    raise DatrisTransientError(
                        f"Gave up polling Datris after {failures} failed polls in a row; last: {err}",
                        status_code=err.status_code,
                        route=err.route,
                    ) from None
                self.listener.warning(f"Polling Datris failed ({failures}/{self.max_poll_failures}): {err}")
            else:
                failures = 0
                self.stream(status.events)
                self.last_rollup = status.rollup
                if rollup_is_done(status.rollup, tuple(expected_tokens)):
                    return status.rollup
                waited = self.clock() - started
                if not status.rollup.jobs and waited > self.no_job_timeout:
                    raise DatrisWaitTimeoutError(
                        f"Token {token} showed no pipeline job for {waited:.0f} s "
                        f"(no_job_timeout={self.no_job_timeout:g} s). Datris does not know this token, or its "
                        "status rows were never written; check the Run History in Datris."
                    )
            if deadline_at is not None and self.clock() >= deadline_at:
                raise DatrisWaitTimeoutError(
                    f"{what} did not finish in time; last state: {self.describe_last_rollup()}."
                )
            yield Sleep(self.poll_interval)

    def stream(self, events: Sequence[PipelineEvent]) -> None:
        for event in self.cursor.new_events(events):
            line = describe_event(event)
            if event.code == "error":
                self.listener.error(line)
            elif event.code == "warning":
                self.listener.warning(line)
            else:
                self.listener.info(line)

    def unfinished_tokens(self, fallback: Sequence[str]) -> list[str]:
        if self.last_rollup is None:
            return list(fallback)
        return [job.pipeline_token for job in self.last_rollup.jobs if not job.finished]

    def describe_last_rollup(self) -> str:
        if self.last_rollup is None:
            return "no status read yet"
        jobs = ", ".join(f"{job.pipeline} {job.status}" for job in self.last_rollup.jobs) or "no jobs"
        return f"{self.last_rollup.status} ({jobs})"


def finish_pipeline(spec: TapRunSpec, result: TapRunResult, rollup: Rollup, listener: RunListener) -> TapRunResult:
    """Judge the terminal rollup: raise for an error, warn for a warning, and fill in the result."""
    if result.publisher_token:
        listener.pipeline_ended(result.publisher_token)
    result.pipeline_tokens = [job.pipeline_token for job in rollup.jobs]
    result.pipeline_status = rollup.status
    result.jobs = jobs_summary(rollup)
    warning = judge_rollup(f"tap '{spec.tap_name}'", rollup)
    if warning:
        listener.warning(warning)
        result.status = "warning"
    return result


def kill_jobs(
    tokens: Sequence[str],
    listener: RunListener,
    *,
    clock: Callable[[], float],
    per_call_timeout: float = 1.5,
    budget: float = 4.0,
) -> Steps[list[KillAnswer]]:
    """Ask Datris, once per job and briefly, to kill each job; "not running" answers are normal.

    Airflow leaves a killed task about five seconds, so the calls share ``budget`` seconds and nothing
    waits for the jobs to stop.
    """
    if not tokens:
        listener.info("No Datris pipeline job to kill (the tap script phase cannot be cancelled on Datris).")
        return []
    answers: list[KillAnswer] = []
    ends_at = clock() + budget
    for token in tokens:
        left = ends_at - clock()
        if left <= 0:
            listener.warning(f"No time left to kill Datris job {token}.")
            continue
        try:
            answer = yield Call("kill_job", (token,), {"timeout": min(per_call_timeout, left)})
        except DatrisAuthError as err:
            listener.warning(f"Could not kill Datris job {token}: {err}")
            continue
        answers.append(answer)
        if answer.killed:
            listener.info(f"Asked Datris to kill pipeline job {token}: cancelled.")
        elif answer.answered:
            listener.info(f"Datris did not kill pipeline job {token}: {answer.detail} (normal if it ended).")
        else:
            listener.warning(
                f"Could not reach Datris to kill pipeline job {token} ({answer.detail}); it may still be running: "
                "kill it in the Datris UI."
            )
    return answers


# -- the synchronous run -----------------------------------------------------------------------


class TapRunTracker:
    """Runs one tap and follows it, in this thread. One instance serves one run.

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
        self._pipeline_tokens: list[str] = []
        self.follower = PipelineFollower.for_spec(spec, listener, clock=clock)

    def run(self) -> TapRunResult:
        """Run the tap, stream its logs and wait for its pipeline as the spec says."""
        started = self._clock()
        plan = self._drive(plan_run(self.spec, self.listener))
        outcome = self._drive(start_run(self.spec, plan, self.listener, recheck=False))
        must_follow, result = report_script(self.spec, outcome, self.listener)
        if must_follow and outcome.publisher_token is not None:
            self._pipeline_tokens = list(outcome.pipeline_tokens)
            deadline = None if self.spec.timeout is None else self._clock() + self.spec.timeout
            rollup = self._drive(
                self.follower.follow(
                    outcome.publisher_token,
                    outcome.pipeline_tokens,
                    deadline_at=deadline,
                    what=f"The pipeline of tap '{self.spec.tap_name}' (timeout={self.spec.timeout} s)",
                )
            )
            finish_pipeline(self.spec, result, rollup, self.listener)
        result.duration_ms = int((self._clock() - started) * 1000)
        return result

    def stop(self) -> None:
        """Make the wait end at its next step (called from Airflow's ``on_kill``)."""
        self._stop.set()

    def kill_unfinished_jobs(self, *, per_call_timeout: float = 1.5, budget: float = 4.0) -> list[KillAnswer]:
        """Stop waiting and ask Datris to kill every job of this run not finished yet."""
        self.stop()
        tokens = self.follower.unfinished_tokens(self._pipeline_tokens)
        steps = kill_jobs(tokens, self.listener, clock=self._clock, per_call_timeout=per_call_timeout, budget=budget)
        return drive(steps, self.client, time.sleep)

    def _drive(self, steps: Steps[Any]) -> Any:
        self._raise_if_stopped()
        return drive(steps, self.client, self._sleep)

    def _sleep(self, seconds: float) -> None:
        # Waiting on the stop event lets on_kill end the wait at once.
        self._stop.wait(seconds)
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        if self._stop.is_set():
            raise DatrisRunStoppedError(f"Stopped waiting for tap '{self.spec.tap_name}': the task is being killed.")
