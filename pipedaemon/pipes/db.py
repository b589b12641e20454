"""The pipes' own connection to the state database.

Pipes write in bursts (10,000 listing rows, sync-state rows for every file moved),
so they use a second connection to the same WAL database and group each burst in
one transaction. Other connections wait on SQLite's busy handler meanwhile; every
transaction here is short.

Reads outside a transaction go through a third connection, without the write lock:
WAL lets them read the last commit while a burst is being written, so a `pipe.list`
does not queue behind a scan being stored (under load it did, at 100-300 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from ..state import BUSY_TIMEOUT_S


class Tx:
    """Statements inside one open transaction (the caller holds the lock)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        cur = await self.conn.execute(sql, tuple(args))
        n = cur.rowcount
        await cur.close()
        return n

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        # One call on aiosqlite's thread: no statement stays open across awaits (state.py).
        return list(await self.conn.execute_fetchall(sql, tuple(args)))

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Any:
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None


class PipeDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            for attr in ("_conn", "_read"):
                conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
                setattr(self, attr, conn)
                await conn.execute("PRAGMA synchronous=NORMAL")
                await conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except BaseException:
            await self.close()  # aiosqlite's threads are not daemon threads (state.py)
            raise

    async def close(self) -> None:
        for attr in ("_conn", "_read"):
            conn = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                await conn.close()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("the pipes database is closed")
        return self._conn

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        """One write transaction; statements of other coroutines wait for it."""
        async with self._lock:
            tx = Tx(self.conn)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await tx.execute("ROLLBACK")
                raise
            await tx.execute("COMMIT")

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        async with self._lock:
            return await Tx(self.conn).execute(sql, args)

    async def fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """Rows of the last commit; never waits for a transaction being written."""
        if self._read is None:
            raise RuntimeError("the pipes database is closed")
        return await Tx(self._read).fetchall(sql, args)

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Any:
        if self._read is None:
            raise RuntimeError("the pipes database is closed")
        return await Tx(self._read).fetchone(sql, args)
