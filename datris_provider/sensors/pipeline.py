"""``DatrisPipelineSensor``: wait for Datris pipeline jobs started elsewhere (a cron run, another DAG)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from datris_provider._compat import conf

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from datris_provider.client.models import Rollup
    from datris_provider.core.tap_run import PipelineFollower


class DatrisPipelineSensor(BaseSensorOperator):
    """Wait until every Datris pipeline job of a token is finished, streaming their events.

    Give exactly one of ``publisher_token`` (every job of a tap run or upload) or ``pipeline_token``
    (one job). The terminal rules are the operator's: a job in error fails the task with each failed
    job's error, warnings succeed with a warning. Poke, reschedule and deferrable modes are supported;
    a wait that is already over when the task would defer completes at once.

    The return value (XCom) is ``{"token", "pipeline_status", "jobs"}``.

    :param publisher_token: the publisher token to follow (templated).
    :param pipeline_token: a single job's pipeline token to follow (templated).
    :param datris_conn_id: the Airflow connection of type ``datris`` (templated).
    :param no_job_timeout: seconds the token may show no job before the task fails (Datris answers
        "processing, no jobs" forever for a token it does not know).
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
        no_job_timeout: float = 300.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (publisher_token is None) == (pipeline_token is None):
            raise ValueError(f"{self.task_id}: give exactly one of publisher_token or pipeline_token.")
        if no_job_timeout <= 0:
            raise ValueError(f"{self.task_id}: no_job_timeout must be more than zero seconds, not {no_job_timeout!r}.")
        self.publisher_token = publisher_token
        self.pipeline_token = pipeline_token
        self.datris_conn_id = datris_conn_id
        self.no_job_timeout = no_job_timeout
        self.deferrable = deferrable
        self._follower: PipelineFollower | None = None

    @property
    def _token(self) -> str:
        token = self.pipeline_token or self.publisher_token
        if not token or not str(token).strip():
            raise ValueError(f"{self.task_id}: the token rendered empty; check the template that produces it.")
        return str(token).strip()

    def _listener(self, context: Context) -> Any:
        from datris_provider.operators._running import TaskRunListener

        return TaskRunListener(self.log, context, ui_url="")

    def _follower_for(self, context: Context) -> PipelineFollower:
        from datris_provider.core.tap_run import PipelineFollower

        if self._follower is None:
            self._follower = PipelineFollower(
                self._listener(context),
                poll_interval=float(self.poke_interval),
                no_job_timeout=self.no_job_timeout,
                max_poll_failures=0,
            )
        return self._follower

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from datris_provider.triggers.datris import DatrisPipelineTrigger

        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        follower = self._follower_for(context)
        self.defer(
            trigger=DatrisPipelineTrigger(
                datris_conn_id=self.datris_conn_id,
                publisher_token=self._token,
                poll_interval=float(self.poke_interval),
                no_job_timeout=self.no_job_timeout,
                max_poll_failures=5,
                deadline_at=time.time() + float(self.timeout),
                cursor=follower.cursor.to_json(),
                what=f"Datris token {self._token}",
                by_pipeline_token=self.pipeline_token is not None,
                cancel_on_kill=False,  # the jobs are not this task's to kill
                resume={"try_number": context["ti"].try_number},
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue:
        from datris_provider.client.errors import DatrisTransientError, DatrisWaitTimeoutError
        from datris_provider.core.outcome import rollup_is_done
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.operators._running import airflow_errors

        follower = self._follower_for(context)
        with airflow_errors():
            try:
                status = DatrisHook(self.datris_conn_id).client.get_pipeline_status(
                    self._token, by_pipeline_token=self.pipeline_token is not None
                )
            except DatrisTransientError as err:
                self.log.warning("Reading the Datris status failed; trying again at the next poke: %s", err)
                return PokeReturnValue(is_done=False)
            follower.stream(status.events)
            if rollup_is_done(status.rollup, ()):
                return PokeReturnValue(is_done=True, xcom_value=self._result(status.rollup))
            started = getattr(context["ti"], "start_date", None)
            waited = time.time() - started.timestamp() if started else 0.0
            if not status.rollup.jobs and waited > self.no_job_timeout:
                raise DatrisWaitTimeoutError(
                    f"Token {self._token} showed no pipeline job for {waited:.0f} s "
                    f"(no_job_timeout={self.no_job_timeout:g} s): Datris does not know it, or it has not started."
                )
        self.log.info("Datris token %s: %s.", self._token, follower.describe_last_rollup())
        return PokeReturnValue(is_done=False)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Deferrable mode: print the events the trigger did not, then apply the terminal rules."""
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.operators._running import check_event, end_of_deferred_wait, stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        checked = check_event(event, {"done", "timeout", "error"})
        rollup = end_of_deferred_wait(
            DatrisHook(self.datris_conn_id),
            self._listener(context),
            checked,
            self._token,
            poll_interval=float(self.poke_interval),
            by_pipeline_token=self.pipeline_token is not None,
            kill_on_timeout=False,
        )
        return self._result(rollup)

    def _result(self, rollup: Rollup) -> dict[str, Any]:
        from datris_provider.core.outcome import jobs_summary, judge_rollup
        from datris_provider.operators._running import airflow_errors

        with airflow_errors():
            warning = judge_rollup(f"token {self._token}", rollup)
        if warning:
            self.log.warning("%s", warning)
        return {"token": self._token, "pipeline_status": rollup.status, "jobs": jobs_summary(rollup)}
