"""``DatrisRunTapOperator``: trigger a Datris tap, follow its pipeline, stream its logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from datris_provider._compat import conf
from datris_provider.lifecycle.settings import DEFAULT_TIMEOUT, WaitArguments, to_seconds
from datris_provider.links import DatrisPipelineJobLink, DatrisTapRunLink

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.sdk import Context

    from datris_provider.lifecycle.tap import TapTask


class DatrisRunTapOperator(WaitArguments, BaseOperator):
    """Trigger a Datris tap, wait for the pipeline it feeds, and stream Datris logs into the task log.

    The tap must have no cron in Datris (Airflow then owns its schedule); a Datris-scheduled tap is
    refused before anything runs. The run call blocks until the tap script ends; if it is cut, the
    run is found on Datris rather than started again. A tap busy with a run this task did not start
    is waited for, joined or refused, as ``if_busy`` says.

    XComs: ``publisher_token`` and ``pipeline_tokens`` as soon as the jobs are submitted,
    ``row_count`` and ``duration_ms`` at the end; the return value holds all of them plus
    ``status`` (``success``, ``warning``, ``debounced``, ``already_running``, ``no_records``,
    ``no_target_pipeline``, ``nothing_new`` or ``submitted``), ``pipeline_status`` and ``jobs``.

    :param tap_name: the Datris tap to run (templated).
    :param datris_conn_id: the Airflow connection of type ``datris`` (templated).
    :param wait_for_completion: follow the pipeline to its end; when false, return once the jobs
        are submitted.
    :param poll_interval: seconds (or a timedelta) between pipeline status polls.
    :param tap_params: per-run parameters, given to the tap script as ``DATRIS_TAP_PARAM_<key>``
        environment variables (templated, rendered by Jinja).
    :param timeout: how long the pipeline wait may take (seconds or a timedelta); ``None`` for no
        bound beyond Datris's own.
    :param no_job_timeout: seconds the run's publisher token may show no pipeline job before the
        task fails (Datris answers "processing, no jobs" forever for a token it does not know).
    :param max_poll_failures: failed polls in a row tolerated before the task fails.
    :param if_busy: what to do when the tap is busy with a run this task did not start (a run in
        flight, or a run call Datris debounced): ``"wait"`` until the tap is idle, then start this
        task's own run; ``"join"`` the run in flight; ``"fail"`` at once. Default: ``"wait"`` with
        ``tap_params`` (a backfill window is never reported loaded by another window's run),
        ``"join"`` without.
    :param busy_timeout: how long ``if_busy="wait"`` may wait (seconds or a timedelta); default: the
        server's tap script limit plus five minutes.
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
        if_busy: str | None = None,
        busy_timeout: float | timedelta | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(tap_name, str) or not tap_name.strip():
            raise ValueError(f"{self.task_id}: tap_name must be the name of a Datris tap, not {tap_name!r}.")
        if if_busy is not None and if_busy not in ("wait", "join", "fail"):
            raise ValueError(f"{self.task_id}: if_busy must be 'wait', 'join' or 'fail', not {if_busy!r}.")
        self.tap_name = tap_name
        self.datris_conn_id = datris_conn_id
        self.wait_for_completion = wait_for_completion
        self.tap_params = tap_params
        self.take_wait_arguments(
            poll_interval=poll_interval,
            timeout=timeout,
            no_job_timeout=no_job_timeout,
            max_poll_failures=max_poll_failures,
        )
        self.if_busy = if_busy
        self.busy_timeout = to_seconds(busy_timeout, name="busy_timeout", allow_zero=False)
        self.deferrable = deferrable
        self._datris_task: TapTask | None = None
        self._result: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any] | None:
        from datris_provider.lifecycle import tap

        if self.deferrable:
            return tap.defer_run(self, context)
        return tap.run_in_worker(self, context)

    def execute_after_script(self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Deferrable mode: the tap script has ended; print its log and defer the pipeline wait."""
        from datris_provider.lifecycle import tap
        from datris_provider.lifecycle.events import stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        return tap.after_script(self, context, event)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Deferrable mode: the pipeline wait has ended; print the last events and judge the run."""
        from datris_provider.lifecycle import tap
        from datris_provider.lifecycle.events import stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        return tap.after_pipeline(self, context, event)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the tap's sources and datasets from Datris's lineage API, and the run's facets."""
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.lineage import operator_lineage

        return operator_lineage(DatrisHook(self.datris_conn_id), "tap", self.tap_name, self._result, self.log)

    def on_kill(self) -> None:
        """Stop waiting and ask Datris to kill the run's unfinished pipeline jobs, once and briefly,
        unless a newer try of this task has taken the run over."""
        from datris_provider.lifecycle import tap

        tap.on_kill(self)
