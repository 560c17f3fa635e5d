"""``POST /pipeline/upload``: multipart file ingestion into a registered pipeline.

The answer is the bare pipelineToken as plain text (one job), or ``"<n> file(s) submitted"`` with no
token for an archive split into several jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datris_provider.testing.wire import Reply, spring_error

if TYPE_CHECKING:
    from datris_provider.testing.auth import Caller
    from datris_provider.testing.model import StandInPipeline
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call, FilePart
    from datris_provider.testing.state import StandInState

__all__ = ["upload_file"]

# FileUploadAPIController treats these (case-insensitive) endings as archives.
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tar", ".jar")


def upload_file(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """FileUploadAPIController.uploadRawFile: stage the file through StreamNotifier, queue jobs.

    Spring binds the parameters before the method runs, so a missing ``file`` part or ``pipeline``
    parameter is its default 400 and writes nothing. Everything the method itself throws is a 500
    and also writes an error event whose ``filename`` is the pipeline name.
    """
    if not call.multipart:
        # Binding a MultipartFile on a request that is not multipart raises MultipartException,
        # which Spring Boot's default handling answers with a 500 error JSON.
        return spring_error(500, call.full_path)
    if call.multipart_error or call.file_part is None:
        return spring_error(400, call.full_path)  # MissingServletRequestPartException
    pipeline_name = call.param("pipeline")
    if pipeline_name is None:
        return spring_error(400, call.full_path)  # MissingServletRequestParameterException
    # Spring passes an empty optional parameter on as "", and StreamNotifier only replaces null.
    publisher_param = call.param("publishertoken")
    part = call.file_part

    state = context.state
    with state.lock:
        state.register_tap_pipelines_locked()
        pipeline = state.pipelines.get(pipeline_name)
        if pipeline is None:
            state.upload_failed_locked(
                pipeline_name,
                f"Pipeline '{pipeline_name}' is not registered. Use POST /api/v1/pipeline to register it first.",
                "java.lang.IllegalArgumentException",
            )
        entries = _archive_entries(part, pipeline) if _is_archive(part.filename) else None
        if entries is not None and not entries:
            state.upload_failed_locked(pipeline_name, f"No files found in archive: {part.filename}")

        if entries is None:
            records = pipeline.records if pipeline.records is not None else _counted_records(part, pipeline)
            token = _submit_locked(state, pipeline, publisher_param, part.filename, part.size, records)
            return Reply(200, token.encode("utf-8"))
        records = pipeline.records if pipeline.records is not None else 0
        if pipeline.data_type.lower() == "csv" and len(entries) > 1:
            # CSV batch mode: the entries are joined into one payload and one job.
            token = _submit_locked(state, pipeline, publisher_param, entries[0], part.size, records)
            return Reply(200, token.encode("utf-8"))
        # Anything else in an archive (even a single entry) is one job per entry, and no token.
        entry_size = part.size // len(entries)
        for entry in entries:
            _submit_locked(state, pipeline, publisher_param, entry, entry_size, records)
        return Reply(200, f"{len(entries)} file(s) submitted".encode())


def _submit_locked(
    state: StandInState,
    pipeline: StandInPipeline,
    publisher_param: str | None,
    staged_name: str,
    size: int,
    records: int,
) -> str:
    job = state.new_job(
        "",
        pipeline.name,
        "",
        record_count=records,
        data_type=pipeline.data_type,
        outcome=pipeline.outcome,
        pipeline_error=pipeline.error,
        pipeline_warning=pipeline.warning,
        loader=pipeline.loader,
        job_start_seconds=pipeline.job_start_seconds,
        job_seconds=pipeline.job_seconds,
        filename=staged_name,
    )
    # With no publishertoken, the job's publisher token is its own pipelineToken.
    job.publisher_token = job.pipeline_token if publisher_param is None else publisher_param
    state.stage_job_locked(job, staged_name, size)
    return job.pipeline_token


def _is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_entries(part: FilePart, pipeline: StandInPipeline) -> list[str]:
    """The entry names an uploaded archive "holds" (the stand-in never unpacks the bytes)."""
    if part.filename.lower().endswith(".gz"):
        return [part.filename[: -len(".gz")]]
    if isinstance(pipeline.archive_entries, list):
        return list(pipeline.archive_entries)
    stem = part.filename.rsplit(".", 1)[0]
    return [f"{stem}-{index + 1}.{pipeline.data_type}" for index in range(pipeline.archive_entries)]


def _counted_records(part: FilePart, pipeline: StandInPipeline) -> int:
    """Records of an uploaded file: its lines, less the header line for a CSV pipeline."""
    if pipeline.data_type.lower() == "csv":
        return max(0, part.lines - 1)
    return part.lines
