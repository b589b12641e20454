"""File hashing: md5, sha256 and the ETag S3 gives a file uploaded in parts.

Pure: no job, no RPC. The transfer engine verifies with ``S3ETag``, ``multipart_etag``
and ``hash_path``; the ``hash.file`` job (filejobs.py) runs ``hash_path`` for users.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable

CHUNK = 1 << 20
MAX_PARTS = 10_000


class S3ETag:
    """Incremental S3 ETag: md5 when the data fits one part, else md5 of part md5s + ``-N``."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self._part = hashlib.md5()
        self._part_len = 0
        self._digests: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self._part_len)
            self._part.update(view[:take])
            self._part_len += take
            view = view[take:]
            if self._part_len == self.part_size:
                self._digests.append(self._part.digest())
                self._part, self._part_len = hashlib.md5(), 0

    def hexdigest(self) -> str:
        digests = list(self._digests)
        if self._part_len or not digests:
            digests.append(self._part.digest())
        if len(digests) == 1:
            return digests[0].hex()
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag of a multipart upload from the md5 digests of its parts."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def new_hasher(algorithm: str, part_size: int) -> S3ETag | hashlib._Hash:
    if algorithm == "s3etag":
        return S3ETag(part_size)
    return hashlib.new(algorithm)


def hash_path(path: str, algorithm: str, part_size: int = 8 << 20,
              on_bytes: Callable[[int], None] | None = None,
              cancelled: threading.Event | None = None) -> str:
    """Hex digest of a local file (blocking: run it in a thread)."""
    h = new_hasher(algorithm, part_size)
    done = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            if cancelled is not None and cancelled.is_set():
                raise asyncio.CancelledError
            h.update(view[:n])
            done += n
            if on_bytes is not None:
                on_bytes(done)
    return h.hexdigest()
