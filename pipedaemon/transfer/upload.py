"""Uploads: the final name appears only when every byte landed and was checked.

S3 (multipart capability): one PUT for small files, else a parallel multipart
upload whose parts are checked against their md5 and recorded, so a restarted
daemon continues the same upload id without re-sending finished parts. Other
storage: a temporary name beside the target, renamed when complete; with offset
writes (SFTP, local) large files go up in parallel chunks and resume too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Entry, Multipart, RangeWrites, Rename
from ..hashing import S3ETag, multipart_etag
from ..retry import retry
from .common import (
    INLINE_IO,
    OnBytes,
    Tuning,
    chunk_size_for,
    ranges,
    run_bounded,
    temp_name,
)
from .resume import ResumeSlot, kept_or_discarded

PIECE = 1 << 20
T = TypeVar("T")


async def upload(backend: Backend, src: Path, dst: str, on_bytes: OnBytes, *,
                 tuning: Tuning | None = None, resume: ResumeSlot | None = None,
                 extra: dict[str, Any] | None = None) -> Entry:
    """Store the local file ``src`` at ``dst``; verified, and never half-published. ``extra``:
    the backend's arguments of this upload's one write or multipart start (S3 metadata and
    tags), passed with this upload alone, never kept by path."""
    tuning = (tuning or Tuning()).fit(backend)
    try:
        before = src.stat()
    except OSError as exc:
        raise E.NotFoundError(f"cannot read {src}: {exc.strerror}", {"path": str(src)}) from exc
    big = before.st_size >= tuning.parallel_threshold
    ident = {"src": str(src), "size": before.st_size, "mtime_ns": before.st_mtime_ns, "dst": dst}
    unchanged = _Unchanged(src, before)
    if tuning.multipart(backend, before.st_size):  # the engine's one decision: one PUT or parts
        return await _multipart(backend, src, dst, ident, on_bytes, tuning, resume, unchanged, extra)
    if backend.features.atomic_write:
        return await _single(backend, src, dst, before.st_size, on_bytes, tuning, unchanged, extra)
    if backend.features.range_writes is not None and backend.features.rename is not None and big:
        return await _offset_chunks(backend, src, dst, ident, on_bytes, tuning, resume, unchanged)
    # With a job's resume slot the temporary name is the job's own: after a kill -9 the re-run
    # writes over what the killed daemon left instead of leaving it behind on the storage.
    tag = resume.job_id[:12] if resume is not None else None
    return await _renamed_stream(backend, src, dst, before.st_size, on_bytes, tuning, unchanged, tag)


class _Unchanged:
    """Checks, just before an upload is published, that its source is as it was at the start:
    an object mixing old and new contents must never appear."""

    def __init__(self, src: Path, before: os.stat_result) -> None:
        self.src, self.before = src, before

    def __call__(self) -> None:
        try:
            after = self.src.stat()
        except OSError:
            after = None
        if after is None or (after.st_size, after.st_mtime_ns) != (self.before.st_size,
                                                                    self.before.st_mtime_ns):
            raise _changed(self.src)


def _changed(src: Path) -> E.StorageError:
    return E.StorageError(f"{src} changed while it was being uploaded; nothing was published",
                          {"path": str(src), "reason": "source changed"})


async def file_chunks(src: Path, size: int, on_bytes: OnBytes, tuning: Tuning,
                      md5: S3ETag | None = None, unchanged: _Unchanged | None = None) -> AsyncIterator[bytes]:
    """The bytes of a local file, refusing to give more or fewer than ``size``."""
    with open(src, "rb") as f:
        sent = 0
        inline = size <= INLINE_IO
        # A small file in one read (one byte more than expected shows that it grew).
        step = size + 1 if inline else PIECE
        while piece := (f.read(step) if inline else await asyncio.to_thread(f.read, PIECE)):
            sent += len(piece)
            if sent > size:
                raise _changed(src)
            await tuning.throttle(len(piece))
            if md5 is not None:
                md5.update(piece)
            on_bytes(len(piece))
            yield piece
            if inline and len(piece) < step:
                break  # a buffered read comes back short only at the end of the file
    if sent != size:
        raise _changed(src)
    if unchanged is not None:
        unchanged()  # before the stream ends, so a single PUT fails rather than publishes


def _verify_etag(entry: Entry, expected: str, dst: str) -> None:
    if entry.etag and len(entry.etag.split("-")[0]) == 32 and entry.etag != expected:
        raise E.ChecksumMismatchError(f"{dst}: the storage computed {entry.etag}, we sent {expected}",
                                      {"path": dst})


def _verify_size(entry: Entry, size: int, dst: str) -> None:
    if entry.size != size:
        raise E.ChecksumMismatchError(f"{dst}: stored {entry.size} bytes, sent {size}", {"path": dst})


class _Counter:
    """Counts one attempt's bytes so a retry can take them back from the progress."""

    def __init__(self, on_bytes: OnBytes) -> None:
        self.on_bytes, self.n = on_bytes, 0

    def __call__(self, n: int) -> None:
        self.n += n
        self.on_bytes(n)

    def rewind(self) -> None:
        self.on_bytes(-self.n)
        self.n = 0


async def _single(backend: Backend, src: Path, dst: str, size: int, on_bytes: OnBytes,
                  tuning: Tuning, unchanged: _Unchanged, extra: dict[str, Any] | None = None) -> Entry:
    count = _Counter(on_bytes)
    tuning.chunk(0, 1)

    async def attempt() -> Entry:
        count.rewind()
        md5 = S3ETag(max(size, 1))
        async with tuning.slot():
            entry = await backend.write(dst, file_chunks(src, size, count, tuning, md5, unchanged), size,
                                        extra)
        await _verified_or_removed(backend, entry, md5.hexdigest(), size, dst)
        return entry

    return await _retry_mismatch(attempt, f"upload {dst}")


async def _multipart(backend: Backend, src: Path, dst: str, ident: dict[str, object], on_bytes: OnBytes,
                     tuning: Tuning, resume: ResumeSlot | None, unchanged: _Unchanged,
                     extra: dict[str, Any] | None = None) -> Entry:
    size = int(ident["size"])  # type: ignore[call-overload]
    part = tuning.part_for(size)
    mp = backend.features.need(Multipart)
    upload_id, done = await _resume_multipart(backend, dst, {**ident, "part": part}, resume, tuning, extra)
    digests: dict[int, str] = {n: info[1] for n, info in done.items()}
    etags: dict[int, str] = {n: info[0] for n, info in done.items()}
    if done:
        on_bytes(sum(min(part, size - (n - 1) * part) for n in done))

    def sender(number: int, offset: int, length: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            digest = ""

            async def attempt() -> str:
                nonlocal digest
                async with tuning.slot():
                    # Read under the slot: a part waiting for a slot holds no memory (bounded by
                    # the daemon's streams x part size, however many jobs wait).
                    data, digest = await asyncio.to_thread(_read_part, src, offset, length)
                    await tuning.throttle(length)
                    etag = await mp.mp_upload_part(dst, upload_id, number, data, bytes.fromhex(digest))
                    if etag != digest:  # the part arrived damaged: sent again by retry, once more
                        raise _PartMismatch(f"part {number} of {dst} arrived different from what was sent")
                    if resume is not None:  # before the slot is free: a kill costs at most the slots
                        await resume.mark(number, [etag, digest])
                return etag

            etags[number] = await _retry_mismatch(attempt, f"upload part {number} of {dst}")
            digests[number] = digest
            on_bytes(length)

        return run

    count = len(ranges(size, part))
    todo = [(i + 1, off, n) for i, (off, n) in enumerate(ranges(size, part)) if i + 1 not in done]
    try:
        await run_bounded([tuning.reporting(t[0] - 1, count, sender(*t)) for t in todo], tuning.streams)
        unchanged()
        parts = sorted(etags.items())
        expected = multipart_etag([bytes.fromhex(digests[n]) for n, _ in parts])
        entry = await _complete(backend, dst, upload_id, parts, expected, size)
    except BaseException:
        if resume is None or not resume.keep_partial():
            await asyncio.shield(_abort(backend, dst, upload_id, tuning))
            if resume is not None:
                await asyncio.shield(resume.clear())
        raise
    if resume is not None:
        await resume.clear()
    await _verified_or_removed(backend, entry, expected, size, dst)
    return entry


async def _complete(backend: Backend, dst: str, upload_id: str, parts: list[tuple[int, str]], expected: str,
                    size: int) -> Entry:
    """Complete, retrying transient failures. When the connection broke after the storage completed
    the upload, the retry (ours, or the S3 client's own) finds no upload (NotFound): then it is done
    if ``dst`` holds exactly our parts (their md5-of-md5s ETag)."""
    mp = backend.features.need(Multipart)

    async def attempt() -> Entry:
        try:
            return await mp.mp_complete(dst, upload_id, parts, size)
        except E.NotFoundError:
            with contextlib.suppress(E.NotFoundError):
                entry = await backend.stat(dst)
                if entry.etag == expected and entry.size == size:
                    return entry
            raise

    return await retry(attempt, what=f"complete {dst}")


async def _abort(backend: Backend, dst: str, upload_id: str, tuning: Tuning) -> None:
    """Abort a multipart upload; if the storage refuses, hand it to the janitor."""
    mp = backend.features.need(Multipart)
    await _tidy(lambda: mp.mp_abort(dst, upload_id), f"abort upload of {dst}", tuning, dst, upload_id)


async def _discard(backend: Backend, tmp: str, tuning: Tuning) -> None:
    """Delete a failed upload's temporary file; if the storage refuses, hand it to the janitor."""
    await _tidy(lambda: backend.delete(tmp), f"delete {tmp}", tuning, tmp, None)


async def _tidy(act: Callable[[], Awaitable[None]], what: str, tuning: Tuning, path: str,
                upload_id: str | None) -> None:
    try:
        await retry(act, what=what, budget_s=5)
    except E.NotFoundError:
        pass  # already gone
    except Exception:  # noqa: BLE001 - whatever failed, the leftover must not be forgotten
        if tuning.orphan is not None:
            await tuning.orphan(tuning.remote_key, path, upload_id)


class _PartMismatch(E.ChecksumMismatchError):
    pass


async def _retry_mismatch(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """Transient errors are retried by retry(); a part or body that arrived damaged (refused by
    the storage's Content-MD5 check, or an ETag that differs) is sent once more, then 1009."""
    try:
        return await retry(attempt, what=what)
    except E.ChecksumMismatchError:
        return await retry(attempt, what=what)


async def _resume_multipart(backend: Backend, dst: str, ident: dict[str, object],
                            resume: ResumeSlot | None, tuning: Tuning,
                            extra: dict[str, Any] | None = None) -> tuple[str, dict[int, list[str]]]:
    """The upload id to use and the parts already stored under it."""
    mp = backend.features.need(Multipart)
    if resume is not None:
        note, done = await resume.load()
        if note is not None and note.get("ident") == ident:
            upload_id = str(note["upload_id"])
            try:
                stored = await retry(lambda: mp.mp_parts(dst, upload_id), what=f"list parts of {dst}")
            except E.NotFoundError:
                stored = None  # the upload was aborted or expired: start again
            if stored is not None:
                return upload_id, {n: info for n, info in done.items()
                                   if n in stored and stored[n][0] == info[0]}
        elif note is not None:  # the source changed since: that upload is of no use
            await _abort(backend, dst, str(note["upload_id"]), Tuning())
    upload_id = await retry(lambda: mp.mp_create(dst, extra), what=f"start upload {dst}")
    if resume is not None:
        try:
            await resume.start({"ident": ident, "upload_id": upload_id})
        except BaseException:  # not recorded anywhere: abort it now, or it is orphaned
            await asyncio.shield(_abort(backend, dst, upload_id, tuning))
            raise
    return upload_id, {}


def _read_part(src: Path, offset: int, length: int) -> tuple[bytes, str]:
    """A part's bytes and their md5, both off the event loop (hashlib releases the GIL)."""
    data = _pread_exact(src, offset, length)
    return data, hashlib.md5(data).hexdigest()


def _pread_exact(src: Path, offset: int, length: int) -> bytes:
    with open(src, "rb") as f:
        data = os.pread(f.fileno(), length, offset)
    if len(data) != length:
        raise _changed(src)
    return data


async def _publish(backend: Backend, tmp: str, dst: str, size: int, unchanged: _Unchanged) -> Entry:
    unchanged()
    stamp = backend.features.set_mtime
    if (finish := backend.features.finish_upload) is not None:  # the three steps below in one call
        mtime = unchanged.before.st_mtime if stamp is not None else None
        entry = await retry(lambda: finish.finish_upload(tmp, dst, mtime), what=f"publish {tmp}")
        return await _checked_published(backend, entry, dst, size)
    if stamp is not None:
        # The local file's mtime, set before the rename: the copy appears under its final name
        # already equal to the local file by size and mtime, so a push killed before it recorded
        # the file's sync state adopts it when it runs again (instead of calling it a conflict).
        mtime = unchanged.before.st_mtime
        with contextlib.suppress(E.DaemonError):  # a server refusing it still gets the file
            await retry(lambda: stamp.set_mtime(tmp, mtime), what=f"set mtime of {tmp}")
    await rename_retried(backend, tmp, dst)
    return await _published(backend, dst, size)


async def _published(backend: Backend, dst: str, size: int) -> Entry:
    """The entry of what was just renamed to ``dst``; if it is not what was sent, it is removed
    (nothing unverified stays under a final name) and 1009 reported."""
    entry = await retry(lambda: backend.stat(dst), what=f"stat {dst}")
    return await _checked_published(backend, entry, dst, size)


async def _checked_published(backend: Backend, entry: Entry, dst: str, size: int) -> Entry:
    try:
        _verify_size(entry, size, dst)
    except E.ChecksumMismatchError:
        with contextlib.suppress(E.DaemonError):
            await retry(lambda: backend.delete(dst), what=f"remove unverified {dst}", budget_s=5)
        raise
    return entry


async def rename_retried(backend: Backend, tmp: str, dst: str) -> None:
    """Rename, retrying transient failures. A rename is not idempotent: when the connection broke
    after the server did it, the retry finds no ``tmp`` (NotFound). Then it is done if ``tmp`` is
    gone and ``dst`` is there (the caller checks its size)."""
    mover = backend.features.need(Rename)
    tries = 0

    async def attempt() -> None:
        nonlocal tries
        tries += 1
        try:
            await mover.rename(tmp, dst)
        except E.NotFoundError:
            if tries == 1 or await _exists(backend, tmp) or not await _exists(backend, dst):
                raise

    await retry(attempt, what=f"rename {tmp}")


async def _exists(backend: Backend, path: str) -> bool:
    try:
        await backend.stat(path)
    except E.NotFoundError:
        return False
    return True


async def _renamed_stream(backend: Backend, src: Path, dst: str, size: int, on_bytes: OnBytes,
                          tuning: Tuning, unchanged: _Unchanged, tag: str | None = None) -> Entry:
    tmp = temp_name(dst, tag)
    count = _Counter(on_bytes)
    tuning.chunk(0, 1)

    async def attempt() -> Entry:
        count.rewind()
        async with tuning.slot():
            return await backend.write(tmp, file_chunks(src, size, count, tuning), size)

    try:
        await retry(attempt, what=f"upload {dst}")
        return await _publish(backend, tmp, dst, size, unchanged)
    except BaseException:
        await asyncio.shield(_discard(backend, tmp, tuning))
        raise


async def _offset_chunks(backend: Backend, src: Path, dst: str, ident: dict[str, object],
                         on_bytes: OnBytes, tuning: Tuning, resume: ResumeSlot | None,
                         unchanged: _Unchanged) -> Entry:
    size = int(ident["size"])  # type: ignore[call-overload]
    chunk = chunk_size_for(size, tuning.chunk_size)
    ident = {**ident, "chunk": chunk}
    tmp, done = temp_name(dst), set[int]()
    if resume is not None:
        note, marks = await resume.load()
        if note is not None and note.get("ident") == ident:
            tmp, done = str(note["tmp"]), set(marks)
        else:
            tmp = temp_name(dst, resume.job_id[:12])
            await resume.start({"ident": ident, "tmp": tmp})
    parts = ranges(size, chunk)
    if done:
        on_bytes(sum(parts[i][1] for i in done))
    opener = backend.features.need(RangeWrites)
    writer = await retry(lambda: opener.open_writer(tmp, size), what=f"open {tmp}")

    def sender(idx: int) -> Callable[[], Awaitable[None]]:
        offset, length = parts[idx]

        async def run() -> None:
            # Under a bandwidth limit the chunk goes in pieces, so the limit and the progress
            # move per MiB rather than in bursts of a whole chunk.
            step = PIECE if tuning.limited else length or 1
            count = _Counter(on_bytes)

            async def attempt() -> None:
                count.rewind()
                async with tuning.slot():  # read under the slot, as multipart parts are
                    data = memoryview(await asyncio.to_thread(_pread_exact, src, offset, length))
                    for at in range(0, length, step):
                        piece = data[at:at + step]
                        await tuning.throttle(len(piece))
                        await writer.write_at(offset + at, piece)
                        count(len(piece))
                    if resume is not None:  # before the slot is free: a kill costs at most the slots
                        await resume.mark(idx)

            await retry(attempt, what=f"upload {dst} at {offset}")

        return run

    async with kept_or_discarded(resume, lambda: _discard(backend, tmp, tuning)):
        try:
            await run_bounded([tuning.reporting(i, len(parts), sender(i))
                               for i in range(len(parts)) if i not in done], tuning.streams)
        finally:
            await writer.close()
        entry = await _publish(backend, tmp, dst, size, unchanged)
    return entry


async def _verified_or_removed(backend: Backend, entry: Entry, expected: str, size: int, dst: str) -> None:
    """A published object whose size or checksum differs from what was sent is removed, then
    1009: nothing unverified stays under its final name (the storage's own Content-MD5 check
    makes this the rare case)."""
    try:
        _verify_size(entry, size, dst)
        _verify_etag(entry, expected, dst)
    except E.ChecksumMismatchError:
        with contextlib.suppress(E.DaemonError):
            await retry(lambda: backend.delete(dst), what=f"remove unverified {dst}", budget_s=5)
        raise
