"""What both SFTP transports (asyncssh in ``sftp``, OpenSSH in ``sftp_openssh``) do alike.

Each transport speaks to its own library; the logic over those calls is written once here:
walking a tree, following links while scanning, making parents when an open or a rename
finds none, the remote root rule, and the pooled range writer used by resumed uploads.
"""

from __future__ import annotations

import asyncio
import itertools
import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from pipedaemon_sdk.protocol.errors import StorageError

from .base import Entry, RangeWriter, error_edge, missing_root

SCAN_BATCH = 16  # folders scanned at once while walking a tree

A = TypeVar("A")  # a library's attributes type
T = TypeVar("T")
C = TypeVar("C")  # a library's connection (SFTP client or session)
H = TypeVar("H")  # a library's open file (file object or handle)

Scan = Callable[[str, str], Awaitable[list[tuple[Entry, bool]]]]


async def walk(scan: Scan, path: str, recursive: bool) -> AsyncIterator[Entry]:
    """A folder's files (and, flat, its sub-folders), SCAN_BATCH folders scanned at once.

    ``scan(base, rel)`` lists one folder: (entry named relative to base, descend into it?).
    """
    base = path.rstrip("/") or ("/" if path.startswith("/") else ".")
    frontier = [""]
    while frontier:
        batch, frontier = frontier[:SCAN_BATCH], frontier[SCAN_BATCH:]
        for entries in await asyncio.gather(*(scan(base, rel) for rel in batch)):
            for entry, descend in entries:
                if entry.is_dir and recursive:
                    if descend:
                        frontier.append(entry.name)
                    continue
                yield entry


async def scan_entries(listing: Iterable[tuple[str, A]], folder: str, rel: str, *,
                       is_link: Callable[[A], bool], stat: Callable[[str], Awaitable[A]],
                       entry: Callable[[str, A], Entry],
                       dangling: type[BaseException]) -> list[tuple[Entry, bool]]:
    """One folder's listing as (entry named relative to the walk's base, descend into it?)."""
    out: list[tuple[Entry, bool]] = []
    for name, attrs in listing:
        if name in (".", ".."):
            continue
        descend = True
        if is_link(attrs):
            # Follow links to files; never descend through linked folders (loops).
            try:
                attrs, descend = await stat(posixpath.join(folder, name)), False
            except dangling:
                continue
        out.append((entry(f"{rel}/{name}" if rel else name, attrs), descend))
    return out


async def with_parents(attempt: Callable[[], Awaitable[T]], path: str, *,
                       missing: Callable[[BaseException], bool], check_root: Callable[[], Awaitable[None]],
                       makedirs: Callable[[str], Awaitable[None]]) -> T:
    """``attempt()``; when it finds no parent folder for ``path``, make it (below an existing
    root) and attempt again (a still-missing source then fails as itself)."""
    try:
        return await attempt()
    except Exception as exc:
        parent = posixpath.dirname(path.rstrip("/"))
        if not missing(exc) or not parent:
            raise
    await check_root()
    await makedirs(parent)
    return await attempt()


async def check_root(options: dict[str, Any], isdir: Callable[[str], Awaitable[bool]]) -> None:
    """Folders below the root are made as needed; the root itself only with create_root."""
    root = str(options.get("remotepath") or "").rstrip("/")
    if root and not options.get("create_root") and not await isdir(root):
        raise missing_root(root)


class PooledRangeWriter(RangeWriter, ABC, Generic[C, H]):
    """Writes at offsets into one remote file, through a handle on each pooled connection.

    The file is created if missing and never truncated below ``size``, so a resumed upload
    keeps the chunks already written; longer leftovers are cut to ``size``. A transport
    says how to reach a slot, open, write, size, truncate and close over its library.
    """

    def __init__(self, path: str, slots: int, map_error: Callable[[BaseException], Any]) -> None:
        self._path, self._slots, self._map = path, max(1, slots), map_error
        self._held: dict[int, tuple[C, H]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._rr = itertools.count()
        self._closed = False

    @abstractmethod
    async def _connection(self, index: int) -> C: ...

    @abstractmethod
    async def _open(self, conn: C) -> H: ...

    @abstractmethod
    async def _write(self, conn: C, handle: H, offset: int, data: bytes) -> None: ...

    @abstractmethod
    async def _truncate_above(self, conn: C, handle: H, size: int) -> None: ...

    @abstractmethod
    async def _close(self, conn: C, handle: H) -> None: ...

    def _lost_after_writes(self, exc: BaseException) -> bool:
        """A close refused in a way that cannot have lost acknowledged data (transport's say)."""
        return False

    async def start(self, size: int) -> None:
        conn, handle = await self._handle(0)
        await self._truncate_above(conn, handle, size)

    async def _handle(self, index: int) -> tuple[C, H]:
        """This writer's handle on pool slot ``index``, reopened after a reconnect."""
        async with self._locks.setdefault(index, asyncio.Lock()):
            conn = await self._connection(index)
            held = self._held.get(index)
            if held is not None and held[0] is conn:
                return held
            self._held[index] = (conn, await self._open(conn))
            return self._held[index]

    async def write_at(self, offset: int, data: bytes) -> None:
        if self._closed:
            raise StorageError("write_at on a closed writer", {"path": self._path})
        with error_edge(self._map, self._path):
            conn, handle = await self._handle(next(self._rr) % self._slots)
            await self._write(conn, handle, offset, data)

    async def close(self) -> None:
        self._closed = True
        held, self._held = list(self._held.values()), {}
        results = await asyncio.gather(*(self._close(c, h) for c, h in held), return_exceptions=True)
        with error_edge(self._map, self._path):
            # Closing flushes; an error here means the data may not have landed.
            for result in results:
                if isinstance(result, BaseException) and not self._lost_after_writes(result):
                    raise result
