"""The transfer engine: every byte the daemon moves goes through here.

Policy lives here, not in backends (safety rule 1):
- downloads land in a temporary file beside the target, are checked (size, and the
  S3 ETag where there is one) and only then renamed to the final name;
- uploads go to S3 as one PUT or a parallel multipart upload that completes only
  after every part landed; elsewhere they go to a temporary name and are renamed;
- transient failures are retried per chunk, resuming from the bytes already moved;
- a source file that changes while it is read fails the upload, leaving no object.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from pipedaemon_sdk import errors as E

from .backends.base import Backend, Entry, TransientError
from .hashing import MAX_PARTS, S3ETag, hash_path, multipart_etag
from .retry import retry

MiB = 1 << 20
PIECE = 1 * MiB  # read/write unit inside a chunk
MIN_CHUNK = 8 * MiB
PARALLEL_THRESHOLD = 16 * MiB  # below this a file moves as one stream
TMP_MARK = ".pdpart"

OnBytes = Callable[[int], None]  # called with the number of new bytes moved


@dataclass
class Tuning:
    streams: int = 8  # parallel streams for one file
    chunk_size: int | None = None  # None: chosen per file


def chunk_size_for(size: int, override: int | None = None) -> int:
    """Part size for ``size`` bytes: 8 MiB unless overridden, never more than 10,000 parts."""
    return max(override or MIN_CHUNK, math.ceil(size / MAX_PARTS), 1)


def ranges(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(off, min(chunk, size - off)) for off in range(0, size, chunk)]


def temp_name(final: str) -> str:
    """A temporary name beside ``final`` (works for local paths and backend paths)."""
    head, _, name = final.rpartition("/")
    tmp = f".{name}{TMP_MARK}-{uuid.uuid4().hex[:8]}"
    return f"{head}/{tmp}" if head or final.startswith("/") else tmp


def is_temp(name: str) -> bool:
    return TMP_MARK in name.rsplit("/", 1)[-1]


# -- download --------------------------------------------------------------------------
async def download(backend: Backend, src: str, dest: Path, on_bytes: OnBytes, *,
                   entry: Entry | None = None, tuning: Tuning | None = None) -> Entry:
    """Fetch ``src`` into the local file ``dest``: whole and verified, or not at all."""
    tuning = tuning or Tuning()
    if entry is None:
        entry = await retry(lambda: backend.stat(src), what=f"stat {src}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_name(str(dest)))
    try:
        for attempt in (1, 2):
            await _fetch(backend, src, tmp, entry.size, on_bytes, tuning)
            mismatch = await _verify_local(tmp, entry)
            if mismatch is None:
                break
            if attempt == 2:
                raise E.ChecksumMismatchError(f"{src}: {mismatch} (after one re-transfer)",
                                              {"path": src, "reason": mismatch})
            on_bytes(-entry.size)
        if entry.mtime is not None:
            os.utime(tmp, (entry.mtime, entry.mtime))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return entry


async def _fetch(backend: Backend, src: str, tmp: Path, size: int, on_bytes: OnBytes,
                 tuning: Tuning) -> None:
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _local_error(exc, tmp) from exc
    try:
        chunk = chunk_size_for(size, tuning.chunk_size)
        parallel = size >= PARALLEL_THRESHOLD and backend.caps.ranged_read
        parts = ranges(size, chunk) if parallel else [(0, size)]
        await _run_bounded([_range_fetcher(backend, src, fd, off, n, on_bytes, tmp) for off, n in parts],
                           tuning.streams)
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)


def _range_fetcher(backend: Backend, src: str, fd: int, offset: int, length: int, on_bytes: OnBytes,
                   tmp: Path) -> Callable[[], asyncio.Future[None] | object]:
    async def run() -> None:
        done = 0

        async def attempt() -> None:
            nonlocal done
            # An empty file or the whole stream: length None reads to the end.
            async for piece in backend.read(src, offset + done, length - done if length else None):
                await _pwrite(fd, piece, offset + done, tmp)
                done += len(piece)
                on_bytes(len(piece))
            if length and done < length:
                raise TransientError(f"short read of {src}: {done} of {length} bytes", {"path": src})

        await retry(attempt, what=f"download {src}")

    return run


async def _pwrite(fd: int, data: bytes, offset: int, path: Path) -> None:
    try:
        view = memoryview(data)
        while view:
            n = await asyncio.to_thread(os.pwrite, fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as exc:
        raise _local_error(exc, path) from exc


def _local_error(exc: OSError, path: Path) -> E.DaemonError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return E.StorageError(f"cannot write {path}: {exc.strerror} (disk full or file too large)",
                              {"path": str(path), "errno": exc.errno})
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return E.PermissionDeniedError(f"cannot write {path}: {exc.strerror}", {"path": str(path)})
    if exc.errno == errno.ENOENT:
        return E.NotFoundError(f"folder vanished: {path.parent}", {"path": str(path)})
    return E.StorageError(f"cannot write {path}: {exc.strerror or exc}", {"path": str(path)})


async def _verify_local(path: Path, entry: Entry) -> str | None:
    """Why the local copy differs from the remote entry, or None when it matches."""
    size = path.stat().st_size
    if size != entry.size:
        return f"size {size} differs from the remote's {entry.size}"
    etag = entry.etag
    if not etag or len(etag.split("-")[0]) != 32:
        return None  # this storage offers no checksum we can recompute
    candidates = _part_size_candidates(entry.size, etag)
    for part in candidates:
        local = await asyncio.to_thread(hash_path, str(path), "s3etag", part)
        if local == etag:
            return None
    if "-" in etag and not candidates:
        return None
    return f"checksum {etag} differs from the local copy's"


def _part_size_candidates(size: int, etag: str) -> list[int]:
    """Part sizes that could have produced a multipart ETag (``md5-N``)."""
    if "-" not in etag:
        return [max(size, 1)]
    try:
        n = int(etag.rsplit("-", 1)[1])
    except ValueError:
        return []
    out = []
    for mib in (8, 5, 16, 15, 32, 64, 128, 256, 512, 1024):
        p = mib * MiB
        if math.ceil(size / p) == n:
            out.append(p)
    guess = math.ceil(size / n / MiB) * MiB
    if guess and math.ceil(size / guess) == n and guess not in out:
        out.append(guess)
    return out


# -- upload ----------------------------------------------------------------------------
async def upload(backend: Backend, src: Path, dst: str, on_bytes: OnBytes, *,
                 tuning: Tuning | None = None) -> Entry:
    """Store the local file ``src`` at ``dst``; the final name appears only when complete."""
    tuning = tuning or Tuning()
    try:
        before = src.stat()
    except OSError as exc:
        raise E.NotFoundError(f"cannot read {src}: {exc.strerror}", {"path": str(src)}) from exc
    if backend.caps.multipart and before.st_size >= PARALLEL_THRESHOLD:
        entry = await _upload_multipart(backend, src, dst, before.st_size, on_bytes, tuning)
    elif backend.caps.atomic_write:
        entry = await _upload_single(backend, src, dst, before.st_size, on_bytes)
    else:
        entry = await _upload_renamed(backend, src, dst, before.st_size, on_bytes, tuning)
    _check_unchanged(src, before)
    return entry


def _check_unchanged(src: Path, before: os.stat_result) -> None:
    after = src.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise E.StorageError(f"{src} changed while it was being uploaded; nothing was published",
                             {"path": str(src), "reason": "source changed"})


async def file_chunks(src: Path, size: int, on_bytes: OnBytes, md5: S3ETag | None = None,
                      offset: int = 0) -> AsyncIterator[bytes]:
    """The bytes of a local file, refusing to give more or fewer than ``size``."""
    with open(src, "rb") as f:
        f.seek(offset)
        sent = offset
        while True:
            piece = await asyncio.to_thread(f.read, PIECE)
            if not piece:
                break
            sent += len(piece)
            if sent > size:
                raise E.StorageError(f"{src} grew while it was being uploaded", {"path": str(src)})
            if md5 is not None:
                md5.update(piece)
            on_bytes(len(piece))
            yield piece
    if sent != size:
        raise E.StorageError(f"{src} shrank while it was being uploaded", {"path": str(src)})


async def _upload_single(backend: Backend, src: Path, dst: str, size: int, on_bytes: OnBytes) -> Entry:
    moved = 0

    def count(n: int) -> None:
        nonlocal moved
        moved += n
        on_bytes(n)

    async def attempt() -> Entry:
        nonlocal moved
        on_bytes(-moved)
        moved = 0
        md5 = S3ETag(max(size, 1))
        entry = await backend.write(dst, file_chunks(src, size, count, md5), size)
        _verify_etag(entry, md5.hexdigest(), dst)
        return entry

    return await retry(attempt, what=f"upload {dst}")


def _verify_etag(entry: Entry, expected: str, dst: str) -> None:
    if entry.etag and len(entry.etag.split("-")[0]) == 32 and entry.etag != expected:
        raise E.ChecksumMismatchError(f"{dst}: the storage computed {entry.etag}, we sent {expected}",
                                      {"path": dst})


async def _upload_multipart(backend: Backend, src: Path, dst: str, size: int, on_bytes: OnBytes,
                            tuning: Tuning) -> Entry:
    part = chunk_size_for(size, tuning.chunk_size)
    upload_id = await retry(lambda: backend.mp_create(dst), what=f"start upload {dst}")
    digests: dict[int, bytes] = {}
    etags: dict[int, str] = {}

    def sender(number: int, offset: int, length: int) -> Callable[[], object]:
        async def run() -> None:
            data = await asyncio.to_thread(_pread_exact, src, offset, length)
            digest = hashlib.md5(data).digest()

            async def attempt() -> str:
                return await backend.mp_upload_part(dst, upload_id, number, data)

            etag = await retry(attempt, what=f"upload part {number} of {dst}")
            if etag != digest.hex():
                raise E.ChecksumMismatchError(f"part {number} of {dst} arrived different from what was sent",
                                              {"path": dst, "part": number})
            digests[number], etags[number] = digest, etag
            on_bytes(length)

        return run

    try:
        await _run_bounded([sender(i + 1, off, n) for i, (off, n) in enumerate(ranges(size, part))],
                           tuning.streams)
        parts = sorted(etags.items())
        entry = await retry(lambda: backend.mp_complete(dst, upload_id, parts), what=f"complete {dst}")
    except BaseException:
        with contextlib.suppress(Exception):
            await backend.mp_abort(dst, upload_id)
        raise
    _verify_etag(entry, multipart_etag([digests[n] for n, _ in parts]), dst)
    if entry.size != size:
        raise E.ChecksumMismatchError(f"{dst}: stored {entry.size} bytes, sent {size}", {"path": dst})
    return entry


def _pread_exact(src: Path, offset: int, length: int) -> bytes:
    with open(src, "rb") as f:
        data = os.pread(f.fileno(), length, offset)
    if len(data) != length:
        raise E.StorageError(f"{src} shrank while it was being uploaded", {"path": str(src)})
    return data


async def _upload_renamed(backend: Backend, src: Path, dst: str, size: int, on_bytes: OnBytes,
                          tuning: Tuning) -> Entry:
    tmp = temp_name(dst)
    moved = 0

    def count(n: int) -> None:
        nonlocal moved
        moved += n
        on_bytes(n)

    async def attempt() -> Entry:
        nonlocal moved
        on_bytes(-moved)
        moved = 0
        return await backend.write(tmp, file_chunks(src, size, count), size)

    try:
        await retry(attempt, what=f"upload {dst}")
        await retry(lambda: backend.rename(tmp, dst), what=f"rename {tmp}")
    except BaseException:
        with contextlib.suppress(Exception):
            await backend.delete(tmp)
        raise
    entry = await retry(lambda: backend.stat(dst), what=f"stat {dst}")
    if entry.size != size:
        raise E.ChecksumMismatchError(f"{dst}: stored {entry.size} bytes, sent {size}", {"path": dst})
    return entry


async def upload_stream(backend: Backend, chunks: AsyncIterator[bytes], dst: str, size: int) -> Entry:
    """Store a one-pass stream (it cannot be re-read, so it is not retried)."""
    md5 = S3ETag(max(size, 1))

    async def counted() -> AsyncIterator[bytes]:
        async for piece in chunks:
            md5.update(piece)
            yield piece

    if backend.caps.atomic_write:
        entry = await backend.write(dst, counted(), size)
        if "-" not in (entry.etag or ""):  # a multipart ETag depends on the backend's part size
            _verify_etag(entry, md5.hexdigest(), dst)
    else:
        tmp = temp_name(dst)
        try:
            await backend.write(tmp, counted(), size)
            await retry(lambda: backend.rename(tmp, dst), what=f"rename {tmp}")
        except BaseException:
            with contextlib.suppress(Exception):
                await backend.delete(tmp)
            raise
        entry = await retry(lambda: backend.stat(dst), what=f"stat {dst}")
    if entry.size != size:
        raise E.ChecksumMismatchError(f"{dst}: stored {entry.size} bytes, sent {size}", {"path": dst})
    return entry


async def _run_bounded(makers: list[Callable[[], object]], limit: int) -> None:
    """Run the coroutines ``makers`` make, ``limit`` at a time; the first error cancels the rest."""
    queue = list(reversed(makers))

    async def worker() -> None:
        while queue:
            await queue.pop()()  # type: ignore[misc]

    async with _Group() as tg:
        for _ in range(max(1, min(limit, len(makers)))):
            tg.create_task(worker())


class _Group:
    """Like asyncio.TaskGroup, but the first error propagates as itself, not in a group."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Group:
        return self

    def create_task(self, coro: object) -> None:
        self.tasks.append(asyncio.ensure_future(coro))  # type: ignore[arg-type]

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.gather(*self.tasks)
        except BaseException:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            raise
