"""A tap run for an Airflow task: in the worker, or deferred to the triggerer in two steps.

Deferred, the blocking run call happens in :class:`~datris_provider.triggers.datris.DatrisTapRunTrigger`
(which also does any wait for a busy tap), then the pipeline wait in the shared
:mod:`~datris_provider.lifecycle.wait`. Both modes share the spec, the attempt record, the listener,
the script report and the finish step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datris_provider.core.busy import resolve_if_busy
from datris_provider.lifecycle import wait
from datris_provider.lifecycle.attempts import TAP_RUN_KEY, AttemptLedger
from datris_provider.lifecycle.errors import airflow_errors
from datris_provider.lifecycle.events import SCRIPT_EVENTS, WAIT_EVENTS, read_event
from datris_provider.lifecycle.listener import TaskRunListener
from datris_provider.links import JOB_URL_KEY, TAP_RUN_URL_KEY, tap_run_url

if TYPE_CHECKING:
    from airflow.sdk import Context

    from datris_provider.core.outcome import ScriptOutcome
    from datris_provider.core.tap_run import TapRunResult, TapRunSpec, TapRunTracker
    from datris_provider.hooks.datris import DatrisHook
    from datris_provider.lifecycle.events import TriggerEnd
    from datris_provider.operators.tap import DatrisRunTapOperator


@dataclass
class TapTask:
    """What one try of a tap task holds while it runs (for ``on_kill``)."""

    spec: TapRunSpec
    hook: DatrisHook
    listener: TaskRunListener
    ledger: AttemptLedger
    tracker: TapRunTracker | None = None


def _spec(operator: DatrisRunTapOperator, context: Context, previous: dict[str, Any] | None) -> TapRunSpec:
    from datris_provider.core.params import validate_tap_params
    from datris_provider.core.tap_run import TapRunSpec

    owner = f"{operator.task_id}: tap_params"
    params = validate_tap_params(operator.tap_params, owner=owner)
    try_number = context["ti"].try_number or 1
    settings = operator.wait_settings
    return TapRunSpec(
        tap_name=operator.tap_name,
        params=params,
        wait_for_completion=operator.wait_for_completion,
        poll_interval=settings.poll_interval,
        timeout=settings.timeout,
        no_job_timeout=settings.no_job_timeout,
        max_poll_failures=settings.max_poll_failures,
        is_retry=try_number > 1,
        previous_attempt=previous if try_number > 1 else None,
        if_busy=resolve_if_busy(operator.if_busy, params, owner=f"{operator.task_id}"),
        busy_timeout=operator.busy_timeout,
        keeps_task_state=context.get("task_state_store") is not None,
    )


def _listener(operator: DatrisRunTapOperator, context: Context, hook: DatrisHook, ledger: AttemptLedger) -> Any:
    return TaskRunListener(operator.log, context, ui_url=hook.settings.datris_ui_url, ledger=ledger)


def start(operator: DatrisRunTapOperator, context: Context) -> TapTask:
    """The checks and set-up every mode makes before the run: spec, connection, links, attempt record."""
    from datris_provider.hooks.datris import DatrisHook

    ledger = AttemptLedger(context, TAP_RUN_KEY)
    previous = ledger.claim()
    spec = _spec(operator, context, previous)
    hook = DatrisHook(operator.datris_conn_id)
    ui_url = hook.settings.datris_ui_url
    context["ti"].xcom_push(key=TAP_RUN_URL_KEY, value=tap_run_url(ui_url, spec.tap_name))
    # Known once jobs exist; pushed empty now so the link finds a value on every path.
    context["ti"].xcom_push(key=JOB_URL_KEY, value="")
    listener = _listener(operator, context, hook, ledger)
    if spec.is_retry and not ledger.available and not spec.params:
        listener.warning(
            "This Airflow (before 3.3) keeps no task state between tries: this retry recognises the "
            "previous attempt's run only while Datris is still loading it; a run that already ended "
            "is not recognised, and the tap runs again."
        )
    task = TapTask(spec, hook, listener, ledger)
    operator._datris_task = task
    return task


def run_in_worker(operator: DatrisRunTapOperator, context: Context) -> dict[str, Any]:
    """Run the tap in this worker, waiting here for its pipeline."""
    from datris_provider.core.tap_run import TapRunTracker

    with airflow_errors():
        task = start(operator, context)
        task.tracker = TapRunTracker(task.hook.client, task.spec, task.listener)
        result = task.tracker.run()
    return finish(operator, context, result)


def defer_run(operator: DatrisRunTapOperator, context: Context) -> dict[str, Any] | None:
    """Check the tap in the worker (quick calls), then hand the blocking run call to the triggerer."""
    from datris_provider.core.steps import drive
    from datris_provider.core.tap_run import plan_run
    from datris_provider.triggers.datris import DatrisTapRunTrigger

    with airflow_errors():
        task = start(operator, context)
        plan = drive(plan_run(task.spec, task.listener), task.hook.client, time.sleep)
    resume: dict[str, Any] = {
        "spec": task.spec.to_json(),
        "started_at": plan.previous_started_at or time.time(),
        "try_number": context["ti"].try_number,
    }
    if plan.previous_run is not None:
        # Nothing to start: follow the previous attempt's run at once.
        return _after_script(operator, context, task, plan.previous_run, resume)
    if not plan.join_in_flight:
        task.ledger.write("posting", known_run_times=list(plan.known_run_times), started_at=time.time(), deferred=True)
    operator.defer(
        trigger=DatrisTapRunTrigger(
            datris_conn_id=operator.datris_conn_id, spec=task.spec.to_json(), plan=plan.to_json(), resume=resume
        ),
        method_name="execute_after_script",
    )
    return None


def after_script(operator: DatrisRunTapOperator, context: Context, event: Any) -> dict[str, Any]:
    """Deferred: the script phase has ended in the triggerer; report it, then wait for the pipeline."""
    from datris_provider.core.outcome import ScriptOutcome
    from datris_provider.core.tap_run import TapRunSpec
    from datris_provider.hooks.datris import DatrisHook

    end = read_event(event, SCRIPT_EVENTS)
    ledger = AttemptLedger(context, TAP_RUN_KEY)
    hook = DatrisHook(operator.datris_conn_id)
    task = TapTask(TapRunSpec.from_json(end.resume["spec"]), hook, _listener(operator, context, hook, ledger), ledger)
    operator._datris_task = task
    _print_notes(task.listener, end)
    with airflow_errors():
        end.raise_if_error()
        outcome = ScriptOutcome.from_json(end.outcome or {})
    return _after_script(operator, context, task, outcome, end.resume)


def _print_notes(listener: TaskRunListener, end: TriggerEnd) -> None:
    for level, text in end.notes:
        getattr(listener, level if level in ("info", "warning", "error") else "info")(text)


def _target(spec: TapRunSpec, result: TapRunResult) -> wait.WaitTarget:
    return wait.WaitTarget(
        token=result.publisher_token or "",
        what=f"The pipeline of tap '{spec.tap_name}'",
        expected_tokens=tuple(result.pipeline_tokens),
    )


def _after_script(
    operator: DatrisRunTapOperator,
    context: Context,
    task: TapTask,
    outcome: ScriptOutcome,
    resume: dict[str, Any],
) -> dict[str, Any]:
    from datris_provider.core.tap_run import finish_pipeline, report_script

    with airflow_errors():
        must_follow, result = report_script(task.spec, outcome, task.listener)
    started_at = float(resume["started_at"])
    if not must_follow or outcome.publisher_token is None:
        result.duration_ms = int((time.time() - started_at) * 1000)
        return finish(operator, context, result)
    target = _target(task.spec, result)
    follower = operator.wait_settings.follower(task.listener)
    rollup = wait.done_already(task.hook, target, follower)
    if rollup is None:
        wait.defer_wait(
            operator,
            context,
            target,
            operator.wait_settings,
            follower,
            conn_id=operator.datris_conn_id,
            resume={**resume, "result": result.as_dict()},
            method_name="execute_complete",
        )
    with airflow_errors():
        finish_pipeline(task.spec, result, rollup, task.listener)
    result.duration_ms = int((time.time() - started_at) * 1000)
    return finish(operator, context, result)


def after_pipeline(operator: DatrisRunTapOperator, context: Context, event: Any) -> dict[str, Any]:
    """Deferred: the pipeline wait has ended; print the events, then judge the run."""
    from datris_provider.core.tap_run import TapRunResult, TapRunSpec, finish_pipeline
    from datris_provider.hooks.datris import DatrisHook

    end = read_event(event, WAIT_EVENTS)
    spec = TapRunSpec.from_json(end.resume["spec"])
    result = TapRunResult.from_json(end.resume["result"])
    ledger = AttemptLedger(context, TAP_RUN_KEY)
    hook = DatrisHook(operator.datris_conn_id)
    listener = _listener(operator, context, hook, ledger)
    operator._datris_task = TapTask(spec, hook, listener, ledger)
    rollup = wait.resume_wait(hook, _target(spec, result), operator.wait_settings, end, listener)
    with airflow_errors():
        finish_pipeline(spec, result, rollup, listener)
    result.duration_ms = int((time.time() - float(end.resume["started_at"])) * 1000)
    return finish(operator, context, result)


def finish(operator: DatrisRunTapOperator, context: Context, result: TapRunResult) -> dict[str, Any]:
    operator._result = result.as_dict()
    return wait.complete(
        operator,
        context,
        result.as_dict(),
        landed_pipelines={job["pipeline"] for job in result.jobs},
        summary=(
            f"Datris tap '{result.tap_name}' finished: {result.status}, {result.row_count} row(s), "
            f"{result.duration_ms} ms."
        ),
    )


def on_kill(operator: DatrisRunTapOperator) -> None:
    """Stop the wait and kill the run's unfinished jobs, unless a newer try of the task owns the run."""
    task = operator._datris_task
    if task is None or task.tracker is None:
        return
    wait.stop_and_kill(task.tracker.signal, task.hook, task.tracker.unfinished_tokens(), task.listener, task.ledger)
