"""Rules for pushing a file into a Datris pipeline: what may be sent and what the answer means."""

from __future__ import annotations

import os
import re

from datris_provider.client.errors import DatrisConfigError, DatrisProtocolError

# The server's multipart limit (Spring and its nginx): a larger file is refused after the upload.
MAX_UPLOAD_BYTES = 1024**3
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SUBMITTED_PATTERN = re.compile(r"^(\d+) file\(s\) submitted$")


def check_upload_file(path: str, *, max_bytes: int = MAX_UPLOAD_BYTES) -> int:
    """The file's size, or a clear error before anything is sent."""
    if not path:
        raise DatrisConfigError("file_path is empty: give the path of the file to upload.")
    if not os.path.exists(path):
        raise DatrisConfigError(f"The file to upload does not exist: {path}.")
    if not os.path.isfile(path):
        raise DatrisConfigError(f"The path to upload is not a regular file: {path}.")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise DatrisConfigError(
            f"{path} is {size} bytes; Datris accepts uploads of at most {max_bytes} bytes. Split the file."
        )
    return size


def pipeline_tokens_from_answer(text: str) -> tuple[str, ...]:
    """The upload answer is plain text: a bare pipeline token, or "<n> file(s) submitted" (no tokens)."""
    answer = text.strip().strip('"')
    if UUID_PATTERN.match(answer):
        return (answer,)
    if SUBMITTED_PATTERN.match(answer):
        return ()
    raise DatrisProtocolError(
        f"The upload answer is neither a pipeline token nor a submission count: {answer[:120]!r}."
    )
