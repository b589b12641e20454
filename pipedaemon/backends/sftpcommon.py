"""What both SFTP transports (asyncssh in ``sftp``, OpenSSH in ``sftp_openssh``) do alike.

Each transport speaks to its own library; the logic over those calls is written once here
(``SFTPCommon``, the backend both derive from): the capabilities they share, the pool of
connections, walking a tree, following links while scanning, making parents when an open
or a rename finds none, the remote root rule, and the pooled range writer used by resumed
uploads. A transport gives its connections, its error mapper and a few calls its library
spells its own way.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar, Generic, TypeVar

from pipedaemon_sdk.protocol.errors import StorageError

from .base import (
    Backend,
    Entry,
    ErrorMapper,
    HostKeys,
    Identity,
    RangeWriter,
    RangeWrites,
    Rename,
    SetMtime,
    Traits,
    error_edge,
    missing_root,
)

SCAN_BATCH = 16  # folders scanned at once while walking a tree
# sshd serves each connection in its own process: several connections use several cores.
DEFAULT_CONNECTIONS = 4

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


class SFTPCommon(Backend, Rename, SetMtime, RangeWrites, HostKeys, Identity, Generic[C, H]):
    """An SFTP backend over one library's connections ``C`` (pooled, round robin) and their open
    files ``H``; everything but the library's own calls is here."""

    protocol = "sftp"
    traits = Traits(ranged_read=True, checksums=())
    seen_host_key: str | None = None  # HostKeys: accept-new without a pin, the key accepted
    map_error: ClassVar[ErrorMapper]  # the transport's one mapper of its library's errors
    host: str
    username: str | None
    _slots: list[Any]

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        super().__init__(options, credentials, max_streams=max_streams)
        self.host = str(options.get("host") or "")
        self.username = options.get("username") or None
        self._slots = [self._new_slot() for _ in range(max(1, int(options.get("connections")
                                                                   or DEFAULT_CONNECTIONS)))]
        self._rr = itertools.count()
        self._ops = asyncio.Semaphore(max(1, max_streams))

    # -- the transport's part --------------------------------------------------------
    @property
    @abstractmethod
    def login(self) -> str | None:
        """The user name the server sees (the ssh config's User when not given)."""

    @abstractmethod
    def _new_slot(self) -> Any: ...

    @abstractmethod
    async def _ensure(self, slot: Any) -> C:
        """The slot's connection, (re)opened when it is not alive."""

    @abstractmethod
    async def _listdir(self, conn: C, folder: str) -> list[tuple[str, Any]] | None:
        """A folder's (name, attributes); None when there is no such folder."""

    @staticmethod
    @abstractmethod
    def _entry(name: str, attrs: Any) -> Entry: ...

    @staticmethod
    @abstractmethod
    def _is_link(attrs: Any) -> bool: ...

    dangling: ClassVar[type[BaseException]]  # what stat of a dangling link raises

    @abstractmethod
    def _parents(self, conn: C) -> dict[str, Any]:
        """How ``with_parents`` makes the missing folders of a path (missing, check_root,
        makedirs) over this library."""

    @abstractmethod
    async def _open_file(self, conn: C, path: str, flags: int) -> H: ...

    @staticmethod
    @abstractmethod
    async def _replace(conn: C, src: str, dst: str) -> None:
        """Rename over an existing ``dst``: atomically where the server offers posix-rename."""

    @abstractmethod
    async def _utime(self, conn: C, path: str, mtime: float) -> None: ...

    @abstractmethod
    def _writer(self, path: str) -> PooledRangeWriter[C, H]: ...

    # -- written once ----------------------------------------------------------------
    async def identity(self) -> tuple[str | None, datetime.datetime | None]:
        return self.login, None

    async def _conn(self) -> C:
        """A connection from the pool, round robin, reopening one that ended."""
        return await self._ensure(self._slots[next(self._rr) % len(self._slots)])

    async def _open_making_parents(self, conn: C, path: str, flags: int) -> H:
        async with self._ops:
            return await with_parents(lambda: self._open_file(conn, path, flags), path, **self._parents(conn))

    async def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        with error_edge(self.map_error, path):
            async for entry in walk(self._scan, path, recursive):
                yield entry

    async def _scan(self, base: str, rel: str) -> list[tuple[Entry, bool]]:
        """One folder's entries (names relative to ``base``); a missing folder is empty."""
        folder = posixpath.join(base, rel) if rel else base
        async with self._ops:
            conn: Any = await self._conn()
            listing = await self._listdir(conn, folder)
            if listing is None:
                return []
            return await scan_entries(listing, folder, rel, is_link=self._is_link, stat=conn.stat,
                                      entry=self._entry, dangling=self.dangling)

    async def stat(self, path: str) -> Entry:
        with error_edge(self.map_error, path):
            async with self._ops:
                conn: Any = await self._conn()
                return self._entry(path, await conn.stat(path))

    async def delete(self, path: str) -> None:
        with error_edge(self.map_error, path):
            async with self._ops:
                conn: Any = await self._conn()
                await conn.remove(path)

    async def mkdir(self, path: str) -> None:
        folder = path.rstrip("/")
        if not folder:
            return
        with error_edge(self.map_error, path):
            async with self._ops:
                parents = self._parents(await self._conn())
                if folder != str(self.options.get("remotepath") or "").rstrip("/"):
                    await parents["check_root"]()  # a folder below the root never makes the root
                await parents["makedirs"](folder)

    async def rmdir(self, path: str) -> None:
        with error_edge(self.map_error, path):
            async with self._ops:
                conn: Any = await self._conn()
                await conn.rmdir(path.rstrip("/") or path)

    async def rename(self, src: str, dst: str) -> None:
        with error_edge(self.map_error, src):
            async with self._ops:
                conn = await self._conn()
                await with_parents(lambda: self._replace(conn, src, dst), dst, **self._parents(conn))

    async def set_mtime(self, path: str, mtime: float) -> None:
        with error_edge(self.map_error, path):
            async with self._ops:
                await self._utime(await self._conn(), path, mtime)

    async def open_writer(self, path: str, size: int) -> RangeWriter:
        with error_edge(self.map_error, path):
            writer = self._writer(path)
            await writer.start(size)
            return writer


class PooledRangeWriter(RangeWriter, ABC, Generic[C, H]):
    """Writes at offsets into one remote file, through a handle on each pooled connection.

    The file is created if missing and never truncated below ``size``, so a resumed upload
    keeps the chunks already written; longer leftovers are cut to ``size``. A transport
    says how to write, size, truncate and close over its library.
    """

    FLAGS: ClassVar[int]  # the library's open flags: write, create, no truncation

    def __init__(self, backend: SFTPCommon[C, H], path: str) -> None:
        self._b, self._path, self._slots, self._map = backend, path, len(backend._slots), backend.map_error
        self._held: dict[int, tuple[C, H]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._rr = itertools.count()
        self._closed = False

    async def _connection(self, index: int) -> C:
        return await self._b._ensure(self._b._slots[index])

    async def _open(self, conn: C) -> H:
        return await self._b._open_making_parents(conn, self._path, self.FLAGS)

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
