"""``DatrisUploadFileOperator``: push a file into a Datris pipeline and wait for it like a tap run."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from datris_provider._compat import conf
from datris_provider.operators.tap import DEFAULT_TIMEOUT, wait_arguments

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.sdk import Context

    from datris_provider.client.models import Rollup
    from datris_provider.core.tap_run import PipelineFollower
    from datris_provider.hooks.datris import DatrisHook

# An upload stages its data inside the request; give it time beyond the connection's timeout.
UPLOAD_READ_TIMEOUT_SECONDS = 900.0


class DatrisUploadFileOperator(BaseOperator):
    """Upload a local file to a Datris pipeline (``POST /pipeline/upload``) and wait for its jobs.

    The file is streamed from disk, never read whole. The task chooses the run's publisher token (a
    UUID, pushed as the ``publisher_token`` XCom before the upload), so every job the upload creates,
    archives included, is followed. The wait, log streaming, kill and deferrable mode are the tap
    operator's.

    The return value holds ``pipeline``, ``file``, ``bytes``, ``publisher_token``,
    ``pipeline_tokens``, ``status``, ``pipeline_status``, ``jobs`` and ``duration_ms``.

    :param file_path: the local file to upload (templated).
    :param pipeline: the registered Datris pipeline to feed (templated).
    :param datris_conn_id: the Airflow connection of type ``datris`` (templated).
    :param publisher_token: the run's publisher token (a UUID); a new one by default (templated).
    :param wait_for_completion: wait for the pipeline jobs, or return once the file is accepted.
    :param poll_interval: seconds between status polls.
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
        self.poll_interval, self.timeout, self.no_job_timeout, self.max_poll_failures = wait_arguments(
            poll_interval, timeout, no_job_timeout, max_poll_failures
        )
        self.deferrable = deferrable
        self._follower: PipelineFollower | None = None
        self._hook: DatrisHook | None = None
        self._pipeline_tokens: list[str] = []
        # Made in execute(): an Event cannot be deep-copied, and Airflow deep-copies operators.
        self._stop: threading.Event | None = None

    def execute(self, context: Context) -> dict[str, Any] | None:
        from datris_provider.client.errors import DatrisApiError, DatrisConfigError
        from datris_provider.core.upload import check_upload_file, pipeline_tokens_from_answer
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.operators._running import airflow_errors

        self._stop = threading.Event()

        started = time.time()
        ti = context["ti"]
        with airflow_errors():
            size = check_upload_file(self.file_path)
            token = self._checked_token()
            self._hook = hook = DatrisHook(self.datris_conn_id)
            ti.xcom_push(key="publisher_token", value=token)
            filename = os.path.basename(self.file_path)
            self.log.info("Uploading %s (%d bytes) to Datris pipeline '%s'.", filename, size, self.pipeline)
            try:
                answer = hook.client.upload_file(
                    self.file_path,
                    self.pipeline,
                    filename=filename,
                    publisher_token=token,
                    read_timeout=UPLOAD_READ_TIMEOUT_SECONDS,
                )
            except DatrisApiError as err:
                if "not registered" in str(err):
                    raise DatrisConfigError(f"{err} Register the pipeline in Datris, or fix `pipeline`.") from None
                raise
            self._pipeline_tokens = list(pipeline_tokens_from_answer(answer))
        ti.xcom_push(key="pipeline_tokens", value=self._pipeline_tokens)
        result: dict[str, Any] = {
            "pipeline": self.pipeline,
            "file": filename,
            "bytes": size,
            "publisher_token": token,
            "pipeline_tokens": self._pipeline_tokens,
            "status": "submitted",
            "pipeline_status": None,
            "jobs": [],
            "started_at": started,
        }
        if not self.wait_for_completion:
            return self._finish(context, result)
        if self.deferrable:
            self._defer(result, context["ti"].try_number)
            return None
        with airflow_errors():
            rollup = self._wait(token)
        return self._finish(context, result, rollup)

    def _checked_token(self) -> str:
        from datris_provider.client.errors import DatrisConfigError
        from datris_provider.core.upload import UUID_PATTERN

        token = (self.publisher_token or str(uuid.uuid4())).strip()
        if not UUID_PATTERN.match(token):
            raise DatrisConfigError(f"publisher_token must be a UUID, not {token!r}.")
        return token

    def _listener(self, context: Context | None = None) -> Any:
        from datris_provider.core.listeners import LogListener

        return LogListener(self.log)

    def _sleep(self, seconds: float) -> None:
        # on_kill sets the event: the wait ends at once instead of polling on.
        from datris_provider.client.errors import DatrisRunStoppedError

        if self._stop is None:
            time.sleep(seconds)
        elif self._stop.wait(seconds):
            raise DatrisRunStoppedError(f"Stopped waiting for the {self._what}: the task is being killed.")

    def _wait(self, token: str) -> Rollup:
        from datris_provider.core.steps import drive
        from datris_provider.core.tap_run import PipelineFollower

        assert self._hook is not None
        self._follower = PipelineFollower(
            self._listener(),
            poll_interval=self.poll_interval,
            no_job_timeout=self.no_job_timeout,
            max_poll_failures=self.max_poll_failures,
        )
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        steps = self._follower.follow(token, self._pipeline_tokens, deadline_at=deadline, what=self._what)
        return drive(steps, self._hook.client, self._sleep)

    @property
    def _what(self) -> str:
        return f"upload of '{os.path.basename(self.file_path)}' to pipeline '{self.pipeline}'"

    def _defer(self, result: dict[str, Any], try_number: int) -> None:
        from datris_provider.triggers.datris import DatrisPipelineTrigger

        self.defer(
            trigger=DatrisPipelineTrigger(
                datris_conn_id=self.datris_conn_id,
                publisher_token=result["publisher_token"],
                expected_tokens=result["pipeline_tokens"],
                poll_interval=self.poll_interval,
                no_job_timeout=self.no_job_timeout,
                max_poll_failures=self.max_poll_failures,
                deadline_at=None if self.timeout is None else time.time() + self.timeout,
                what=f"The {self._what}",
                kill_on_timeout=True,
                resume={"result": result, "try_number": try_number},
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Deferrable mode: print the last events, then judge the pipeline's outcome."""
        from datris_provider.hooks.datris import DatrisHook
        from datris_provider.operators._running import check_event, end_of_deferred_wait, stale_event

        if stale_event(event, context, self.log):
            return self.execute(context)  # type: ignore[return-value]
        checked = check_event(event, {"done", "timeout", "error"})
        result = dict(checked["resume"]["result"])
        rollup = end_of_deferred_wait(
            DatrisHook(self.datris_conn_id),
            self._listener(context),
            checked,
            result["publisher_token"],
            poll_interval=self.poll_interval,
        )
        return self._finish(context, result, rollup)

    def _finish(self, context: Context, result: dict[str, Any], rollup: Rollup | None = None) -> dict[str, Any]:
        from datris_provider.assets import keep_outlets
        from datris_provider.core.outcome import jobs_summary, judge_rollup
        from datris_provider.operators._running import airflow_errors

        if rollup is not None:
            result["pipeline_tokens"] = [job.pipeline_token for job in rollup.jobs]
            result["pipeline_status"] = rollup.status
            result["jobs"] = jobs_summary(rollup)
            with airflow_errors():
                warning = judge_rollup(self._what, rollup)
            result["status"] = "warning" if warning else "success"
            if warning:
                self.log.warning("%s", warning)
        kept, notes = keep_outlets(list(self.outlets), result["status"], {job["pipeline"] for job in result["jobs"]})
        for note in notes:
            self.log.info("%s", note)
        self.outlets = kept
        result["duration_ms"] = int((time.time() - float(result.pop("started_at"))) * 1000)
        context["ti"].xcom_push(key="duration_ms", value=result["duration_ms"])
        return result

    def on_kill(self) -> None:
        """Ask Datris to kill this upload's unfinished jobs, once and briefly, and stop waiting."""
        if self._stop is not None:
            self._stop.set()
        if self._hook is None or self._follower is None:
            return
        from datris_provider.core.steps import drive
        from datris_provider.core.tap_run import kill_jobs

        tokens = self._follower.unfinished_tokens(self._pipeline_tokens)
        drive(kill_jobs(tokens, self._listener(), clock=time.monotonic), self._hook.client, time.sleep)
