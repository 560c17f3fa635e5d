"""``DatrisUploadFileOperator``: push a file into a Datris pipeline and wait for it like a tap run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from datris_provider._compat import conf
from datris_provider.lifecycle.settings import DEFAULT_TIMEOUT, WaitArguments

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.sdk import Context

    from datris_provider.lifecycle.upload import UploadTask


class DatrisUploadFileOperator(WaitArguments, BaseOperator):
    """Upload a local file to a Datris pipeline (``POST /pipeline/upload``) and wait for its jobs.

    The file is streamed from disk, never read whole. The task chooses the run's publisher token (a
    UUID, pushed as the ``publisher_token`` XCom before the upload), so every job the upload creates,
    archives included, is followed. Each try's token is known before it sends (kept in the task state on
    Airflow 3.3+, derived from the task instance and its try before that): a retry after a cut upload
    follows the jobs the file already created instead of sending it twice, and sends it again only when
    that upload loaded nothing. The wait, log streaming, kill and deferrable mode are the tap operator's.

    The return value holds ``pipeline``, ``file``, ``bytes``, ``publisher_token``,
    ``pipeline_tokens``, ``status``, ``pipeline_status``, ``jobs`` and ``duration_ms``.

    :param file_path: the local file to upload (templated).
    :param pipeline: the registered Datris pipeline to feed (templated).
    :param datris_conn_id: the Airflow connection of type ``datris`` (templated).
    :param publisher_token: the run's publisher token (a UUID), used as given by every try; by default
        the task chooses one per try (templated).
    :param wait_for_completion: wait for the pipeline jobs, or return once the file is accepted.
    :param poll_interval: seconds (or a timedelta) between status polls.
    :param timeout: how long the wait may take (seconds or a timedelta); ``None`` for no bound.
    :param no_job_timeout: seconds the publisher token may show no job before the task fails.
    :param max_poll_failures: failed polls in a row tolerated before the task fails.
    :param deferrable: wait in Airflow's triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("file_path", "pipeline", "datris_conn_id", "publisher_token")
    ui_color = "#dcfce7"

    def __init__(
        self,
        *,
        file_path: str,
        pipeline: str,
        datris_conn_id: str = "datris_default",
        publisher_token: str | None = None,
        wait_for_completion: bool = True,
        poll_interval: float | timedelta = 15,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        no_job_timeout: float | timedelta = 300,
        max_poll_failures: int = 5,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.file_path = file_path
        self.pipeline = pipeline
        self.datris_conn_id = datris_conn_id
        self.publisher_token = publisher_token
        self.wait_for_completion = wait_for_completion
        self.take_wait_arguments(
            poll_interval=poll_interval,
            timeout=timeout,
            no_job_timeout=no_job_timeout,
            max_poll_failures=max_poll_failures,
        )
        self.deferrable = deferrable
        self._datris_task: UploadTask | None = None
        self._result: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any] | None:
        from datris_provider.lifecycle import upload

        return upload.run(self, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Deferrable mode: print the last events, then judge the pipeline's outcome."""
        from datris_provider.lifecycle import upload
        from datris_provider.lifecycle.events import stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)
        return upload.resume(self, context, event)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the pipeline's datasets from Datris's lineage API, and the upload's facets."""
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.lineage import operator_lineage

        return operator_lineage(DatrisHook(self.datris_conn_id), "pipeline", self.pipeline, self._result, self.log)

    def on_kill(self) -> None:
        """Stop waiting and ask Datris to kill this upload's unfinished jobs, once and briefly."""
        from datris_provider.lifecycle import upload

        upload.on_kill(self)
