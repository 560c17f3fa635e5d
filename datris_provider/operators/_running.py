"""Runs a tap for an Airflow task: wires the run-tracking core to the task log, XComs and errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from datris_provider.client.errors import DatrisError
from datris_provider.core.params import validate_tap_params
from datris_provider.core.tap_run import TapRunSpec, TapRunTracker
from datris_provider.hooks.datris import DatrisHook

if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence

    from airflow.sdk import Context

    from datris_provider.operators.tap import DatrisRunTapOperator


class TaskRunListener:
    """Sends the core's progress to the task log and its tokens to XCom as soon as they are known."""

    def __init__(self, log: logging.Logger | Any, context: Context) -> None:
        self._log = log
        self._ti = context["ti"]

    def info(self, message: str) -> None:
        self._log.info("%s", message)

    def warning(self, message: str) -> None:
        self._log.warning("%s", message)

    def error(self, message: str) -> None:
        self._log.error("%s", message)

    def tokens_known(self, publisher_token: str | None, pipeline_tokens: Sequence[str]) -> None:
        self._ti.xcom_push(key="publisher_token", value=publisher_token)
        self._ti.xcom_push(key="pipeline_tokens", value=list(pipeline_tokens))
        self._log.info("Datris publisher token %s, pipeline jobs %s.", publisher_token, ", ".join(pipeline_tokens))


def run_tap_for_task(operator: DatrisRunTapOperator, context: Context) -> dict[str, Any]:
    """Run ``operator``'s tap and return the result dict; map Datris errors to Airflow's retry rules."""
    ti = context["ti"]
    try:
        spec = TapRunSpec(
            tap_name=operator.tap_name,
            params=validate_tap_params(operator.tap_params, owner=f"{operator.task_id}: tap_params"),
            wait_for_completion=operator.wait_for_completion,
            poll_interval=operator.poll_interval or 15.0,
            timeout=operator.timeout,
            no_job_timeout=operator.no_job_timeout or 300.0,
            max_poll_failures=operator.max_poll_failures,
            is_retry=(ti.try_number or 1) > 1,
        )
        hook = DatrisHook(operator.datris_conn_id)
        tracker = TapRunTracker(hook.client, spec, TaskRunListener(operator.log, context))
        operator._tracker = tracker
        result = tracker.run()
    except DatrisError as err:
        if not err.retryable:
            # A retry cannot fix configuration, authorisation or a refused tap: fail for good.
            raise AirflowFailException(str(err)) from None
        raise
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
