"""``DatrisRunTapOperator``: trigger a Datris tap, follow its pipeline, stream its logs."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from datris_provider._compat import conf
from datris_provider.links import DatrisPipelineJobLink, DatrisTapRunLink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from datris_provider.core.tap_run import TapRunTracker

DEFAULT_TIMEOUT = timedelta(hours=12)


def _seconds(value: float | timedelta | None, *, name: str, allow_zero: bool) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}.")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"{name} must be {bound} seconds, not {value!r}.")
    return float(seconds)


def wait_arguments(
    poll_interval: float | timedelta,
    timeout: float | timedelta | None,
    no_job_timeout: float | timedelta,
    max_poll_failures: int,
) -> tuple[float, float | None, float, int]:
    """Check the wait arguments every Datris operator takes, at DAG-definition time."""
    if isinstance(max_poll_failures, bool) or not isinstance(max_poll_failures, int) or max_poll_failures < 0:
        raise ValueError(f"max_poll_failures must be a whole number, zero or more, not {max_poll_failures!r}.")
    return (
        _seconds(poll_interval, name="poll_interval", allow_zero=False) or 15.0,
        _seconds(timeout, name="timeout", allow_zero=True),
        _seconds(no_job_timeout, name="no_job_timeout", allow_zero=False) or 300.0,
        max_poll_failures,
    )


class DatrisRunTapOperator(BaseOperator):
    """Trigger a Datris tap, wait for the pipeline it feeds, and stream Datris logs into the task log.

    The tap must have no cron in Datris (Airflow then owns its schedule); a Datris-scheduled tap is
    refused before anything runs. The run call blocks until the tap script ends; if it is cut, the
    run is found on Datris rather than started again.

    XComs: ``publisher_token`` and ``pipeline_tokens`` as soon as the jobs are submitted,
    ``row_count`` and ``duration_ms`` at the end; the return value holds all of them plus
    ``status`` (``success``, ``warning``, ``debounced``, ``already_running``, ``no_records``,
    ``no_target_pipeline``, ``nothing_new`` or ``submitted``), ``pipeline_status`` and ``jobs``.

    :param tap_name: the Datris tap to run (templated).
    :param datris_conn_id: the Airflow connection of type ``datris`` (templated).
    :param wait_for_completion: follow the pipeline to its end; when false, return once the jobs
        are submitted.
    :param poll_interval: seconds between pipeline status polls.
    :param tap_params: per-run parameters, given to the tap script as ``DATRIS_TAP_PARAM_<key>``
        environment variables (templated, rendered by Jinja).
    :param timeout: how long the pipeline wait may take (seconds or a timedelta); ``None`` for no
        bound beyond Datris's own.
    :param no_job_timeout: seconds the run's publisher token may show no pipeline job before the
        task fails (Datris answers "processing, no jobs" forever for a token it does not know).
    :param max_poll_failures: failed polls in a row tolerated before the task fails.
    :param deferrable: hand every wait, the blocking run call included, to Airflow's triggerer so
        no worker slot is held while Datris works (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("tap_name", "tap_params", "datris_conn_id")
    template_fields_renderers = {"tap_params": "json"}
    ui_color = "#dbeafe"
    operator_extra_links = (DatrisTapRunLink(), DatrisPipelineJobLink())

    def __init__(
        self,
        *,
        tap_name: str,
        datris_conn_id: str = "datris_default",
        wait_for_completion: bool = True,
        poll_interval: float | timedelta = 15,
        tap_params: dict[str, Any] | None = None,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        no_job_timeout: float | timedelta = 300,
        max_poll_failures: int = 5,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(tap_name, str) or not tap_name.strip():
            raise ValueError(f"{self.task_id}: tap_name must be the name of a Datris tap, not {tap_name!r}.")
        self.tap_name = tap_name
        self.datris_conn_id = datris_conn_id
        self.wait_for_completion = wait_for_completion
        self.tap_params = tap_params
        self.poll_interval, self.timeout, self.no_job_timeout, self.max_poll_failures = wait_arguments(
            poll_interval, timeout, no_job_timeout, max_poll_failures
        )
        self.deferrable = deferrable
        self._tracker: TapRunTracker | None = None
        self._result: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any] | None:
        from datris_provider.operators import _running

        if self.deferrable:
            _running.defer_tap_run(self, context)
            return None
        return _running.run_tap_for_task(self, context)

    def execute_after_script(self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Deferrable mode: the tap script has ended; print its log and defer the pipeline wait."""
        from datris_provider.operators._running import after_script, stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        return after_script(self, context, event)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Deferrable mode: the pipeline wait has ended; print the last events and judge the run."""
        from datris_provider.operators._running import after_pipeline, stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        return after_pipeline(self, context, event)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the tap's sources and datasets from Datris's lineage API, and the run's facets."""
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.lineage import operator_lineage

        return operator_lineage(DatrisHook(self.datris_conn_id), "tap", self.tap_name, self._result, self.log)

    def on_kill(self) -> None:
        """Ask Datris to kill the run's unfinished pipeline jobs, once and briefly, and stop waiting."""
        if self._tracker is not None:
            self._tracker.kill_unfinished_jobs()
