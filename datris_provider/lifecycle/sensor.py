"""The sensor's side of the shared wait: pokes in the worker, rescheduled pokes, or the triggerer.

Each event is printed once over all pokes. In poke mode the cursor lives in the sensor; in reschedule
mode every poke is a new process, so the cursor is kept in the task state (Airflow 3.3+); before 3.3
a rescheduled sensor prints the events once, when the wait is over, and a progress line each poke.
The jobs are not the sensor's: it never kills them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from datris_provider.client.errors import DatrisTransientError, DatrisWaitTimeoutError
from datris_provider.core.listeners import LogListener
from datris_provider.lifecycle import wait
from datris_provider.lifecycle.errors import airflow_errors
from datris_provider.lifecycle.events import WAIT_EVENTS, read_event
from datris_provider.lifecycle.listener import TaskRunListener

if TYPE_CHECKING:
    from airflow.sdk import Context, PokeReturnValue

    from datris_provider.client.models import Rollup
    from datris_provider.core.pipeline import PipelineFollower
    from datris_provider.sensors.pipeline import DatrisPipelineSensor

CURSOR_KEY = "datris_sensor_cursor"


def target(sensor: DatrisPipelineSensor) -> wait.WaitTarget:
    token = wait.checked_token(sensor.pipeline_token or sensor.publisher_token, owner=sensor.task_id, what="the token")
    return wait.WaitTarget(
        token=token,
        what=f"Datris token {token}",
        by_pipeline_token=sensor.pipeline_token is not None,
        owns_jobs=False,
    )


def _follower(sensor: DatrisPipelineSensor, context: Context) -> PipelineFollower:
    if sensor._follower is None:
        listener = TaskRunListener(sensor.log, context, ui_url="")
        cursor = None
        if sensor.mode == "reschedule":
            cursor = _stored_cursor(context)
        sensor._follower = sensor.wait_settings.follower(listener, cursor=cursor)
    return sensor._follower


def _stored_cursor(context: Context) -> list[list[Any]] | None:
    store = context.get("task_state_store")
    if store is None:
        return None
    try:
        value = store.get(CURSOR_KEY)
    except Exception:
        return None
    return cast("list[list[Any]]", value) if isinstance(value, list) else None


def _store_cursor(context: Context, follower: PipelineFollower) -> None:
    store = context.get("task_state_store")
    if store is None:
        return
    try:
        store.set(CURSOR_KEY, cast("Any", follower.cursor.to_json()))
    except Exception as err:
        follower.listener.warning(f"Could not keep the event cursor between pokes: {err}")


def poke(sensor: DatrisPipelineSensor, context: Context) -> PokeReturnValue:
    from airflow.sdk import PokeReturnValue

    from datris_provider.core.outcome import rollup_is_done
    from datris_provider.hooks.datris import DatrisHook

    what = target(sensor)
    follower = _follower(sensor, context)
    streams_now = sensor.mode != "reschedule" or context.get("task_state_store") is not None
    with airflow_errors():
        try:
            status = DatrisHook(sensor.datris_conn_id).client.get_pipeline_status(
                what.token, by_pipeline_token=what.by_pipeline_token
            )
        except DatrisTransientError as err:
            sensor.log.warning("Reading the Datris status failed; trying again at the next poke: %s", err)
            return PokeReturnValue(is_done=False)
        follower.last_rollup = status.rollup
        done = rollup_is_done(status.rollup, ())
        if streams_now or done:
            follower.stream(status.events)
            if sensor.mode == "reschedule":
                _store_cursor(context, follower)
        if done:
            return PokeReturnValue(is_done=True, xcom_value=result(sensor, what, status.rollup))
        started = getattr(context["ti"], "start_date", None)
        waited = time.time() - started.timestamp() if started else 0.0
        if not status.rollup.jobs and waited > sensor.wait_settings.no_job_timeout:
            raise DatrisWaitTimeoutError(
                f"Token {what.token} showed no pipeline job for {waited:.0f} s "
                f"(no_job_timeout={sensor.wait_settings.no_job_timeout:g} s): Datris does not know it, or it has "
                "not started."
            )
    sensor.log.info("Datris token %s: %s.", what.token, follower.describe_last_rollup())
    return PokeReturnValue(is_done=False)


def execute_deferred(sensor: DatrisPipelineSensor, context: Context) -> Any:
    first = poke(sensor, context)
    if first.is_done:
        return first.xcom_value
    wait.defer_wait(
        sensor,
        context,
        target(sensor),
        sensor.wait_settings,
        _follower(sensor, context),
        conn_id=sensor.datris_conn_id,
        resume={},
        method_name="execute_complete",
    )


def resume(sensor: DatrisPipelineSensor, context: Context, event: Any) -> dict[str, Any]:
    from datris_provider.hooks.datris import DatrisHook

    end = read_event(event, WAIT_EVENTS)
    what = target(sensor)
    listener = TaskRunListener(sensor.log, context, ui_url="")
    rollup = wait.resume_wait(DatrisHook(sensor.datris_conn_id), what, sensor.wait_settings, end, listener)
    return result(sensor, what, rollup)


def result(sensor: DatrisPipelineSensor, what: wait.WaitTarget, rollup: Rollup) -> dict[str, Any]:
    _status, jobs = wait.judge(what, rollup, LogListener(sensor.log))
    return {"token": what.token, "pipeline_status": rollup.status, "jobs": jobs}
