"""A multipart/form-data body streamed from disk, so a large upload is never held in memory."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

CHUNK_BYTES = 1 << 20


class MultipartFile:
    """A form body with text fields and one file part, read from disk in chunks as it is sent.

    Its length is known up front (so it goes out with a ``Content-Length``, not chunked), and it can
    be iterated more than once.

    :param fields: text fields, sent before the file.
    :param file_field: the name of the file part.
    :param path: the file to send.
    :param filename: the file name given to the server.
    """

    def __init__(self, fields: Mapping[str, str], file_field: str, path: str, filename: str) -> None:
        self.boundary = f"datris-{uuid.uuid4().hex}"
        self._path = path
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        quoted = filename.replace('"', "%22")
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._head = head
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.file_size = os.path.getsize(path)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self.file_size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        with open(self._path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
        yield self._tail
