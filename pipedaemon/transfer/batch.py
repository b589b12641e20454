"""Runs of small files moved in batches, through a backend's SmallFiles capability.

What a local folder as a remote costs per small file is mostly worker-thread hops (a read;
a write, then a publish) and the calls around them, not bytes. A batch moves up to
BATCH_FILES files (BATCH_BYTES at most) in ONE hop of the backend, with every guarantee of
the one-file way: each file is whole in memory and checked (size; plain-md5 ETag where
there is one) before it is stored; stored under a temporary name, then renamed; the mtime
set. A file whose result is anything but success is None here: the caller moves it the
one-file way, which retries, reports Vanished/Changed and raises its error as it always
did. These functions choose nothing: the caller (the pipes' Runner) picks the files.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Entry, SmallFiles, SmallPut
from ..retry import retry
from .common import INLINE_IO, Tuning, temp_name
from .download import small_matches, store_small

BATCH_FILES = 64  # files per batch: the hop's cost shared 64 ways, and progress still moves often
BATCH_BYTES = 1 << 20  # bytes per batch at most (memory: the job's files at once x this)


def batches(sizes: list[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches of files of ``sizes`` (each at most INLINE_IO):
    up to BATCH_FILES files, and no more than BATCH_BYTES unless one file alone."""
    out: list[tuple[int, int]] = []
    start = total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= BATCH_FILES or total + size > BATCH_BYTES):
            out.append((start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def batchable(backend: Backend, tuning: Tuning) -> SmallFiles | None:
    """The capability to batch with, or None: under a bandwidth limit files go one by one (each
    waits for its own tokens, and progress follows the limit)."""
    small = backend.features.small_files
    return None if small is None or tuning.limited else small


async def fetch_small(small: SmallFiles, items: list[tuple[str, Entry, Path]], tuning: Tuning,
                      tag: str | None) -> list[os.stat_result | None]:
    """Each ``(remote path, entry, local target)`` read in one backend call and, when its bytes
    match the entry, stored at the target (``store_small``): its stat, or None (not stored)."""
    if not items:
        return []
    tuning.chunk(0, 1)
    try:
        async with tuning.slot():
            got = await small.read_small([(src, entry.size) for src, entry, _ in items])
    except E.DaemonError:
        return [None] * len(items)  # the one-file way, file by file, says what is wrong
    out: list[os.stat_result | None] = []
    for (_, entry, dest), data in zip(items, got, strict=True):
        if isinstance(data, bytes) and small_matches(data, entry):
            try:
                out.append(store_small(dest, data, entry, tag))
                continue
            except E.DaemonError:
                pass  # (a folder removed meanwhile, a full disk): the one-file way again
        out.append(None)
    return out


async def send_small(backend: Backend, small: SmallFiles, items: list[tuple[Path, os.stat_result, str]],
                     tuning: Tuning, tag: str | None) -> list[Entry | None]:
    """Each ``(local file, its stat, remote path)`` read (on the event loop: the pipe's own folder,
    as the one-file way reads a small file), checked unchanged since ``stat``, then all written
    and published in one backend call: the published entry, or None (not published)."""
    puts: list[SmallPut | None] = []
    for src, before, dst in items:
        data = _read_unchanged(src, before)
        puts.append(None if data is None else SmallPut(temp_name(dst, tag), dst, data, before.st_mtime))
    todo = [p for p in puts if p is not None]
    if not todo:
        return [None] * len(items)
    tuning.chunk(0, 1)
    try:
        async with tuning.slot():
            stored = iter(await small.put_small(todo))
    except E.DaemonError:
        return [None] * len(items)
    out: list[Entry | None] = []
    for put in puts:
        entry = None if put is None else next(stored)
        if put is None or not isinstance(entry, Entry):
            out.append(None)
        elif small_matches(put.data, entry):  # what the storage stored is what we sent
            out.append(entry)
        else:  # nothing unverified stays under its final name; the one-file way sends it again
            with contextlib.suppress(E.DaemonError):
                await retry(lambda d=put.dst: backend.delete(d), what=f"remove unverified {put.dst}",
                            budget_s=5)
            out.append(None)
    return out


def _read_unchanged(src: Path, before: os.stat_result) -> bytes | None:
    """The file's bytes when it is still as ``before`` says (size and mtime, when opened and after
    the read), else None (it changed or went: the one-file way tells which). One open, two
    fstats: a file replaced before the open shows in the first, one written meanwhile in the
    second."""
    if before.st_size > INLINE_IO:
        return None
    was = (before.st_size, before.st_mtime_ns)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _state(os.fstat(fd)) != was:
                return None
            data = os.read(fd, before.st_size + 1)  # one byte more shows that it grew
            while 0 < len(data) <= before.st_size and (more := os.read(fd, before.st_size + 1 - len(data))):
                data += more
            if len(data) != before.st_size or _state(os.fstat(fd)) != was:
                return None
        finally:
            os.close(fd)
    except OSError:
        return None
    return data


def _state(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns

