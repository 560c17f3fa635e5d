"""The tap run as the Datris server really behaves, followed from start to terminal state.

1. Plan: a tap Datris schedules itself (cron, enabled) is refused before anything runs; a busy tap
   is waited for, joined or refused (:mod:`datris_provider.core.busy`); a retry follows only the run
   its own earlier attempt started.
2. ``POST /tap/run`` blocks until the script ends. A cut call is never repeated: the run is found
   through ``GET /tap`` and ``GET /tap/logs`` instead.
3. The script outcome is judged from ``status``/``persisted``/``persistedReason``.
4. The pipeline is polled until every job is terminal, each event streamed once, every wait bounded.

Each step is a generator of commands (see :mod:`datris_provider.core.steps`), so the operator, the
triggers and the sensor share this one copy of the rules.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from datris_provider.client.errors import (
    DatrisRunAmbiguousError,
    DatrisRunCallInterrupted,
    DatrisRunNotFoundError,
    DatrisScheduledTapError,
    DatrisTransientError,
    DatrisWaitTimeoutError,
)
from datris_provider.core.busy import (
    BUSY_WAIT_MARGIN_SECONDS,
    DEBOUNCED,
    FAIL,
    JOIN,
    RUN_IN_FLIGHT,
    WAIT,
    busy_error,
    debounce_left_seconds,
    wait_until_idle,
)
from datris_provider.core.log_stream import iter_lines
from datris_provider.core.outcome import ScriptOutcome, jobs_summary, judge_rollup, judge_script, loaded_nothing
from datris_provider.core.pipeline import PipelineFollower
from datris_provider.core.steps import Call, Sleep, Steps
from datris_provider.core.stopping import StopSignal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from datris_provider.client.api import DatrisClient
    from datris_provider.client.models import (
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

    def posting(self, known_run_times: Sequence[str]) -> None:
        """This task is about to post its own run; ``known_run_times`` tell that run from older ones."""
        ...


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
    :param previous_attempt: what an earlier attempt of this task recorded about its run (an
        attempt record, see :mod:`datris_provider.lifecycle.attempts`), when Airflow keeps task state;
        it tells this task's own run from anyone else's.
    :param if_busy: what to do when the tap is busy with a run this task did not start: ``wait``,
        ``join`` or ``fail`` (see :mod:`datris_provider.core.busy`).
    :param busy_timeout: seconds a ``wait`` may last (``None``: the server's script limit plus a margin).
    :param keeps_task_state: Airflow keeps task state between tries (3.3+), so ``previous_attempt``
        is authoritative; without it a retry with params never follows a run it cannot prove its own.
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
    if_busy: str = JOIN
    busy_timeout: float | None = None
    keeps_task_state: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TapRunSpec:
        return cls(**data)

    def busy_bound(self, script_limit_seconds: float) -> float:
        if self.busy_timeout is not None:
            return self.busy_timeout
        return script_limit_seconds + BUSY_WAIT_MARGIN_SECONDS


@dataclass(frozen=True)
class RunPlan:
    """What the checks before a run decided: start a run, wait for the tap, join one in flight, or
    follow the run an earlier attempt started.

    :param known_run_times: run-log rows present before this task's own run call; a run found after
        a cut call is one of the rows that were not.
    :param busy_reason: set when the tap must be idle before this task posts (``if_busy='wait'``).
    :param previous_started_at: when the earlier attempt whose run is followed started it (epoch s).
    """

    script_limit_seconds: float
    known_run_times: tuple[str, ...]
    target_pipeline: str | None
    join_in_flight: bool = False
    previous_run: ScriptOutcome | None = None
    busy_reason: str | None = None
    previous_started_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["known_run_times"] = list(self.known_run_times)
        data["previous_run"] = None if self.previous_run is None else self.previous_run.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunPlan:
        previous = data.get("previous_run")
        started = data.get("previous_started_at")
        return cls(
            script_limit_seconds=float(data["script_limit_seconds"]),
            known_run_times=tuple(data["known_run_times"]),
            target_pipeline=data.get("target_pipeline"),
            join_in_flight=bool(data.get("join_in_flight", False)),
            previous_run=None if previous is None else ScriptOutcome.from_json(previous),
            busy_reason=data.get("busy_reason"),
            previous_started_at=None if started is None else float(started),
        )

    def with_history(self, history: Sequence[RunLogEntry]) -> RunPlan:
        return replace(self, known_run_times=tuple(entry.run_time for entry in history), busy_reason=None)


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
    """Read the server's limits and the tap, refuse a Datris-scheduled tap, and decide what to run."""
    version = yield Call("get_version")
    # The history before the tap: a run seen in flight then cannot already be in the history read.
    history: list[RunLogEntry] = yield Call("get_tap_logs", (spec.tap_name,))
    tap = yield Call("get_tap", (spec.tap_name,))
    refuse_if_datris_scheduled(tap)
    plan = RunPlan(
        script_limit_seconds=float(version.run_script_limit_seconds),
        known_run_times=tuple(entry.run_time for entry in history),
        target_pipeline=tap.target_pipeline,
    )
    if spec.is_retry:
        followed = _follow_previous_attempt(spec, plan, tap, history, listener)
        if followed is not None:
            return followed
    if tap.is_running:
        return busy_plan(spec, plan, RUN_IN_FLIGHT, listener)
    return plan


def busy_plan(spec: TapRunSpec, plan: RunPlan, reason: str, listener: RunListener) -> RunPlan:
    """Apply the task's ``if_busy`` choice to a tap busy with a run it did not start."""
    if spec.if_busy == FAIL:
        raise busy_error(spec.tap_name, reason, action=FAIL)
    if spec.if_busy == WAIT:
        return replace(plan, busy_reason=reason)
    listener.warning(
        f"Tap '{spec.tap_name}' is busy: {reason}. This task has no tap_params (or if_busy='join'), so it "
        "follows that run instead of starting a second one."
    )
    return replace(plan, join_in_flight=True)


def _follow_previous_attempt(
    spec: TapRunSpec, plan: RunPlan, tap: TapConfig, history: Sequence[RunLogEntry], listener: RunListener
) -> RunPlan | None:
    """The plan that follows the run an earlier attempt of this task started, if a retry should.

    With task state (Airflow 3.3+) the earlier attempt's record is the only evidence taken: a run it
    posted but never saw the end of is followed, unless its pipeline failed (then a fresh run is the
    point of the retry); a run it already judged is never followed again (a cleared task runs anew).
    Without task state, a retry with params follows nothing (it cannot prove a run is its own, and a
    second load beats a window reported loaded that was not); without params, the newest run still
    being loaded is followed.
    """
    recorded = spec.previous_attempt or {}
    state = recorded.get("state")
    if spec.keeps_task_state or recorded:
        if state == "posting":
            return _follow_posted_run(spec, plan, tap, history, recorded, listener)
        if state != "following" or not recorded.get("publisher_token"):
            return None
        token = recorded["publisher_token"]
        previous = next((entry for entry in history if entry.publisher_token == token), None)
        if previous is None or previous.rollup is None:
            listener.warning(f"The previous attempt's run ({token}) is not in the tap's recent history; starting anew.")
            return None
        if loaded_nothing(previous.rollup):
            listener.warning(
                f"The previous attempt's run ({token}) failed in its pipeline and loaded nothing; starting a new run."
            )
            return None
        listener.warning(
            f"This is a retry: following the previous attempt's run of tap '{spec.tap_name}' ({previous.run_time}, "
            f"pipeline {previous.rollup.status}) instead of starting another."
        )
        outcome = ScriptOutcome.from_run_log(previous, target_pipeline=plan.target_pipeline)
        return replace(plan, previous_run=outcome, previous_started_at=recorded.get("started_at"))
    if spec.params:
        listener.warning(
            "This Airflow keeps no task state between tries, so this retry cannot prove which run of tap "
            f"'{spec.tap_name}' its earlier attempt started; with tap_params it starts its own run rather than "
            "report another run as this window's (the window may load twice)."
        )
        return None
    previous = next((entry for entry in history if entry.mode == "run"), None)
    rollup = previous.rollup if previous else None
    if previous and previous.publisher_token and rollup and rollup.jobs and not rollup.all_done:
        listener.warning(
            f"This is a retry and the previous run of tap '{spec.tap_name}' ({previous.run_time}) is still "
            "being processed by its pipeline; following it instead of starting another."
        )
        return replace(plan, previous_run=ScriptOutcome.from_run_log(previous, target_pipeline=plan.target_pipeline))
    return None


def _follow_posted_run(
    spec: TapRunSpec,
    plan: RunPlan,
    tap: TapConfig,
    history: Sequence[RunLogEntry],
    recorded: dict[str, Any],
    listener: RunListener,
) -> RunPlan | None:
    """The earlier attempt posted its run and was stopped before the answer: find that run.

    A deferred attempt posts from the triggerer, after the record was written and maybe after a wait
    for the tap; its record cannot tell its run from another client's, so with params none is taken.
    """
    if recorded.get("deferred") and spec.params:
        listener.warning(
            f"The previous attempt deferred a run of tap '{spec.tap_name}' and was stopped before it ended; "
            "which run it started cannot be proven, so this retry starts its own (the window may load twice)."
        )
        return None
    earlier = RunPlan(
        plan.script_limit_seconds,
        tuple(recorded.get("known_run_times") or ()),
        plan.target_pipeline,
        previous_started_at=recorded.get("started_at"),
    )
    if tap.is_running:
        listener.warning(
            f"This is a retry: the previous attempt posted a run of tap '{spec.tap_name}' and was stopped before "
            "it ended; following that run, which is still in flight."
        )
        return replace(earlier, join_in_flight=True)
    new_runs = _new_runs(history, earlier)
    if len(new_runs) == 1:
        listener.warning(
            f"This is a retry: following the run of tap '{spec.tap_name}' the previous attempt posted "
            f"({new_runs[0].run_time}) instead of starting another."
        )
        outcome = ScriptOutcome.from_run_log(new_runs[0], target_pipeline=plan.target_pipeline)
        return replace(plan, previous_run=outcome, previous_started_at=earlier.previous_started_at)
    if new_runs:
        raise _ambiguous(spec, new_runs)
    listener.warning(
        f"The previous attempt posted a run of tap '{spec.tap_name}', but no such run reached Datris; starting it now."
    )
    return None


# -- step 2: start, or find --------------------------------------------------------------------


def start_run(spec: TapRunSpec, plan: RunPlan, listener: RunListener, *, recheck: bool) -> Steps[ScriptOutcome]:
    """Start this task's run (or join the one the plan names) and return the end of its script phase.

    :param recheck: look again at the tap before posting. A trigger sets it: time has passed since
        the task's checks, and a restarted trigger must not post a second run while its first is in
        flight. With ``if_busy='wait'`` a run found busy is never taken for this task's own, so after a
        triggerer restart during the script phase the window may be loaded twice; it is never lost.
    """
    if plan.previous_run is not None:
        return plan.previous_run
    if plan.join_in_flight:
        return (yield from find_run_after(spec, plan, listener, reason="a run was already in flight"))
    waited = 0.0
    debounce_left = 0.0
    if recheck and plan.busy_reason is None:
        history: list[RunLogEntry] = yield Call("get_tap_logs", (spec.tap_name,))
        tap = yield Call("get_tap", (spec.tap_name,))
        if tap.is_running or _new_runs(history, plan):
            if spec.if_busy == JOIN:
                listener.warning(f"A run of tap '{spec.tap_name}' started since this task checked; following it.")
                return (yield from find_run_after(spec, plan, listener, reason="a run had started since the check"))
            plan = busy_plan(spec, plan.with_history(history), RUN_IN_FLIGHT, listener)
    while True:
        if plan.busy_reason is not None:
            bound = spec.busy_bound(plan.script_limit_seconds)
            _tap, waited = yield from wait_until_idle(
                spec.tap_name,
                plan.busy_reason,
                listener,
                poll_interval=spec.poll_interval,
                bound=bound,
                waited_before=waited,
                first_sleep=debounce_left,
            )
            # Rows the other run wrote are not this task's run, should this call be cut.
            plan = plan.with_history((yield Call("get_tap_logs", (spec.tap_name,))))
        listener.info(
            f"Running Datris tap '{spec.tap_name}' (the call returns when the tap script ends, "
            f"up to {plan.script_limit_seconds:g} s)."
        )
        listener.posting(plan.known_run_times)
        try:
            response = yield Call(
                "run_tap", (spec.tap_name, spec.params), {"script_limit_seconds": plan.script_limit_seconds}
            )
        except DatrisRunCallInterrupted as err:
            listener.warning(
                f"{err} Not starting another run: looking for this one through GET /tap and GET /tap/logs."
            )
            return (yield from find_run_after(spec, plan, listener, reason=str(err)))
        outcome = ScriptOutcome.from_response(response)
        if outcome.status != "skipped" or spec.if_busy == JOIN:
            return outcome
        # A debounced call ran nothing, so posting again once the tap is idle cannot run it twice.
        debounce_left = debounce_left_seconds(outcome.error)
        plan = busy_plan(spec, plan, DEBOUNCED, listener)


def _new_runs(history: Sequence[RunLogEntry], plan: RunPlan) -> list[RunLogEntry]:
    """Runs in ``history`` that ``plan`` did not know, oldest first."""
    newest_known = max(plan.known_run_times, default="")
    fresh = [
        entry
        for entry in history
        if entry.mode == "run" and entry.run_time not in plan.known_run_times and entry.run_time >= newest_known
    ]
    return sorted(fresh, key=lambda entry: entry.run_time)


def _ambiguous(spec: TapRunSpec, runs: Sequence[RunLogEntry]) -> DatrisRunAmbiguousError:
    times = ", ".join(entry.run_time for entry in runs)
    return DatrisRunAmbiguousError(
        f"Tap '{spec.tap_name}' has {len(runs)} new runs ({times}) since this task posted its own, and Datris "
        "cannot say which one carried this task's tap_params. Check the tap's Run History in Datris; clear "
        "the task to run this window again if none of them was its own."
    )


def find_run_after(spec: TapRunSpec, plan: RunPlan, listener: RunListener, *, reason: str) -> Steps[ScriptOutcome]:
    """Wait for a run newer than the plan's history to end its script phase, and read its run-log row.

    A task with params takes a run only when it is the one new run: two new runs could be this task's
    and another client's, and reporting the wrong one would report a window loaded that was not.
    """
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
                new_runs = _new_runs(history, plan)
                if len(new_runs) > 1 and spec.params:
                    raise _ambiguous(spec, new_runs)
                if new_runs:
                    new_run = new_runs[-1]
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


# -- step 4: the pipeline (followed by :class:`~datris_provider.core.pipeline.PipelineFollower`) --


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


def run_duration_ms(plan: RunPlan, measured_ms: int) -> int:
    """How long the run took: measured by this task, unless it follows a run an earlier attempt started."""
    if plan.previous_started_at is None:
        return measured_ms
    return max(measured_ms, int((time.time() - plan.previous_started_at) * 1000))


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
        self.signal = StopSignal(f"tap '{spec.tap_name}'")
        self.pipeline_tokens: list[str] = []
        self.follower = PipelineFollower.for_spec(spec, listener, clock=clock)

    def run(self) -> TapRunResult:
        """Run the tap, stream its logs and wait for its pipeline as the spec says."""
        started = self._clock()
        plan = self.signal.drive(plan_run(self.spec, self.listener), self.client)
        outcome = self.signal.drive(start_run(self.spec, plan, self.listener, recheck=False), self.client)
        must_follow, result = report_script(self.spec, outcome, self.listener)
        if must_follow and outcome.publisher_token is not None:
            self.pipeline_tokens = list(outcome.pipeline_tokens)
            deadline = None if self.spec.timeout is None else self._clock() + self.spec.timeout
            rollup = self.signal.drive(
                self.follower.follow(
                    outcome.publisher_token,
                    outcome.pipeline_tokens,
                    deadline_at=deadline,
                    what=f"The pipeline of tap '{self.spec.tap_name}' (timeout={self.spec.timeout} s)",
                ),
                self.client,
            )
            finish_pipeline(self.spec, result, rollup, self.listener)
        result.duration_ms = run_duration_ms(plan, int((self._clock() - started) * 1000))
        return result

    def unfinished_tokens(self) -> list[str]:
        return self.follower.unfinished_tokens(self.pipeline_tokens)
