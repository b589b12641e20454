"""File hashing: md5, sha256 and the ETag S3 gives a file uploaded in parts.

``hash.file`` is a job kind of its own (users compare local files with remote
objects) and the transfer engine reuses ``S3ETag`` and ``hash_path`` to verify.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from typing import Literal

import msgspec

from pipedaemon_sdk.protocol import errors as E

from .jobs import JobContext, job_kind
from .rpc import Context, Params, rpc

CHUNK = 1 << 20
MAX_PARTS = 10_000
Algorithm = Literal["md5", "sha256", "s3etag"]


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


class HashParams(Params):
    path: str
    algorithm: Algorithm = "sha256"
    part_size: int = 8 << 20
    profile: str = "default"


def check_local_file(path: str) -> int:
    """The size of a readable local file, or a clear error naming it."""
    if not os.path.isabs(path):
        raise E.InvalidParamsError(f"path must be absolute: {path!r}", {"field": "path", "path": path})
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise E.NotFoundError(f"no such file: {path}", {"path": path}) from None
    except PermissionError:
        raise E.PermissionDeniedError(f"cannot read {path}", {"path": path}) from None
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a symlink loop
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise E.InvalidParamsError(f"bad path {path!r}: {why}", {"field": "path", "path": path}) from None
    if not os.path.isfile(path):
        raise E.InvalidParamsError(f"not a regular file: {path}", {"field": "path", "path": path})
    if not os.access(path, os.R_OK):
        raise E.PermissionDeniedError(f"cannot read {path}", {"path": path})
    return st.st_size


def check_part_size(size: int, part_size: int) -> None:
    if part_size < 1 or part_size > 5 << 30:
        raise E.InvalidParamsError("part_size must be between 1 byte and 5 GiB", {"field": "part_size"})
    if size > part_size * MAX_PARTS:
        raise E.InvalidParamsError(
            f"part_size {part_size} makes more than {MAX_PARTS} parts for {size} bytes",
            {"field": "part_size"})


@rpc("hash.file", HashParams)
async def hash_file(ctx: Context, p: HashParams) -> object:
    """Start a job hashing a local file (md5, sha256 or s3etag)."""
    size = check_local_file(p.path)
    if p.algorithm == "s3etag":
        check_part_size(size, p.part_size)
    return await ctx.daemon.jobs.submit("hash.file", msgspec.to_builtins(p), p.profile, ctx.conn)


@job_kind("hash.file")
async def run_hash(ctx: JobContext) -> dict[str, str]:
    p = msgspec.convert(ctx.params, HashParams)
    size = check_local_file(p.path)
    name = os.path.basename(p.path)
    ctx.progress(0, size, file_name=name, file_count=1)
    cancelled = threading.Event()
    report = lambda done: ctx.progress_threadsafe(done, size)  # noqa: E731
    try:
        digest = await asyncio.to_thread(hash_path, p.path, p.algorithm, p.part_size, report, cancelled)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    except OSError as exc:
        raise E.StorageError(f"reading {p.path} failed: {exc.strerror or exc}", {"path": p.path}) from exc
    ctx.progress(size, size)
    return {p.algorithm: digest}
