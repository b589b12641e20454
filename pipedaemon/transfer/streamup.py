"""Uploads of a one-pass stream (``Bucket.put``, ``put_request``, copies between remotes).

The same choice as for a file, made by the engine from the remote's Tuning: up to
``put_threshold`` one write() (S3: one PUT with Content-MD5), above it a multipart upload
whose parts are cut here, checked by the storage against their md5 and retried from memory.
Elsewhere a temporary name, renamed when complete. A source that can be read again from an
offset (a remote object: mirrors) goes up resumable per part (``upload_stream_resumable``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Entry, Multipart
from ..hashing import S3ETag, multipart_etag
from ..retry import retry
from ..window import Window
from .common import Tuning, temp_name
from .resume import ResumeSlot
from .upload import (
    _abort,
    _complete,
    _discard,
    _PartMismatch,
    _published,
    _resume_multipart,
    _retry_mismatch,
    _verified_or_removed,
    rename_retried,
)


async def upload_stream(backend: Backend, chunks: AsyncIterator[bytes], dst: str, size: int,
                        tuning: Tuning | None = None) -> Entry:
    """Store a one-pass stream of ``size`` bytes. The stream is not read twice: one write() is
    not retried, while parts (held in memory) are, like an upload's."""
    tuning = (tuning or Tuning()).fit(backend)
    if tuning.multipart(backend, size):
        return await _multipart_stream(backend, chunks, dst, size, tuning)
    tuning.chunk(0, 1)
    md5 = S3ETag(max(size, 1))

    async def counted() -> AsyncIterator[bytes]:
        async for piece in chunks:
            await tuning.throttle(len(piece))
            md5.update(piece)
            yield piece

    if backend.features.atomic_write:
        async with tuning.slot():
            entry = await backend.write(dst, counted(), size)
        await _verified_or_removed(backend, entry, md5.hexdigest(), size, dst)
        return entry
    tmp = temp_name(dst)
    try:
        async with tuning.slot():
            await backend.write(tmp, counted(), size)
        await rename_retried(backend, tmp, dst)
        return await _published(backend, dst, size)
    except BaseException:
        await asyncio.shield(_discard(backend, tmp, tuning))
        raise


async def stream_parts(chunks: AsyncIterator[bytes], size: int, part: int, dst: str) -> AsyncIterator[bytes]:
    """The stream cut into parts of ``part`` bytes (the last shorter), refusing more or fewer
    than ``size`` bytes in all."""
    buf = bytearray()
    seen = 0
    async for piece in chunks:
        seen += len(piece)
        if seen > size:
            raise E.StorageError(f"{dst}: the stream gave more than the {size} bytes announced; nothing "
                                 "was stored", {"path": dst})
        buf += piece
        while len(buf) >= part:
            yield bytes(buf[:part])
            del buf[:part]
    if seen != size:
        raise E.StorageError(f"{dst}: the stream gave {seen} of {size} bytes; nothing was stored",
                             {"path": dst})
    if buf or size == 0:
        yield bytes(buf)


class _Parts:
    """The parts of one multipart upload sent from memory: each carries its md5 (the storage
    refuses it damaged) and is retried; with a resume slot each stored part is noted."""

    def __init__(self, backend: Backend, dst: str, upload_id: str, tuning: Tuning, count: int,
                 resume: ResumeSlot | None = None) -> None:
        self.backend, self.dst, self.upload_id, self.tuning = backend, dst, upload_id, tuning
        self.mp = backend.features.need(Multipart)
        self.count, self.resume = count, resume
        self.md5s: dict[int, bytes] = {}
        self.etags: dict[int, str] = {}

    async def send(self, number: int, data: bytes) -> None:
        self.tuning.chunk(number - 1, self.count)
        digest = (await asyncio.to_thread(hashlib.md5, data)).digest()
        dst = self.dst

        async def attempt() -> str:
            async with self.tuning.slot():
                etag = await self.mp.mp_upload_part(dst, self.upload_id, number, data, digest)
                if etag != digest.hex():
                    raise _PartMismatch(f"part {number} of {dst} arrived different from what was sent",
                                        {"path": dst})
                if self.resume is not None:  # before the slot is free: a kill costs at most the slots
                    await self.resume.mark(number, [etag, digest.hex()])
            return etag

        self.etags[number] = await _retry_mismatch(attempt, f"upload part {number} of {dst}")
        self.md5s[number] = digest

    async def throttled(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for piece in chunks:
            await self.tuning.throttle(len(piece))
            yield piece

    async def complete(self, size: int) -> tuple[Entry, str]:
        parts = sorted(self.etags.items())
        expected = multipart_etag([self.md5s[n] for n, _ in parts])
        return await _complete(self.backend, self.dst, self.upload_id, parts, expected, size), expected


async def _multipart_stream(backend: Backend, chunks: AsyncIterator[bytes], dst: str, size: int,
                            tuning: Tuning) -> Entry:
    """A one-pass stream as a multipart upload driven by the engine: each part is retried from
    memory; at most write_concurrency parts are in flight (memory: that many parts plus the one
    being filled)."""
    part = tuning.part_for(size)
    mp = backend.features.need(Multipart)
    upload_id = await retry(lambda: mp.mp_create(dst), what=f"start upload {dst}")
    parts = _Parts(backend, dst, upload_id, tuning, max(1, -(-size // part)))
    try:
        async with Window(tuning.write_concurrency) as window:
            number = 0
            async for data in stream_parts(parts.throttled(chunks), size, part, dst):
                number += 1
                await window.submit(parts.send(number, data))
        entry, expected = await parts.complete(size)
    except BaseException:
        await asyncio.shield(_abort(backend, dst, upload_id, tuning))
        raise
    await _verified_or_removed(backend, entry, expected, size, dst)
    return entry

async def upload_stream_resumable(backend: Backend, read_from: Callable[[int], AsyncIterator[bytes]],
                                  dst: str, size: int, ident: dict[str, object], resume: ResumeSlot,
                                  tuning: Tuning, on_skipped: Callable[[int], None] | None = None
                                  ) -> Entry:
    """A multipart upload of a source that can be read from an offset (a remote object), resumable
    per part: the upload id and each part stored are noted in the job's ``resume`` slot, so a
    re-run after ``kill -9`` keeps that upload and reads the source again only from the first part
    not stored (``read_from(offset)``), sending only the parts missing. Parts are cut, checked and
    retried as :func:`upload_stream`'s; ``on_skipped`` is told the bytes of parts not sent again."""
    tuning = tuning.fit(backend)
    part = tuning.part_for(size)
    count = max(1, -(-size // part))
    upload_id, done = await _resume_multipart(backend, dst, {**ident, "part": part}, resume, tuning)
    parts = _Parts(backend, dst, upload_id, tuning, count, resume)
    parts.etags.update({n: str(info[0]) for n, info in done.items()})
    parts.md5s.update({n: bytes.fromhex(info[1]) for n, info in done.items()})
    first = next((n for n in range(1, count + 1) if n not in done), count + 1)
    if done and on_skipped is not None:
        on_skipped(sum(min(part, size - (n - 1) * part) for n in done))
    try:
        if first <= count:  # (else every part was stored before the kill: only complete)
            offset = (first - 1) * part  # a part boundary: the parts cut from here are the same
            async with Window(tuning.write_concurrency) as window:
                number = first - 1
                async for data in stream_parts(parts.throttled(read_from(offset)), size - offset, part, dst):
                    number += 1
                    if number not in done:  # (stored, after an earlier one still in flight at the kill)
                        await window.submit(parts.send(number, data))
        entry, expected = await parts.complete(size)
    except BaseException:
        if not resume.keep_partial():  # (a daemon stopping keeps the upload for the next one)
            await asyncio.shield(_abort(backend, dst, upload_id, tuning))
            await asyncio.shield(resume.clear())
        raise
    await resume.clear()
    await _verified_or_removed(backend, entry, expected, size, dst)
    return entry
