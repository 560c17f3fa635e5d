"""The HTTP side of the stand-in: requests reduced to plain data, and the pytest-httpserver it runs on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_httpserver import Error as HTTPServerInternalError
from pytest_httpserver import HTTPServer, URIPattern
from werkzeug.exceptions import HTTPException

from datris_provider.testing.wire import API_PREFIX

if TYPE_CHECKING:
    from werkzeug import Request, Response
    from werkzeug.datastructures import FileStorage

__all__ = ["Call", "ConnectionCut", "FilePart", "MatchEveryPath", "StandInHTTPServer", "measure_file"]

# The chunk size used to count an upload's bytes without holding the file in memory.
UPLOAD_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class FilePart:
    """What the stand-in keeps of an uploaded file: its name and counts, never its bytes."""

    filename: str
    size: int
    lines: int
    content_type: str | None


def measure_file(storage: FileStorage) -> FilePart:
    """Count an uploaded file's bytes and lines by streaming it in chunks, then close it."""
    size = 0
    newlines = 0
    last_byte = b""
    try:
        while True:
            chunk = storage.stream.read(UPLOAD_CHUNK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            newlines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    finally:
        storage.close()
    lines = newlines + (1 if size and last_byte != b"\n" else 0)
    return FilePart(storage.filename or "", size, lines, storage.content_type or None)


@dataclass
class Call:
    """A request reduced to plain data, so it can still be handled after the client is gone.

    A multipart body is parsed by werkzeug (large files are spooled to disk) instead of being read
    whole: ``body`` stays empty, ``form`` holds the plain fields and ``file_part`` the ``file`` part.
    """

    method: str
    full_path: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    content_type: str
    multipart: bool = False
    form: dict[str, str] = field(default_factory=dict)
    file_part: FilePart | None = None
    multipart_error: bool = False

    @classmethod
    def from_request(cls, request: Request) -> Call:
        full_path = request.path
        path = full_path[len(API_PREFIX) :] if full_path.startswith(API_PREFIX + "/") else full_path
        call = cls(
            method=request.method.upper(),
            full_path=full_path,
            path=path,
            query={key: request.args.get(key, "") for key in request.args},
            headers={name.lower(): value for name, value in request.headers.items()},
            body=b"",
            content_type=request.headers.get("Content-Type", ""),
        )
        if request.mimetype == "multipart/form-data":
            call.multipart = True
            call._read_multipart(request)
        else:
            call.body = request.get_data()
        return call

    def _read_multipart(self, request: Request) -> None:
        try:
            self.form = {key: request.form.get(key, "") for key in request.form}
            files = request.files
        except (HTTPException, ValueError):
            self.multipart_error = True
            return
        try:
            # Spring binds the first part named "file"; the others are only drained.
            storage = files.get("file")
            if storage is not None:
                self.file_part = measure_file(storage)
        finally:
            for other in files.values():
                other.close()

    def param(self, name: str) -> str | None:
        """A Spring ``@RequestParam``: the query string first, then a multipart form field."""
        if name in self.query:
            return self.query[name]
        return self.form.get(name)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    def parsed_json(self) -> Any | None:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def sends_json(self) -> bool:
        media_type = self.content_type.split(";", 1)[0].strip().lower()
        return media_type == "application/json"


class ConnectionCut(HTTPServerInternalError, ConnectionAbortedError):
    """Raised after the socket was shut down on purpose.

    Werkzeug treats a ConnectionError as a dropped connection (nothing is written, nothing logged),
    and pytest-httpserver does not collect its own Error type as a handler failure.
    """


class MatchEveryPath(URIPattern):
    def match(self, uri: str) -> bool:
        return True


class StandInHTTPServer(HTTPServer):
    """pytest-httpserver, except that a multipart body is not read into memory before dispatch.

    The base class calls ``request.get_data()`` on every request (and keeps the request in its log);
    for uploads that would hold the whole file in memory. Multipart requests are left to werkzeug's
    form parser instead, which spools large files to temporary files.
    """

    def application(self, request: Request) -> Response:
        if request.mimetype != "multipart/form-data":
            request.get_data()
        try:
            response = self.dispatch(request)
        finally:
            if request.mimetype == "multipart/form-data":
                request.close()  # closes any spooled file parts
        self.log.append((request, response))
        return response
