"""Runs a tap for an Airflow task, in the worker or deferred to the triggerer.

It wires the run-tracking core to the task log, XComs and extra links, and maps Datris errors to
Airflow's retry rules: what a retry cannot fix fails with ``AirflowFailException``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from datris_provider._compat import AirflowFailException
from datris_provider.client.errors import DatrisError, DatrisRunFailedError, DatrisTransientError
from datris_provider.core.listeners import LogListener
from datris_provider.core.outcome import rollup_is_done
from datris_provider.core.params import validate_tap_params
from datris_provider.core.steps import drive
from datris_provider.core.tap_run import (
    PipelineFollower,
    TapRunResult,
    TapRunSpec,
    TapRunTracker,
    finish_pipeline,
    kill_jobs,
    plan_run,
    report_script,
)
from datris_provider.hooks.datris import DatrisHook
from datris_provider.links import JOB_URL_KEY, TAP_RUN_URL_KEY, job_url, tap_run_url

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow.sdk import Context

    from datris_provider.client.models import Rollup
    from datris_provider.operators.tap import DatrisRunTapOperator


class TaskRunListener(LogListener):
    """Also pushes the tokens and the job link to XCom as soon as they are known."""

    def __init__(self, log: logging.Logger | Any, context: Context, *, ui_url: str) -> None:
        super().__init__(log)
        self._context = context
        self._ti = context["ti"]
        self._ui_url = ui_url

    def tokens_known(self, publisher_token: str | None, pipeline_tokens: Sequence[str], pipeline: str | None) -> None:
        self._ti.xcom_push(key="publisher_token", value=publisher_token)
        self._ti.xcom_push(key="pipeline_tokens", value=list(pipeline_tokens))
        if pipeline_tokens and pipeline:
            self._ti.xcom_push(key=JOB_URL_KEY, value=job_url(self._ui_url, pipeline_tokens[0], pipeline))
        super().tokens_known(publisher_token, pipeline_tokens, pipeline)
        if publisher_token:
            record_attempt(self._context, publisher_token, "following")

    def pipeline_ended(self, publisher_token: str) -> None:
        record_attempt(self._context, publisher_token, "judged")


ATTEMPT_STATE_KEY = "datris_run"


def record_attempt(context: Context, publisher_token: str, state: str) -> None:
    """Keep, across this task's attempts, which run it started and whether it saw that run end.

    Uses Airflow's task state store (3.3+); on older Airflow, retries fall back to the run history.
    """
    store = context.get("task_state_store")
    if store is None:
        return
    try:
        store.set(ATTEMPT_STATE_KEY, {"publisher_token": publisher_token, "state": state})
    except Exception as err:  # a missing state backend must not fail the run
        logging.getLogger(__name__).debug("Could not record the Datris run in the task state: %s", err)


def previous_attempt(context: Context) -> dict[str, Any] | None:
    store = context.get("task_state_store")
    if store is None:
        return None
    try:
        value = store.get(ATTEMPT_STATE_KEY)
    except Exception:
        return None
    return value if isinstance(value, dict) else None


@contextmanager
def airflow_errors() -> Iterator[None]:
    """Let retryable Datris errors retry; fail for good on the ones a retry cannot fix."""
    try:
        yield
    except DatrisError as err:
        if not err.retryable:
            raise AirflowFailException(str(err)) from None
        raise


def build_spec(operator: DatrisRunTapOperator, context: Context) -> TapRunSpec:
    return TapRunSpec(
        tap_name=operator.tap_name,
        params=validate_tap_params(operator.tap_params, owner=f"{operator.task_id}: tap_params"),
        wait_for_completion=operator.wait_for_completion,
        poll_interval=operator.poll_interval or 15.0,
        timeout=operator.timeout,
        no_job_timeout=operator.no_job_timeout or 300.0,
        max_poll_failures=operator.max_poll_failures,
        is_retry=(context["ti"].try_number or 1) > 1,
        previous_attempt=previous_attempt(context) if (context["ti"].try_number or 1) > 1 else None,
    )


def _start(operator: DatrisRunTapOperator, context: Context) -> tuple[TapRunSpec, DatrisHook, TaskRunListener]:
    spec = build_spec(operator, context)
    hook = DatrisHook(operator.datris_conn_id)
    ui_url = hook.settings.datris_ui_url
    context["ti"].xcom_push(key=TAP_RUN_URL_KEY, value=tap_run_url(ui_url, spec.tap_name))
    # Known once jobs exist; pushed empty now so the link finds a value on every path.
    context["ti"].xcom_push(key=JOB_URL_KEY, value="")
    listener = TaskRunListener(operator.log, context, ui_url=ui_url)
    if spec.is_retry and context.get("task_state_store") is None:
        listener.warning(
            "This Airflow (before 3.3) keeps no task state between tries: this retry recognises the "
            "previous attempt's run only while Datris is still loading it; a run that already ended "
            "is not recognised, and the tap runs again."
        )
    return spec, hook, listener


def _finish(operator: DatrisRunTapOperator, context: Context, result: TapRunResult) -> dict[str, Any]:
    from datris_provider.assets import keep_outlets

    kept, notes = keep_outlets(list(operator.outlets), result.status, {job["pipeline"] for job in result.jobs})
    for note in notes:
        operator.log.info("%s", note)
    operator.outlets = kept
    operator._result = result.as_dict()
    ti = context["ti"]
    ti.xcom_push(key="row_count", value=result.row_count)
    ti.xcom_push(key="duration_ms", value=result.duration_ms)
    operator.log.info(
        "Datris tap '%s' finished: %s, %d row(s), %d ms.",
        result.tap_name,
        result.status,
        result.row_count,
        result.duration_ms,
    )
    return result.as_dict()


# -- in the worker -----------------------------------------------------------------------------


def run_tap_for_task(operator: DatrisRunTapOperator, context: Context) -> dict[str, Any]:
    """Run the tap in this worker, waiting here for its pipeline."""
    with airflow_errors():
        spec, hook, listener = _start(operator, context)
        tracker = TapRunTracker(hook.client, spec, listener)
        operator._tracker = tracker
        result = tracker.run()
    return _finish(operator, context, result)


# -- deferred ----------------------------------------------------------------------------------


def _deadline_at(operator: DatrisRunTapOperator, context: Context, spec: TapRunSpec) -> float | None:
    """Wall-clock end of the wait: the ``timeout``, and ``execution_timeout`` counted from the task's
    start, which Airflow does not apply while a task is deferred."""
    candidates = []
    if spec.timeout is not None:
        candidates.append(time.time() + spec.timeout)
    start = getattr(context["ti"], "start_date", None)
    if operator.execution_timeout is not None and start is not None:
        candidates.append((start + operator.execution_timeout).timestamp())
    return min(candidates) if candidates else None


def defer_tap_run(operator: DatrisRunTapOperator, context: Context) -> None:
    """Check the tap in the worker (quick calls), then hand the blocking run call to the triggerer."""
    from datris_provider.triggers.datris import DatrisTapRunTrigger

    with airflow_errors():
        spec, hook, listener = _start(operator, context)
        plan = drive(plan_run(spec, listener), hook.client, time.sleep)
    resume: dict[str, Any] = {
        "spec": spec.to_json(),
        "started_at": time.time(),
        "try_number": context["ti"].try_number,
    }
    if plan.previous_run is not None:
        # Nothing to start: follow the previous attempt's run at once.
        after_script(
            operator, context, {"status": "script_done", "outcome": plan.previous_run.to_json(), "resume": resume}
        )
        return
    operator.defer(
        trigger=DatrisTapRunTrigger(
            datris_conn_id=operator.datris_conn_id, spec=spec.to_json(), plan=plan.to_json(), resume=resume
        ),
        method_name="execute_after_script",
    )


def stale_event(event: Any, context: Context, log: logging.Logger | Any) -> bool:
    """True when Airflow resumed this try with the trigger event of an earlier try.

    Airflow 3.0 and 3.1.0 keep a deferred task's ``next_method`` across a retry (apache/airflow#56704,
    fixed in 3.1.1): the retry would judge the failed try's event again instead of starting over.
    """
    resume = event.get("resume") if isinstance(event, dict) else None
    deferred_in = resume.get("try_number") if isinstance(resume, dict) else None
    current = context["ti"].try_number
    if deferred_in is None or deferred_in == current:
        return False
    log.warning(
        "Airflow resumed try %s with the trigger event of try %s (a bug of Airflow before 3.1.1); "
        "starting this try from the beginning.",
        current,
        deferred_in,
    )
    return True


def check_event(event: dict[str, Any] | None, allowed: set[str]) -> dict[str, Any]:
    """Fail closed on anything but an expected event carrying the task's state."""
    if not isinstance(event, dict) or event.get("status") not in allowed or not isinstance(event.get("resume"), dict):
        raise AirflowFailException(f"The Datris trigger ended with an event the task does not understand: {event!r}.")
    if event["status"] == "error":
        message = str(event.get("message", "unknown error"))
        if not event.get("retryable", False):
            raise AirflowFailException(message)
        if event.get("error_class") == "DatrisTransientError":
            raise DatrisTransientError(message)
        raise DatrisRunFailedError(message)
    return event


def after_script(operator: DatrisRunTapOperator, context: Context, event: dict[str, Any] | None) -> dict[str, Any]:
    """The script phase has ended: print its log, judge it, then defer the pipeline wait."""
    from datris_provider.core.outcome import ScriptOutcome
    from datris_provider.triggers.datris import DatrisPipelineTrigger

    event = check_event(event, {"script_done", "error"})
    spec, started_at = event["resume"]["spec"], float(event["resume"]["started_at"])
    run_spec = TapRunSpec.from_json(spec)
    hook = DatrisHook(operator.datris_conn_id)
    listener = TaskRunListener(operator.log, context, ui_url=hook.settings.datris_ui_url)
    with airflow_errors():
        outcome = ScriptOutcome.from_json(event["outcome"])
        must_follow, result = report_script(run_spec, outcome, listener)
    if not must_follow or outcome.publisher_token is None:
        result.duration_ms = int((time.time() - started_at) * 1000)
        return _finish(operator, context, result)
    # A pipeline already finished is completed here, without a second deferral.
    follower = PipelineFollower.for_spec(run_spec, listener)
    with airflow_errors():
        try:
            status = hook.client.get_pipeline_status(outcome.publisher_token)
        except DatrisTransientError as err:
            listener.warning(f"Could not read the pipeline yet, the trigger will: {err}")
        else:
            follower.stream(status.events)
            if rollup_is_done(status.rollup, outcome.pipeline_tokens):
                finish_pipeline(run_spec, result, status.rollup, listener)
                result.duration_ms = int((time.time() - started_at) * 1000)
                return _finish(operator, context, result)
    operator.defer(
        trigger=DatrisPipelineTrigger(
            datris_conn_id=operator.datris_conn_id,
            publisher_token=outcome.publisher_token,
            expected_tokens=list(outcome.pipeline_tokens),
            poll_interval=run_spec.poll_interval,
            no_job_timeout=run_spec.no_job_timeout,
            max_poll_failures=run_spec.max_poll_failures,
            deadline_at=_deadline_at(operator, context, run_spec),
            what=f"The pipeline of tap '{run_spec.tap_name}'",
            cursor=follower.cursor.to_json(),
            kill_on_timeout=True,
            resume={
                "spec": spec,
                "started_at": started_at,
                "result": result.as_dict(),
                "try_number": context["ti"].try_number,
            },
        ),
        method_name="execute_complete",
    )
    raise AssertionError("unreachable: defer() raises")


def end_of_deferred_wait(
    hook: DatrisHook,
    listener: TaskRunListener | Any,
    event: dict[str, Any],
    token: str | None,
    *,
    poll_interval: float,
    by_pipeline_token: bool = False,
    kill_on_timeout: bool = True,
) -> Rollup:
    """After a pipeline trigger's event: print the events the trigger did not, kill on timeout (unless
    the trigger did, or the jobs are not this task's), and return the terminal rollup (errors are
    raised as Airflow should see them)."""
    from datris_provider.client.models import Rollup
    from datris_provider.core.log_stream import EventCursor

    follower = PipelineFollower(
        listener,
        poll_interval=poll_interval,
        no_job_timeout=0,
        max_poll_failures=0,
        cursor=EventCursor(event.get("cursor")),
    )
    if token:
        try:
            follower.stream(hook.client.get_pipeline_status(token, by_pipeline_token=by_pipeline_token).events)
        except DatrisError as err:
            listener.warning(f"Could not read the last Datris events: {err}")
    if event["status"] == "timeout":
        if kill_on_timeout and not event.get("killed"):
            drive(
                kill_jobs(list(event.get("unfinished") or []), listener, clock=time.monotonic), hook.client, time.sleep
            )
        raise AirflowFailException(str(event.get("message", "The Datris wait timed out.")))
    with airflow_errors():
        return Rollup.parse(event["rollup"])


def after_pipeline(operator: DatrisRunTapOperator, context: Context, event: dict[str, Any] | None) -> dict[str, Any]:
    """The pipeline wait has ended: print the events the trigger did not, then judge the outcome."""
    event = check_event(event, {"done", "timeout", "error"})
    resume = event["resume"]
    run_spec = TapRunSpec.from_json(resume["spec"])
    run_result = TapRunResult.from_json(resume["result"])
    hook = DatrisHook(operator.datris_conn_id)
    listener = TaskRunListener(operator.log, context, ui_url=hook.settings.datris_ui_url)
    rollup = end_of_deferred_wait(
        hook, listener, event, run_result.publisher_token, poll_interval=run_spec.poll_interval
    )
    with airflow_errors():
        finish_pipeline(run_spec, run_result, rollup, listener)
    run_result.duration_ms = int((time.time() - float(resume["started_at"])) * 1000)
    return _finish(operator, context, run_result)
