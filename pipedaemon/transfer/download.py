"""Downloads: ranged and parallel into a temporary file, verified, then renamed.

Large files (PARALLEL_THRESHOLD and up) are fetched in chunks by several streams;
with a resume slot each finished chunk is recorded, so a restarted daemon fetches
only the chunks that were in flight when the old one died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Entry, TransientError
from ..hashing import hash_path
from ..retry import retry
from .common import (
    INLINE_IO,
    MIN_CHUNK,
    OnBytes,
    Tuning,
    chunk_size_for,
    local_error,
    ranges,
    run_bounded,
    temp_name,
)
from .inline import InlineETag
from .resume import ResumeSlot, kept_or_discarded

MiB = 1 << 20
WRITE_UNIT = MiB  # bytes gathered before one write to disk
RESUME_STEP = 8 * MiB  # progress inside a range is recorded this often: at most this is fetched again
log = logging.getLogger("pipedaemon.transfer")


async def download(backend: Backend, src: str, dest: Path, on_bytes: OnBytes, *,
                   entry: Entry | None = None, tuning: Tuning | None = None,
                   resume: ResumeSlot | None = None) -> Entry:
    """Fetch ``src`` into the local file ``dest``: whole and verified, or not at all."""
    tuning = tuning or Tuning()
    if entry is None:
        entry = await retry(lambda: backend.stat(src), what=f"stat {src}")
    try:
        if not dest.parent.is_dir():  # (one stat: mkdir of a folder that exists raises, which costs more)
            dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_error(exc, dest) from exc
    parallel = entry.size >= tuning.parallel_threshold and backend.features.ranged_read
    if entry.size <= INLINE_IO and "-" not in (entry.etag or ""):
        # Many small files: one read into memory, checked there, one write, one rename.
        tag = resume.job_id[:12] if resume is not None else None
        if await _small(backend, src, dest, on_bytes, entry, tuning, tag):
            return entry  # (a copy that did not check out takes the general path below)
    inline_part = _inline_part(entry, parallel)
    parts = download_ranges(entry.size, tuning, inline_part) if parallel else [(0, entry.size)]
    # The job's own temporary name, also for a small file: a re-run after kill -9 overwrites it.
    tag = resume.job_id[:12] if resume is not None else None
    if resume is not None and not parallel:
        resume = None  # a small file restarts whole: at most one chunk again
    ident = {"src": src, "size": entry.size, "etag": entry.etag, "mtime": entry.mtime,
             "ranges": [parts[0][1], len(parts)]}
    tmp, done = await _resume_point(resume, ident, dest, tag)
    async def discard() -> None:
        with contextlib.suppress(OSError):
            tmp.unlink()

    async with kept_or_discarded(resume, discard):
        try:
            await _fetch_verified(backend, src, tmp, parts, done, entry, on_bytes, tuning, resume, ident,
                                  inline_part)
            if entry.mtime is not None:
                os.utime(tmp, (entry.mtime, entry.mtime))
            os.replace(tmp, dest)
        except OSError as exc:  # e.g. the destination folder was removed meanwhile
            raise local_error(exc, dest) from exc
    return entry


async def _small(backend: Backend, src: str, dest: Path, on_bytes: OnBytes, entry: Entry, tuning: Tuning,
                 tag: str | None) -> bool:
    """A small file (up to INLINE_IO) whole: read into memory, its size and plain-md5 ETag checked
    there, then written under the temporary name, given the remote's mtime and renamed, all on
    the event loop (a thread hop costs more than these page-cache writes). False when the bytes
    do not match the entry: nothing was written, the caller fetches and checks them again the
    general way (a fresh stat, the storage's part size)."""
    tuning.chunk(0, 1)

    async def attempt() -> bytes:
        pieces: list[bytes] = []
        got = 0
        async with tuning.slot():
            # length 0 (an empty file) reads to the end, which is nothing.
            stream = backend.read(src, 0, entry.size or None)
            async with contextlib.aclosing(stream):
                async for piece in stream:
                    await tuning.throttle(len(piece))
                    pieces.append(piece)
                    got += len(piece)
        if got < entry.size:
            raise TransientError(f"short read of {src}: {got} of {entry.size} bytes", {"path": src})
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    data = await retry(attempt, what=f"download {src}")
    if not small_matches(data, entry):
        return False
    store_small(dest, data, entry, tag)
    on_bytes(len(data))
    return True


def small_matches(data: bytes, entry: Entry) -> bool:
    """A small file's bytes are what ``entry`` describes: its size, and its plain-md5 ETag if any."""
    etag = entry.etag or ""
    return len(data) == entry.size and (len(etag) != 32 or hashlib.md5(data).hexdigest() == etag)


def store_small(dest: Path, data: bytes, entry: Entry, tag: str | None) -> os.stat_result:
    """``data`` written under the temporary name, given the remote's mtime, renamed to ``dest``; on
    the event loop (a thread hop costs more than these page-cache writes). The file's stat (taken
    before the rename: the same file, one path lookup fewer)."""
    tmp = temp_name(str(dest), tag)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data, 0, None)
            if entry.mtime is not None:
                os.utime(fd, (entry.mtime, entry.mtime))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except OSError as exc:  # e.g. the destination folder was removed meanwhile, or the disk is full
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise local_error(exc, dest) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return st


async def _fetch_verified(backend: Backend, src: str, tmp: Path, parts: list[tuple[int, int]],
                          done: dict[int, int], entry: Entry, on_bytes: OnBytes, tuning: Tuning,
                          resume: ResumeSlot | None, ident: dict[str, object], inline_part: int | None
                          ) -> None:
    """Fetch the missing chunks and check the result; a mismatch is fetched again once."""
    mp = backend.features.multipart
    for attempt in (1, 2):
        hasher = InlineETag(entry.size, entry.etag or "", inline_part) if inline_part else None
        await _fetch(backend, src, tmp, parts, done, on_bytes, tuning, resume, hasher)
        if hasher is not None and hasher.result() == entry.etag and tmp.stat().st_size == entry.size:
            return  # hashed on the way in: no second pass over the file
        recheck = lambda: retry(lambda: backend.stat(src), what=f"stat {src}")  # noqa: E731
        part_size = None if mp is None else lambda: retry(lambda: mp.stored_part_size(src),
                                                          what=f"part size of {src}")
        mismatch = await verify_local(tmp, entry, recheck, part_size)
        if mismatch is None:
            return
        if attempt == 2:
            raise E.ChecksumMismatchError(f"{src}: {mismatch} (after one re-transfer)",
                                          {"path": src, "reason": mismatch})
        on_bytes(-entry.size)
        done = {}
        if resume is not None:
            await resume.start({"ident": ident, "tmp": str(tmp)})


def _inline_part(entry: Entry, parallel: bool) -> int | None:
    """The part size to hash with while downloading, when the ETag can be checked so."""
    etag = entry.etag or ""
    if len(etag.split("-")[0]) != 32:
        return None
    if "-" not in etag:
        return None if parallel else max(entry.size, 1)  # a plain md5 needs one sequential stream
    candidates = part_size_candidates(entry.size, etag)
    return candidates[0] if candidates else None


def download_ranges(size: int, tuning: Tuning, align: int | None = None) -> list[tuple[int, int]]:
    """One range per stream (whole MiB, at least MIN_CHUNK), or ranges of the chosen chunk size.

    Ranges are not what resume counts in (progress inside a range is recorded every
    RESUME_STEP bytes), so a few large ranges cost nothing on a restart, and servers that
    pay per ranged request (some re-read the object for each) are asked few of them.
    """
    if tuning.chunk_size:
        return ranges(size, chunk_size_for(size, tuning.chunk_size))
    count = max(1, min(tuning.streams, size // MIN_CHUNK))
    unit = align or MiB  # ranges on part boundaries let each range hash its parts as they come
    return ranges(size, -(-size // count // unit) * unit)


async def _resume_point(resume: ResumeSlot | None, ident: dict[str, object],
                        dest: Path, tag: str | None = None) -> tuple[Path, dict[int, int]]:
    """The temporary file and how far each range in it got (a fresh start when unknown)."""
    if resume is None:
        return Path(temp_name(str(dest), tag)), {}
    note, done = await resume.load()
    if note is not None and note.get("ident") == ident and Path(str(note["tmp"])).exists():
        return Path(str(note["tmp"])), {i: int(n) for i, n in done.items() if isinstance(n, int)}
    if note is not None:
        with contextlib.suppress(OSError):
            Path(str(note["tmp"])).unlink()
    tmp = Path(temp_name(str(dest), resume.job_id[:12]))
    await resume.start({"ident": ident, "tmp": str(tmp)})
    return tmp, {}


async def _fetch(backend: Backend, src: str, tmp: Path, parts: list[tuple[int, int]], done: dict[int, int],
                 on_bytes: OnBytes, tuning: Tuning, resume: ResumeSlot | None,
                 hasher: InlineETag | None) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (0 if done else os.O_TRUNC)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise local_error(exc, tmp) from exc
    try:
        resumed = sum(min(done.get(i, 0), n) for i, (_, n) in enumerate(parts))
        if resumed:
            on_bytes(resumed)
        todo = [i for i, (_, n) in enumerate(parts) if done.get(i, 0) < n or n == 0]
        if hasher is not None and resumed:
            hasher.broken = True  # bytes written by an earlier daemon were not hashed
        makers = [tuning.reporting(i, len(parts), _chunk(
            backend, src, fd, tmp, i, parts[i], done.get(i, 0), on_bytes, tuning, resume, hasher))
            for i in todo]
        if len(makers) == 1:
            await makers[0]()  # one range (every small file): no task of its own
        else:
            await run_bounded(makers, tuning.streams)
    finally:
        os.close(fd)


def _chunk(backend: Backend, src: str, fd: int, tmp: Path, idx: int, part: tuple[int, int], start: int,
           on_bytes: OnBytes, tuning: Tuning, resume: ResumeSlot | None,
           hasher: InlineETag | None) -> Callable[[], Awaitable[None]]:
    offset, length = part

    async def run() -> None:
        done = start
        recorded = start

        async def record() -> None:
            nonlocal recorded
            if resume is not None and done > recorded:
                await resume.mark(idx, done)  # these bytes are written: a restart skips them
                recorded = done

        async def attempt() -> None:
            nonlocal done
            async with tuning.slot():
                # length 0 (an empty file) reads to the end, which is nothing.
                # aclosing: a failed write must give the stream's connection back at once.
                stream = backend.read(src, offset + done, (length - done) or None)
                pending: list[bytes] = []
                size = 0

                async def flush() -> None:
                    # Small pieces (FTP, SFTP) are gathered: one thread hop per MiB, not per piece.
                    nonlocal done, size
                    if size:
                        # One piece (an FTP Inbox buffer, an S3 MiB) is written as it is: no copy.
                        data = pending[0] if len(pending) == 1 else b"".join(pending)
                        await _pwrite(fd, data, offset + done, tmp, hasher)
                        done += size
                        on_bytes(size)
                        pending.clear()
                        size = 0
                    if done - recorded >= RESUME_STEP:
                        await record()

                async with contextlib.aclosing(stream):
                    async for piece in stream:
                        await tuning.throttle(len(piece))
                        pending.append(piece)
                        size += len(piece)
                        if size >= WRITE_UNIT:
                            await flush()
                    await flush()
                # Recorded before the stream slot goes to another range, so what a kill makes us
                # fetch again stays within streams x RESUME_STEP.
                await record()
            if done < length:
                raise TransientError(f"short read of {src}: {done} of {length} bytes", {"path": src})

        await retry(attempt, what=f"download {src}")
        await record()

    return run


def _write_all(fd: int, data: bytes, offset: int, hasher: InlineETag | None) -> None:
    if hasher is not None:
        hasher.feed(offset, data)  # in the worker thread too: md5 releases the GIL
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


async def _pwrite(fd: int, data: bytes, offset: int, path: Path, hasher: InlineETag | None = None) -> None:
    try:
        if len(data) <= INLINE_IO:
            _write_all(fd, data, offset, hasher)
        else:
            await asyncio.to_thread(_write_all, fd, data, offset, hasher)
    except OSError as exc:
        raise local_error(exc, path) from exc


async def verify_local(path: Path, entry: Entry, recheck: Callable[[], Awaitable[Entry]] | None = None,
                       part_size: Callable[[], Awaitable[int | None]] | None = None) -> str | None:
    """Why the local copy differs from the remote entry, or None when it matches.

    A single-part ETag is the md5 of the data, unless the object is encrypted with KMS
    or a customer key: ``recheck`` (a fresh stat, which reports no ETag for those) is
    asked before calling a difference a mismatch. A multipart ETag depends on the part
    size the uploader chose; when no likely part size reproduces it, ``part_size`` asks
    the storage for the real one (a damaged copy must not pass as "unknown part size");
    only when the storage cannot tell is the size check all we can do.
    """
    size = path.stat().st_size
    if size != entry.size:
        return f"size {size} differs from the remote's {entry.size}"
    etag = entry.etag
    if not etag or len(etag.split("-")[0]) != 32:
        return None  # this storage offers no checksum we can recompute
    tried = part_size_candidates(entry.size, etag)
    for part in tried:
        if await asyncio.to_thread(hash_path, str(path), "s3etag", part) == etag:
            return None
    exact = await part_size() if part_size is not None and "-" in etag else None
    if exact:
        if exact not in tried and await asyncio.to_thread(hash_path, str(path), "s3etag", exact) == etag:
            return None
        return f"checksum {etag} differs from the local copy's (parts of {exact} bytes)"
    if "-" in etag:
        log.info("%s: multipart ETag %s not reproducible (unknown part size); size verified", path, etag)
        return None
    if recheck is not None:
        fresh = await recheck()
        if fresh.etag is None or fresh.etag != etag:
            return None if fresh.etag is None else f"the object changed while it was read ({etag})"
    return f"checksum {etag} differs from the local copy's"


def part_size_candidates(size: int, etag: str) -> list[int]:
    """Part sizes that could have produced ``etag`` (``md5`` or ``md5-N``), likeliest first."""
    if "-" not in etag:
        return [max(size, 1)]
    try:
        n = int(etag.rsplit("-", 1)[1])
    except ValueError:
        return []
    out = [p for p in (m * MiB for m in (8, 5, 16, 15, 32, 64, 128, 256, 512, 1024))
           if math.ceil(size / p) == n]
    guess = math.ceil(size / n / MiB) * MiB
    if guess and math.ceil(size / guess) == n and guess not in out:
        out.append(guess)
    return out
