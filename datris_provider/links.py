"""Extra links from a Datris task to the Datris UI: the tap's run page and the pipeline job's page.

The URLs are pushed as XComs as soon as they are known (before any wait), so the links work after a
deferral and on a failed task too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

TAP_RUN_URL_KEY = "datris_tap_run_url"
JOB_URL_KEY = "datris_job_url"


def tap_run_url(ui_url: str, tap_name: str) -> str:
    return f"{ui_url}/taps/{quote(tap_name, safe='')}/run"


def job_url(ui_url: str, pipeline_token: str, pipeline: str) -> str:
    return f"{ui_url}/pipeline/{quote(pipeline_token, safe='')}/{quote(pipeline, safe='')}"


def _pushed_url(ti_key: TaskInstanceKey, key: str) -> str:
    try:
        from airflow.sdk.execution_time.xcom import XCom
    except ImportError:  # older Task SDK
        from airflow.sdk.bases.xcom import BaseXCom as XCom

    value = XCom.get_value(ti_key=ti_key, key=key)
    return value if isinstance(value, str) else ""


class DatrisTapRunLink(BaseOperatorLink):
    """The tap's run page (run and history) in the Datris UI."""

    name = "Datris tap run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pushed_url(ti_key, TAP_RUN_URL_KEY)


class DatrisPipelineJobLink(BaseOperatorLink):
    """The first pipeline job of the run in the Datris UI (the tap run page lists every job)."""

    name = "Datris pipeline job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pushed_url(ti_key, JOB_URL_KEY)
