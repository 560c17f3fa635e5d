"""``DatrisPipelineSensor``: wait for Datris pipeline jobs started elsewhere (a cron run, another DAG)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from datris_provider._compat import conf
from datris_provider.lifecycle.settings import WaitSettings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.sdk import Context, PokeReturnValue

    from datris_provider.core.pipeline import PipelineFollower


class DatrisPipelineSensor(BaseSensorOperator):
    """Wait until every Datris pipeline job of a token is finished, streaming their events.

    Give exactly one of ``publisher_token`` (every job of a tap run or upload) or ``pipeline_token``
    (one job). The terminal rules are the operator's: a job in error fails the task with each failed
    job's error, warnings succeed with a warning. Poke, reschedule and deferrable modes are supported;
    a wait that is already over when the task would defer completes at once. Each event is printed
    once over all pokes. The sensor never kills the jobs: they are not its own.

    The return value (XCom) is ``{"token", "pipeline_status", "jobs"}``.

    :param publisher_token: the publisher token to follow (templated).
    :param pipeline_token: a single job's pipeline token to follow (templated).
    :param datris_conn_id: the Airflow connection of type ``datris`` (templated).
    :param no_job_timeout: seconds (or a timedelta) the token may show no job before the task fails
        (Datris answers "processing, no jobs" forever for a token it does not know).
    :param deferrable: wait in Airflow's triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("publisher_token", "pipeline_token", "datris_conn_id")
    ui_color = "#e0f2fe"

    def __init__(
        self,
        *,
        publisher_token: str | None = None,
        pipeline_token: str | None = None,
        datris_conn_id: str = "datris_default",
        no_job_timeout: float | timedelta = 300.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (publisher_token is None) == (pipeline_token is None):
            raise ValueError(f"{self.task_id}: give exactly one of publisher_token or pipeline_token.")
        self.publisher_token = publisher_token
        self.pipeline_token = pipeline_token
        self.datris_conn_id = datris_conn_id
        try:
            checked = WaitSettings.checked(no_job_timeout=no_job_timeout).no_job_timeout
        except (TypeError, ValueError) as err:
            raise type(err)(f"{self.task_id}: {err}") from None
        self.no_job_timeout = checked
        self.deferrable = deferrable
        self._follower: PipelineFollower | None = None

    @property
    def wait_settings(self) -> WaitSettings:
        """The sensor's wait as the shared settings: its poke interval, timeout and no-job bound."""
        return WaitSettings.checked(
            poll_interval=float(self.poke_interval), timeout=float(self.timeout), no_job_timeout=self.no_job_timeout
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from datris_provider.lifecycle import sensor

        return sensor.execute_deferred(self, context)

    def poke(self, context: Context) -> PokeReturnValue:
        from datris_provider.lifecycle import sensor

        return sensor.poke(self, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Deferrable mode: print the events the task had not printed, then apply the terminal rules."""
        from datris_provider.lifecycle import sensor
        from datris_provider.lifecycle.events import stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        return sensor.resume(self, context, event)
