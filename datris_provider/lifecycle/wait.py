"""The pipeline wait every Datris task shares: tap runs, uploads and the sensor, in every mode.

One settings object checks the wait arguments; one target names what is awaited; the wait runs in
the worker, or is deferred to :class:`~datris_provider.triggers.datris.DatrisPipelineTrigger` and
finished on resume; one deadline policy (the earlier of ``timeout`` and ``execution_timeout``, as an
absolute time, since Airflow does not apply ``execution_timeout`` to a deferred task); one step that
judges the terminal rollup; one step that stops the wait and kills the jobs the task owns.

Every Datris line is printed by the worker, so each appears once in the task log: the trigger only
waits (it logs progress, not Datris lines), and the task prints on resume every event its own cursor
had not seen. A second deferral or a triggerer restart can therefore neither lose nor repeat a line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from datris_provider._compat import AirflowFailException
from datris_provider.client.errors import DatrisConfigError, DatrisError, DatrisTransientError
from datris_provider.lifecycle.errors import airflow_errors
from datris_provider.lifecycle.events import DONE, TIMEOUT, TriggerEnd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import BaseOperator, Context

    from datris_provider.client.models import Rollup
    from datris_provider.core.pipeline import PipelineFollower
    from datris_provider.core.stopping import StopSignal
    from datris_provider.core.tap_run import RunListener
    from datris_provider.hooks.datris import DatrisHook
    from datris_provider.lifecycle.attempts import AttemptLedger
    from datris_provider.lifecycle.settings import WaitSettings


@dataclass(frozen=True)
class WaitTarget:
    """What a wait follows.

    :param token: the publisher token (or, with ``by_pipeline_token``, one job's pipeline token).
    :param what: how messages name it, e.g. ``The pipeline of tap 'orders'``.
    :param expected_tokens: pipeline tokens that must all be present before the wait can end.
    :param owns_jobs: the jobs are this task's, so a timeout or a kill kills them (never for a sensor).
    """

    token: str
    what: str
    expected_tokens: tuple[str, ...] = ()
    by_pipeline_token: bool = False
    owns_jobs: bool = True


def wait_in_worker(
    hook: DatrisHook, target: WaitTarget, settings: WaitSettings, follower: PipelineFollower, signal: StopSignal
) -> Rollup:
    """Poll in this worker until every job is terminal, printing each event once."""
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    steps = follower.follow(
        target.token,
        target.expected_tokens,
        deadline_at=deadline,
        what=f"{target.what} (timeout={settings.timeout} s)",
        by_pipeline_token=target.by_pipeline_token,
    )
    with airflow_errors():
        return signal.drive(steps, hook.client)


def done_already(hook: DatrisHook, target: WaitTarget, follower: PipelineFollower) -> Rollup | None:
    """Read the status once in the worker, printing its events: the rollup if the wait is already over."""
    from datris_provider.core.outcome import rollup_is_done

    with airflow_errors():
        try:
            status = hook.client.get_pipeline_status(target.token, by_pipeline_token=target.by_pipeline_token)
        except DatrisTransientError as err:
            follower.listener.warning(f"Could not read the pipeline yet; the trigger will: {err}")
            return None
        follower.stream(status.events)
        follower.last_rollup = status.rollup
        return status.rollup if rollup_is_done(status.rollup, target.expected_tokens) else None


def defer_wait(
    operator: BaseOperator,
    context: Context,
    target: WaitTarget,
    settings: WaitSettings,
    follower: PipelineFollower,
    *,
    conn_id: str,
    resume: dict[str, Any],
    method_name: str,
) -> NoReturn:
    """Hand the wait to the triggerer; the task resumes in ``method_name`` with a :class:`TriggerEnd`."""
    from datris_provider.triggers.datris import DatrisPipelineTrigger

    operator.defer(
        trigger=DatrisPipelineTrigger(
            datris_conn_id=conn_id,
            publisher_token=target.token,
            expected_tokens=list(target.expected_tokens),
            poll_interval=settings.poll_interval,
            no_job_timeout=settings.no_job_timeout,
            max_poll_failures=settings.max_poll_failures,
            deadline_at=settings.deadline_at(context, operator.execution_timeout),
            what=target.what,
            by_pipeline_token=target.by_pipeline_token,
            cancel_on_kill=target.owns_jobs,
            kill_on_timeout=target.owns_jobs,
            resume={**resume, "cursor": follower.cursor.to_json(), "try_number": context["ti"].try_number},
        ),
        method_name=method_name,
    )
    raise AssertionError("unreachable: defer() raises")


def resume_wait(
    hook: DatrisHook, target: WaitTarget, settings: WaitSettings, end: TriggerEnd, listener: RunListener
) -> Rollup:
    """After the trigger's event: print every event the task had not printed, kill on a timeout the
    trigger did not handle (only jobs the task owns), and return the terminal rollup."""
    from datris_provider.client.models import Rollup

    follower = settings.follower(listener, cursor=end.resume.get("cursor"))
    try:
        follower.stream(
            hook.client.get_pipeline_status(target.token, by_pipeline_token=target.by_pipeline_token).events
        )
    except DatrisError as err:
        listener.warning(f"Could not read the last Datris events: {err}")
    if end.status == TIMEOUT:
        if target.owns_jobs and not end.killed:
            kill_jobs_now(hook, list(end.unfinished), listener)
        raise AirflowFailException(end.message or f"{target.what} did not finish in time.")
    with airflow_errors():
        end.raise_if_error()
        assert end.status == DONE and end.rollup is not None
        return Rollup.parse(end.rollup)


def judge(target: WaitTarget, rollup: Rollup, listener: RunListener) -> tuple[str, list[dict[str, Any]]]:
    """The terminal rules: a job in error fails the task, a warning succeeds with a warning."""
    from datris_provider.core.outcome import jobs_summary, judge_rollup

    with airflow_errors():
        warning = judge_rollup(target.what[0].lower() + target.what[1:], rollup)
    if warning:
        listener.warning(warning)
    return ("warning" if warning else "success"), jobs_summary(rollup)


def kill_jobs_now(hook: DatrisHook, tokens: Sequence[str], listener: RunListener) -> None:
    """Ask Datris, once per job and briefly, to kill each job (Airflow leaves a killed task seconds)."""
    from datris_provider.core.pipeline import kill_jobs
    from datris_provider.core.steps import drive

    drive(kill_jobs(tokens, listener, clock=time.monotonic), hook.client, time.sleep)


def stop_and_kill(
    signal: StopSignal | None,
    hook: DatrisHook | None,
    tokens: Sequence[str],
    listener: RunListener | None,
    ledger: AttemptLedger | None,
) -> None:
    """``on_kill``: stop the wait, then kill the unfinished jobs, unless a newer try owns the run."""
    if signal is not None:
        signal.stop()
    if hook is None or listener is None:
        return
    reason = ledger.why_not_kill() if ledger is not None else None
    if reason is not None:
        listener.warning(reason[0].upper() + reason[1:] + ".")
        return
    kill_jobs_now(hook, tokens, listener)


def complete(
    operator: BaseOperator, context: Context, result: dict[str, Any], *, landed_pipelines: set[str], summary: str
) -> dict[str, Any]:
    """The one finish step: keep only the outlets whose data landed, push the metric XComs, log a
    summary line and return the result (the task's return value XCom)."""
    from datris_provider.assets import keep_outlets

    kept, notes = keep_outlets(list(operator.outlets), str(result.get("status")), landed_pipelines)
    for note in notes:
        operator.log.info("%s", note)
    operator.outlets = kept
    ti = context["ti"]
    for key in ("row_count", "duration_ms"):
        if key in result:
            ti.xcom_push(key=key, value=result[key])
    operator.log.info("%s", summary)
    return result


def checked_token(value: Any, *, owner: str, what: str) -> str:
    """A token argument as rendered, or a clear error when its template rendered empty."""
    token = "" if value is None else str(value).strip()
    if not token:
        raise DatrisConfigError(f"{owner}: {what} rendered empty; check the template that produces it.")
    return token
