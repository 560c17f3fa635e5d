"""The journal: what the stand-in received and did, in order, for tests to assert on."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from datris_provider.testing.model import RecordedRequest, RecordedUpload

if TYPE_CHECKING:
    from datris_provider.testing.serving import Call

__all__ = ["Journal"]


class Journal:
    """Requests and uploads in arrival order.

    :param limit: keep at most this many requests (and uploads); None keeps all.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.requests: list[RecordedRequest] = []
        self.uploads: list[RecordedUpload] = []

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self.requests.clear()
            self.uploads.clear()

    def record_request(self, call: Call, fault: str | None) -> bool:
        """Record one request; returns True when old entries were dropped to respect the limit."""
        upload: RecordedUpload | None = None
        with self._lock:
            if call.file_part is not None:
                upload = RecordedUpload(
                    pipeline=call.param("pipeline"),
                    filename=call.file_part.filename,
                    size=call.file_part.size,
                    publishertoken=call.param("publishertoken"),
                    content_type=call.file_part.content_type,
                )
                self.uploads.append(upload)
            self.requests.append(
                RecordedRequest(
                    method=call.method,
                    path=call.path,
                    query=dict(call.query),
                    json=call.parsed_json(),
                    headers=dict(call.headers),
                    fault=fault,
                    upload=upload,
                    form=dict(call.form),
                )
            )
            if self.limit is None or len(self.requests) <= self.limit:
                return False
            del self.requests[: len(self.requests) - self.limit]
            if len(self.uploads) > self.limit:
                del self.uploads[: len(self.uploads) - self.limit]
            return True
