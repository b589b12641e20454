"""Remote listings cached in SQLite, shared by every pipe over the same folder.

A listing is keyed by (remote's profile, remote, folder). A pipe is served from
any fresh listing of its own folder or of a folder containing it, so a parent and
its children cost one listing: on a miss the daemon lists the pipe's *scan folder*
(the outermost folder of a same-remote ancestor that contains the pipe's) and the
children filter from it. The daemon's own writes and deletes reach the cache
through ``Remotes.listeners``; ``cached=False`` lists the pipe's folder afresh.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..backends.base import Entry
from ..remotes import Remotes
from ..retry import retry
from ..state import State, Tx
from ..transfer import is_temp

log = logging.getLogger("pipedaemon.pipes.scan")
Key = tuple[str, str]  # (remote's profile, remote name)
# Told what a fresh listing found changed against the cached one: (key, folder, new, modified, gone).
Row = tuple[str, int, "float | None", "str | None"]  # a listed file: name, size, mtime, etag
DiffListener = Callable[[Key, str, list[str], list[str], list[str]], Awaitable[None]]
STALE_AFTER_S = 7 * 86400  # listings nobody refreshed for this long are dropped at start


@dataclass(slots=True)
class RemoteFile:
    name: str  # relative to the pipe's folder, as the storage spelled it (unchecked)
    size: int
    mtime: float | None
    etag: str | None
    mtime_ns: ClassVar[None] = None  # (a plan Side: only local copies have exact times)

    def row(self) -> dict[str, Any]:
        return {"filename": self.name, "size": self.size, "modified_at": self.mtime, "etag": self.etag}


def file_changed(was: RemoteFile, size: int, mtime: float | None, etag: str | None) -> bool:
    """Another size or ETag; without ETags on both sides, a modification time moved by a second
    or more (the cache holds our own writes' time when the storage gave none)."""
    if was.size != size:
        return True
    if was.etag and etag:
        return was.etag != etag
    return was.mtime is not None and mtime is not None and abs(was.mtime - mtime) >= 1.0


async def _delete_under(tx: Tx, key: Key, base: str, prefix: str) -> None:
    """Forget ``base``'s cached entries under ``prefix`` (all of them when it is empty)."""
    sql = "DELETE FROM scan_entries WHERE profile=? AND remote=? AND folder=?"
    args: list[Any] = [*key, base]
    if prefix:
        sql += " AND name >= ? AND name < ?"
        args += [prefix, _upper(prefix)]
    await tx.execute(sql, args)


def _upper(prefix: str) -> str:
    """The smallest string above every string starting with ``prefix`` (which ends in '/')."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class ScanCache:
    def __init__(self, db: State, remotes: Remotes) -> None:
        self.db = db
        self.remotes = remotes
        self.listings = 0  # listings made since start (status and tests)
        self._pending: list[tuple[str, str, str, Entry | None, float]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.diff_listeners: list[DiffListener] = []
        remotes.listeners.append(self.on_change)

    async def open(self) -> None:
        old = time.time() - STALE_AFTER_S
        async with self.db.tx() as tx:
            await tx.execute("DELETE FROM scan_entries WHERE (profile, remote, folder) IN (SELECT profile, "
                             "remote, folder FROM scan_listings WHERE listed_at < ?)", (old,))
            await tx.execute("DELETE FROM scan_listings WHERE listed_at < ?", (old,))

    # -- reading ---------------------------------------------------------------------
    async def files(self, key: Key, folder: str, scan_folder: str, ttl: float,
                    cached: bool = True) -> tuple[list[RemoteFile], float]:
        """Files under ``folder`` (names relative to it) and when they were listed."""
        await self.settle()
        if cached:
            hit = await self._cached(key, folder, ttl)
            if hit is not None:
                return hit
            async with self._lock(key, scan_folder):
                hit = await self._cached(key, folder, ttl)  # another request listed meanwhile
                if hit is None:
                    await self._refresh(key, scan_folder)
        else:
            async with self._lock(key, folder):
                await self._refresh(key, folder)
        hit = await self._cached(key, folder, math.inf)
        assert hit is not None
        return hit

    def _lock(self, key: Key, folder: str) -> asyncio.Lock:
        return self._locks.setdefault((*key, folder), asyncio.Lock())

    async def _cached(self, key: Key, folder: str, ttl: float) -> tuple[list[RemoteFile], float] | None:
        rows = await self.db.fetchall("SELECT folder, listed_at FROM scan_listings WHERE profile=? AND "
                                      "remote=?", key)
        now = time.time()
        fresh = [(f, t) for f, t in rows if folder.startswith(f) and now - t < ttl]
        if not fresh:
            return None
        base, listed_at = max(fresh, key=lambda r: len(r[0]))  # the closest listing
        prefix = folder[len(base):]
        sql = "SELECT name, size, mtime, etag FROM scan_entries WHERE profile=? AND remote=? AND folder=?"
        args: list[Any] = [*key, base]
        if prefix:
            sql += " AND name >= ? AND name < ?"
            args += [prefix, _upper(prefix)]
        cut = len(prefix)
        found = await self.db.fetch_as(lambda n, s, m, e: RemoteFile(n[cut:], s, m, e), sql, args)
        return found, listed_at

    # -- listing ---------------------------------------------------------------------
    async def _refresh(self, key: Key, folder: str) -> None:
        backend, _ = await self.remotes.backend(*key, "read")

        async def collect() -> list[Row]:
            # Rows as they come (no Entry kept): a million files' listing is held once.
            return [(e.name, e.size, e.mtime, e.etag) async for e in backend.list(folder, recursive=True)
                    if not e.is_dir and not is_temp(e.name)]

        rows = await retry(collect, what=f"list {folder or '(login folder)'}")
        self.listings += 1
        now = time.time()
        before = await self._cached(key, folder, math.inf) if self.diff_listeners else None
        async with self.db.tx() as tx:
            listed = await tx.fetchall("SELECT folder FROM scan_listings WHERE profile=? AND remote=?", key)
            for (other,) in listed:
                if other != folder and folder.startswith(other):  # a listing containing this folder
                    await self._replace(tx, key, other, folder[len(other):], rows)
                elif other != folder and other.startswith(folder):  # superseded by this one
                    await tx.execute("DELETE FROM scan_entries WHERE profile=? AND remote=? AND folder=?",
                                     (*key, other))
                    await tx.execute("DELETE FROM scan_listings WHERE profile=? AND remote=? AND folder=?",
                                     (*key, other))
            await self._replace(tx, key, folder, "", rows)
            await tx.execute("INSERT OR REPLACE INTO scan_listings(profile, remote, folder, listed_at) "
                             "VALUES (?,?,?,?)", (*key, folder, now))
        log.debug("listed %s/%s %r: %d files", key[0], key[1], folder, len(rows))
        if before is not None:
            await self._tell_diff(key, folder, before[0], rows)

    async def _tell_diff(self, key: Key, folder: str, old: list[RemoteFile], rows: list[Row]) -> None:
        """Compare with the listing cached before (none cached: nothing to compare with)."""
        prev = {f.name: f for f in old}
        new, modified = [], []
        for name, size, mtime, etag in rows:
            was = prev.pop(name, None)
            if was is None:
                new.append(name)
            elif file_changed(was, size, mtime, etag):
                modified.append(name)
        gone = list(prev)
        if not (new or modified or gone):
            return
        for listener in self.diff_listeners:
            try:
                await listener(key, folder, new, modified, gone)
            except Exception:  # an event lost must not fail the scan that found it
                log.exception("reporting changes of %s/%s %r failed", key[0], key[1], folder)

    @staticmethod
    async def _replace(tx: Tx, key: Key, base: str, prefix: str, rows: list[Row]) -> None:
        """Make ``base``'s entries under ``prefix`` exactly ``rows`` (names relative to the prefix)."""
        await _delete_under(tx, key, base, prefix)
        await tx.executemany(
            "INSERT OR REPLACE INTO scan_entries(profile, remote, folder, name, size, mtime, etag) "
            "VALUES (?,?,?,?,?,?,?)", ((*key, base, prefix + n, s, m, e) for n, s, m, e in rows))

    # -- the daemon's own changes ----------------------------------------------------------
    def on_change(self, profile: str, remote: str, path: str, entry: Entry | None) -> None:
        """Remotes listener: a file the daemon wrote (entry) or deleted (None)."""
        if is_temp(path) or (entry is not None and entry.is_dir):
            return
        self._pending.append((profile, remote, path, entry, time.time()))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def settle(self) -> None:
        """Wait until every change reported so far is in the cache."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.db.tx() as tx:
                    await self._apply(tx, batch)
            except Exception:  # a lost update must not leave a wrong listing behind: drop those listings
                log.exception("updating the scan cache failed; dropping the cached listings touched")
                try:
                    await self._forget([(p, r) for p, r, *_ in batch])
                except Exception:  # the database itself fails: the daemon's log already says so
                    log.exception("dropping cached listings failed")

    async def _apply(self, tx: Tx, batch: list[tuple[str, str, str, Entry | None, float]]) -> None:
        folders: dict[Key, list[str]] = {}
        written: list[tuple[Any, ...]] = []  # files written since the last delete: one executemany

        async def put() -> None:
            if written:
                await tx.executemany("INSERT OR REPLACE INTO scan_entries(profile, remote, folder, name, "
                                     "size, mtime, etag) VALUES (?,?,?,?,?,?,?)", written)
                written.clear()

        for profile, remote, path, entry, when in batch:
            key = (profile, remote)
            if key not in folders:
                rows = await tx.fetchall("SELECT folder FROM scan_listings WHERE profile=? AND remote=?", key)
                folders[key] = [r[0] for r in rows]
            for base in folders[key]:
                if not path.startswith(base):
                    continue
                name = path[len(base):]
                if entry is not None:
                    mtime = entry.mtime if entry.mtime is not None else when
                    written.append((*key, base, name, entry.size, mtime, entry.etag))
                    continue
                await put()  # in the order reported: a delete after a write wins, and the reverse
                if not name or name.endswith("/"):  # a folder (or everything) went away
                    await _delete_under(tx, key, base, name)
                else:
                    await tx.execute("DELETE FROM scan_entries WHERE profile=? AND remote=? AND folder=? "
                                     "AND name=?", (*key, base, name))
        await put()

    async def _forget(self, keys: list[Key]) -> None:
        async with self.db.tx() as tx:
            for key in set(keys):
                await tx.execute("DELETE FROM scan_entries WHERE profile=? AND remote=?", key)
                await tx.execute("DELETE FROM scan_listings WHERE profile=? AND remote=?", key)
