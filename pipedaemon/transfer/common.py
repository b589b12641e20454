"""Pieces shared by downloads and uploads: chunking, temporary names, limits, errors."""

from __future__ import annotations

import contextlib
import errno
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend
from ..hashing import MAX_PARTS
from ..window import run_window
from .limits import Limits, TokenBucket

MiB = 1 << 20
MIN_CHUNK = 8 * MiB
PARALLEL_THRESHOLD = 16 * MiB  # below this a file moves as one stream, and restarts whole
TMP_MARK = ".pdpart"
# Local reads and writes this small are done on the event loop: a thread hop costs more CPU
# than copying them to or from the page cache (it made up much of a many-small-file job).
INLINE_IO = 128 << 10

STREAM_RATE = 16 * MiB  # bytes/s one stream is counted on to carry (for limited jobs' stream counts)

OnBytes = Callable[[int], None]  # new bytes moved (negative when a retry discards some)
# Told of what could not be cleaned up, to retry later (the janitor's ``remember``): (remote_key,
# path, upload_id) for a multipart upload whose abort failed, (remote_key, path, None) for a
# temporary file.
Orphan = Callable[[str, str, str | None], Awaitable[None]]


@dataclass
class Tuning:
    """How one transfer moves, decided in one place: parallelism, part and chunk size, the
    cut-offs between one request and parts, and the limits it obeys. ``fit`` fills the
    remote's own settings in once, when the engine starts a transfer; nothing below the
    engine chooses a size again."""

    streams: int = 8  # chunks of one file in flight at once
    chunk_size: int | None = None  # the user's chunk_size_mb; None: the remote's part size or MIN_CHUNK
    part_size: int | None = None  # multipart (S3): the remote's part_size
    min_part: int = 1  # multipart: the storage's smallest part
    put_threshold: int | None = None  # multipart: up to this size, one write()
    parallel_threshold: int = PARALLEL_THRESHOLD  # offset writes / ranged reads: from this size, chunks
    write_concurrency: int = 2  # parts of a one-pass stream in flight
    limits: Limits | None = None  # the daemon's stream slots and bandwidth
    remote_key: str = ""  # which remote's stream slots to take
    bucket: TokenBucket = field(default_factory=TokenBucket)  # the job's own bandwidth limit
    orphan: Orphan | None = None  # told of what could not be cleaned up (the janitor)
    # Told which chunk of the file is moving (0-based index, count): ProgressEvent.chunk_*.
    on_chunk: Callable[[int, int], None] | None = None

    def fit(self, backend: Backend) -> Tuning:
        """This tuning with ``backend``'s settings (part size, cut-offs) filled in."""
        hints = backend.hints()
        part = hints.part_size or MIN_CHUNK
        return replace(self, part_size=part, min_part=hints.min_part,
                       put_threshold=part if hints.put_threshold is None else hints.put_threshold,
                       write_concurrency=max(1, hints.write_concurrency))

    def multipart(self, backend: Backend, size: int) -> bool:
        """``size`` bytes go to ``backend`` as parts (else as one write())."""
        return backend.features.multipart is not None and size > (
            self.put_threshold if self.put_threshold is not None else self.part_size or MIN_CHUNK)

    def part_for(self, size: int) -> int:
        """The part (or chunk) size for ``size`` bytes: the user's chunk size, else the remote's
        part size; never below the storage's smallest part, never more than 10,000 parts."""
        return max(chunk_size_for(size, self.chunk_size or self.part_size), self.min_part)

    def chunk(self, index: int, count: int) -> None:
        """Chunk ``index`` of ``count`` (part, range, or the whole file as 0 of 1) starts moving."""
        if self.on_chunk is not None:
            self.on_chunk(index, count)

    def reporting(self, index: int, count: int,
                  make: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """``make`` that first reports chunk ``index`` of ``count`` as the one moving."""
        async def run() -> None:
            self.chunk(index, count)
            await make()

        return run

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.limits is None:
            yield
        else:
            async with self.limits.stream(self.remote_key):
                yield

    @property
    def limited(self) -> bool:
        """A bandwidth limit applies (the job's or the daemon's)."""
        return self.bucket.rate > 0 or (self.limits is not None and self.limits.bucket.rate > 0)

    async def throttle(self, n: int) -> None:
        await self.bucket.take(n)
        if self.limits is not None:
            await self.limits.bucket.take(n)


def streams_for(bwlimit_bps: float, default: int) -> int:
    """Streams a job may hold at once. Under its own bandwidth limit no more than the limit can
    keep busy: a job held to 1 MiB/s on 8 streams would sit on 8 of its remote's stream slots,
    mostly waiting for its tokens, while other jobs got none (found by the load suite)."""
    if bwlimit_bps <= 0:
        return default
    return max(1, min(default, math.ceil(bwlimit_bps / STREAM_RATE)))


def chunk_size_for(size: int, override: int | None = None) -> int:
    """Part size for ``size`` bytes: 8 MiB unless overridden, never more than 10,000 parts."""
    return max(override or MIN_CHUNK, math.ceil(size / MAX_PARTS), 1)


def ranges(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(off, min(chunk, size - off)) for off in range(0, size, chunk)] or [(0, 0)]


def temp_name(final: str, tag: str | None = None) -> str:
    """A temporary name beside ``final`` (a local path or a backend path).

    With ``tag`` (a job id) the name is stable, so a restarted job finds its partial file.
    """
    head, _, name = final.rpartition("/")
    tmp = f".{name}{TMP_MARK}-{tag or uuid.uuid4().hex[:8]}"
    return f"{head}/{tmp}" if head or final.startswith("/") else tmp


def is_temp(name: str) -> bool:
    return TMP_MARK in name.rsplit("/", 1)[-1]


def local_error(exc: OSError, path: Path) -> E.DaemonError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return E.StorageError(f"cannot write {path}: {exc.strerror} (disk full or file too large)",
                              {"path": str(path), "errno": exc.errno})
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return E.PermissionDeniedError(f"cannot write {path}: {exc.strerror}", {"path": str(path)})
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return E.NotFoundError(f"the destination folder {path.parent} is gone", {"path": str(path)})
    return E.StorageError(f"cannot write {path}: {exc.strerror or exc}", {"path": str(path)})


async def run_bounded(makers: Iterable[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the coroutines ``makers`` make, ``limit`` at a time, in the one bounded window: the first
    error cancels the rest and propagates as itself (not wrapped in an exception group)."""
    await run_window(makers, limit)
