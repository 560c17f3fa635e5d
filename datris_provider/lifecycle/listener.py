"""The run listener of an Airflow task: the task log, the XComs, and the attempt record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datris_provider.core.listeners import LogListener
from datris_provider.lifecycle.attempts import FOLLOWING, JUDGED
from datris_provider.links import JOB_URL_KEY, job_url

if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence

    from airflow.sdk import Context

    from datris_provider.lifecycle.attempts import AttemptLedger


class TaskRunListener(LogListener):
    """Writes to the task log, pushes the tokens and the job link to XCom as soon as they are known,
    and keeps the attempt record up to date.

    :param log: the task's logger.
    :param context: the task's Airflow context.
    :param ui_url: the Datris UI base URL for the job link ("" for none).
    :param ledger: the task's attempt record, or None when the run is not this task's (a sensor).
    """

    def __init__(
        self, log: logging.Logger | Any, context: Context, *, ui_url: str, ledger: AttemptLedger | None = None
    ) -> None:
        super().__init__(log)
        self._ti = context["ti"]
        self._ui_url = ui_url
        self._ledger = ledger

    def tokens_known(self, publisher_token: str | None, pipeline_tokens: Sequence[str], pipeline: str | None) -> None:
        self._ti.xcom_push(key="publisher_token", value=publisher_token)
        self._ti.xcom_push(key="pipeline_tokens", value=list(pipeline_tokens))
        if pipeline_tokens and pipeline:
            self._ti.xcom_push(key=JOB_URL_KEY, value=job_url(self._ui_url, pipeline_tokens[0], pipeline))
        super().tokens_known(publisher_token, pipeline_tokens, pipeline)
        if publisher_token and self._ledger is not None:
            self._ledger.write(FOLLOWING, publisher_token=publisher_token)

    def pipeline_ended(self, publisher_token: str) -> None:
        if self._ledger is not None:
            self._ledger.write(JUDGED, publisher_token=publisher_token)

    def posting(self, known_run_times: Sequence[str]) -> None:
        if self._ledger is not None:
            self._ledger.posting(known_run_times)
