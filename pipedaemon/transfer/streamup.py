"""Uploads of a one-pass stream (``Bucket.put``, ``put_request``, copies between remotes).

The same choice as for a file, made by the engine from the remote's Tuning: up to
``put_threshold`` one write() (S3: one PUT with Content-MD5), above it a multipart upload
whose parts are cut here, checked by the storage against their md5 and retried from memory.
Elsewhere a temporary name, renamed when complete.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from pipedaemon_sdk import errors as E

from ..backends.base import Backend, Entry
from ..hashing import S3ETag, multipart_etag
from ..retry import retry
from ..window import Window
from .common import Tuning, temp_name
from .upload import (
    _abort,
    _complete,
    _discard,
    _PartMismatch,
    _published,
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

    if backend.caps.atomic_write:
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


async def _multipart_stream(backend: Backend, chunks: AsyncIterator[bytes], dst: str, size: int,
                            tuning: Tuning) -> Entry:
    """A one-pass stream as a multipart upload driven by the engine: each part carries its md5
    (the storage refuses it damaged) and is retried from memory; at most write_concurrency parts
    are in flight (memory: that many parts plus the one being filled)."""
    part = tuning.part_for(size)
    count = max(1, -(-size // part))
    upload_id = await retry(lambda: backend.mp_create(dst), what=f"start upload {dst}")
    md5s: dict[int, bytes] = {}
    etags: dict[int, str] = {}

    async def send(number: int, data: bytes) -> None:
        tuning.chunk(number - 1, count)
        digest = (await asyncio.to_thread(hashlib.md5, data)).digest()

        async def attempt() -> str:
            async with tuning.slot():
                etag = await backend.mp_upload_part(dst, upload_id, number, data, digest)
            if etag != digest.hex():
                raise _PartMismatch(f"part {number} of {dst} arrived different from what was sent",
                                    {"path": dst})
            return etag

        etags[number] = await _retry_mismatch(attempt, f"upload part {number} of {dst}")
        md5s[number] = digest

    async def throttled() -> AsyncIterator[bytes]:
        async for piece in chunks:
            await tuning.throttle(len(piece))
            yield piece

    try:
        async with Window(tuning.write_concurrency) as window:
            number = 0
            async for data in stream_parts(throttled(), size, part, dst):
                number += 1
                await window.submit(send(number, data))
        parts = sorted(etags.items())
        expected = multipart_etag([md5s[n] for n, _ in parts])
        entry = await _complete(backend, dst, upload_id, parts, expected, size)
    except BaseException:
        await asyncio.shield(_abort(backend, dst, upload_id, tuning))
        raise
    await _verified_or_removed(backend, entry, expected, size, dst)
    return entry
