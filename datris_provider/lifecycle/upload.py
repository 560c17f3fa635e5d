"""A file upload for an Airflow task, sent exactly once per task instance.

Each try sends under a publisher token recorded before the file goes out: in the attempt record
(Airflow 3.3+), or, where Airflow keeps no task state, one derived from the task instance and the try
(:mod:`~datris_provider.lifecycle.upload_tokens`). A try whose upload call was cut (a proxy 504 while
Datris staged the file) or that was killed mid-call leaves that token behind; the next try looks for
its jobs and follows them instead of sending the file again. The file is sent again, under the new
try's token, only when Datris shows no job for the earlier one within ``no_job_timeout``, or when the
earlier upload's jobs all ended in error. A ``publisher_token`` the user gives is used as given;
before 3.3 a retry then sends the file again, since nothing says that token is this task instance's.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datris_provider.client.errors import DatrisApiError, DatrisConfigError, DatrisTransientError
from datris_provider.core.outcome import loaded_nothing
from datris_provider.lifecycle import wait
from datris_provider.lifecycle.attempts import FOLLOWING, JUDGED, POSTING, UPLOAD_KEY, AttemptLedger
from datris_provider.lifecycle.errors import airflow_errors
from datris_provider.lifecycle.events import WAIT_EVENTS, read_event
from datris_provider.lifecycle.listener import TaskRunListener
from datris_provider.lifecycle.upload_tokens import UploadTokens

if TYPE_CHECKING:
    from airflow.sdk import Context

    from datris_provider.client.models import Rollup
    from datris_provider.core.pipeline import PipelineFollower
    from datris_provider.core.stopping import StopSignal
    from datris_provider.hooks.datris import DatrisHook
    from datris_provider.operators.upload import DatrisUploadFileOperator

# An upload stages its data inside the request; give it time beyond the connection's timeout.
UPLOAD_READ_TIMEOUT_SECONDS = 900.0


@dataclass
class UploadTask:
    """What one try of an upload task holds while it runs (for ``on_kill``)."""

    hook: DatrisHook
    listener: TaskRunListener
    ledger: AttemptLedger
    signal: StopSignal
    follower: PipelineFollower | None = None
    pipeline_tokens: tuple[str, ...] = ()


def _what(operator: DatrisUploadFileOperator) -> str:
    return f"The upload of '{os.path.basename(operator.file_path)}' to pipeline '{operator.pipeline}'"


def _chosen_token(operator: DatrisUploadFileOperator, ledger: AttemptLedger, tokens: UploadTokens) -> str:
    from datris_provider.core.upload import UUID_PATTERN

    fresh = str(uuid.uuid4()) if ledger.available else tokens.current
    token = (operator.publisher_token or fresh).strip()
    if not UUID_PATTERN.match(token):
        raise DatrisConfigError(f"{operator.task_id}: publisher_token must be a UUID, not {token!r}.")
    return token


def _earlier_uploads(operator: DatrisUploadFileOperator, ledger: AttemptLedger, tokens: UploadTokens) -> list[str]:
    """The tokens under which earlier tries of this task instance may have sent the file, newest first."""
    if ledger.try_number <= 1:
        return []
    if ledger.available:
        previous = ledger.claim()
        if previous and previous.get("state") in (POSTING, FOLLOWING) and previous.get("publisher_token"):
            return [str(previous["publisher_token"])]
        return []
    # A token the user gives may be reused by other task instances: a retry cannot know it is its own.
    return [] if operator.publisher_token else tokens.earlier()


def _follow_earlier_upload(operator: DatrisUploadFileOperator, task: UploadTask, tokens: list[str]) -> str | None:
    """The earlier upload this retry follows instead of sending the file; None when the file is to be sent.

    Each earlier token is read once, newest first, and the newest with jobs is followed. When none has
    any, the newest earlier try may still be sending: its jobs are waited for up to ``no_job_timeout``
    (so is a newer try's, when the upload found loaded nothing). An upload that loaded nothing is sent
    again, under a new token, when this try may choose one.
    """
    if not tokens:
        return None
    found: tuple[str, Rollup] | None = None
    for token in tokens:
        rollup = _read_jobs(task, token)
        if rollup is not None:
            found = (token, rollup)
            break
    if found is None or (found[0] != tokens[0] and loaded_nothing(found[1])):
        late = _jobs_of(operator, task, tokens[0])
        if late is not None:
            found = (tokens[0], late)
    if found is None:
        return None
    token, rollup = found
    if loaded_nothing(rollup) and not operator.publisher_token:
        task.listener.warning(
            f"The upload under publisher token {token} failed on Datris and loaded nothing; this retry sends the "
            "file again under a new publisher token."
        )
        return None
    task.pipeline_tokens = _following(task, rollup)
    return token


def _following(task: UploadTask, rollup: Rollup) -> tuple[str, ...]:
    tokens = tuple(job.pipeline_token for job in rollup.jobs)
    task.listener.info(f"Datris has the upload's jobs ({', '.join(tokens)}); following them.")
    return tokens


def run(operator: DatrisUploadFileOperator, context: Context) -> dict[str, Any] | None:
    """Upload the file (unless an earlier try's upload reached Datris), then wait as the task says."""
    from datris_provider.core.stopping import StopSignal
    from datris_provider.core.upload import check_upload_file
    from datris_provider.hooks.datris import DatrisHook

    started = time.time()
    ti = context["ti"]
    with airflow_errors():
        size = check_upload_file(operator.file_path)
        ledger = AttemptLedger(context, UPLOAD_KEY)
        hook = DatrisHook(operator.datris_conn_id)
        listener = TaskRunListener(operator.log, context, ui_url=hook.settings.datris_ui_url, ledger=None)
        task = UploadTask(hook, listener, ledger, StopSignal(_what(operator).lower()))
        operator._datris_task = task
        tokens = UploadTokens.of(context, try_number=ledger.try_number, retries=int(operator.retries or 0))
        earlier = _earlier_uploads(operator, ledger, tokens)
        if earlier:
            listener.warning(
                f"This is a retry: an earlier try may have sent this file (publisher token {', '.join(earlier)}); "
                "looking for its jobs on Datris before sending anything."
            )
        token = _follow_earlier_upload(operator, task, earlier)
        if token is None:
            token = _chosen_token(operator, ledger, tokens)
            ledger.write(POSTING, publisher_token=token)
            ti.xcom_push(key="publisher_token", value=token)
            task.pipeline_tokens = _send(operator, task, token, size)
        else:
            ti.xcom_push(key="publisher_token", value=token)
        ledger.write(FOLLOWING, publisher_token=token)
    assert token is not None
    ti.xcom_push(key="pipeline_tokens", value=list(task.pipeline_tokens))
    result: dict[str, Any] = {
        "pipeline": operator.pipeline,
        "file": os.path.basename(operator.file_path),
        "bytes": size,
        "publisher_token": token,
        "pipeline_tokens": list(task.pipeline_tokens),
        "status": "submitted",
        "pipeline_status": None,
        "jobs": [],
        "started_at": started,
    }
    if not operator.wait_for_completion:
        return finish(operator, context, result, None)
    target = _target(operator, result)
    task.follower = operator.wait_settings.follower(listener)
    if operator.deferrable:
        rollup = wait.done_already(hook, target, task.follower)
        if rollup is None:
            wait.defer_wait(
                operator,
                context,
                target,
                operator.wait_settings,
                task.follower,
                conn_id=operator.datris_conn_id,
                resume={"result": result},
                method_name="execute_complete",
            )
    else:
        rollup = wait.wait_in_worker(hook, target, operator.wait_settings, task.follower, task.signal)
    return finish(operator, context, result, rollup)


def _send(operator: DatrisUploadFileOperator, task: UploadTask, token: str, size: int) -> tuple[str, ...]:
    from datris_provider.core.upload import pipeline_tokens_from_answer

    filename = os.path.basename(operator.file_path)
    task.listener.info(f"Uploading {filename} ({size} bytes) to Datris pipeline '{operator.pipeline}'.")
    try:
        answer = task.hook.client.upload_file(
            operator.file_path,
            operator.pipeline,
            filename=filename,
            publisher_token=token,
            read_timeout=UPLOAD_READ_TIMEOUT_SECONDS,
        )
    except DatrisTransientError as err:
        # The call was cut, but Datris may have accepted the file and still be staging it.
        task.listener.warning(f"The upload call was cut ({err}); looking for its jobs before deciding anything.")
        rollup = _jobs_of(operator, task, token)
        if rollup is not None:
            return _following(task, rollup)
        raise
    except DatrisApiError as err:
        if "not registered" in str(err):
            raise DatrisConfigError(f"{err} Register the pipeline in Datris, or fix `pipeline`.") from None
        raise
    return pipeline_tokens_from_answer(answer)


def _read_jobs(task: UploadTask, token: str) -> Rollup | None:
    """The jobs Datris shows for ``token`` (None when there are none), read once."""
    try:
        status = task.hook.client.get_pipeline_status(token)
    except DatrisTransientError as err:
        raise DatrisTransientError(
            f"Could not tell whether Datris has the jobs of an earlier try's upload (publisher token {token}), "
            f"so the file is not sent again while that is unknown: {err}"
        ) from err
    return status.rollup if status.rollup.jobs else None


def _jobs_of(operator: DatrisUploadFileOperator, task: UploadTask, token: str) -> Rollup | None:
    """The jobs Datris shows for ``token``, waiting up to ``no_job_timeout`` for them to appear; None
    when none did. Raises when Datris could not be read at all: then nobody knows."""
    settings = operator.wait_settings
    waited = 0.0
    last_failure: DatrisTransientError | None = None
    read_once = False
    while True:
        try:
            status = task.hook.client.get_pipeline_status(token)
        except DatrisTransientError as err:
            task.listener.warning(f"Reading the upload's jobs failed: {err}")
            last_failure = err
        else:
            read_once = True
            if status.rollup.jobs:
                return status.rollup
        if waited >= settings.no_job_timeout:
            if not read_once and last_failure is not None:
                raise DatrisTransientError(
                    f"Could not read the jobs of publisher token {token} for {waited:.0f} s, so the file is not "
                    f"sent (again) while it may be on Datris: {last_failure}"
                ) from last_failure
            task.listener.warning(
                f"Datris shows no job for publisher token {token} after {waited:.0f} s: the file never reached "
                "it under that token."
            )
            return None
        task.signal.sleep(settings.poll_interval)
        waited += settings.poll_interval


def _target(operator: DatrisUploadFileOperator, result: dict[str, Any]) -> wait.WaitTarget:
    return wait.WaitTarget(
        token=result["publisher_token"], what=_what(operator), expected_tokens=tuple(result["pipeline_tokens"])
    )


def resume(operator: DatrisUploadFileOperator, context: Context, event: Any) -> dict[str, Any]:
    """Deferred: the wait has ended; print the events, then judge the pipeline's outcome."""
    from datris_provider.hooks.datris import DatrisHook

    end = read_event(event, WAIT_EVENTS)
    result = dict(end.resume["result"])
    hook = DatrisHook(operator.datris_conn_id)
    listener = TaskRunListener(operator.log, context, ui_url=hook.settings.datris_ui_url, ledger=None)
    rollup = wait.resume_wait(hook, _target(operator, result), operator.wait_settings, end, listener)
    return finish(operator, context, result, rollup)


def finish(operator: DatrisUploadFileOperator, context: Context, result: dict[str, Any], rollup: Any) -> dict[str, Any]:
    listener = TaskRunListener(operator.log, context, ui_url="")
    if rollup is not None:
        result["pipeline_tokens"] = [job.pipeline_token for job in rollup.jobs]
        result["pipeline_status"] = rollup.status
        result["status"], result["jobs"] = wait.judge(_target(operator, result), rollup, listener)
        AttemptLedger(context, UPLOAD_KEY).write(JUDGED, publisher_token=result["publisher_token"])
    result["duration_ms"] = int((time.time() - float(result.pop("started_at"))) * 1000)
    operator._result = result
    return wait.complete(
        operator,
        context,
        result,
        landed_pipelines={job["pipeline"] for job in result["jobs"]},
        summary=f"{_what(operator)} finished: {result['status']}, {result['duration_ms']} ms.",
    )


def on_kill(operator: DatrisUploadFileOperator) -> None:
    """Stop the wait and kill the upload's unfinished jobs, unless a newer try owns them."""
    task = operator._datris_task
    if task is None:
        return
    tokens = task.follower.unfinished_tokens(task.pipeline_tokens) if task.follower else list(task.pipeline_tokens)
    wait.stop_and_kill(task.signal, task.hook, tokens, task.listener, task.ledger)
