"""The pipes' own connection to the state database.

Pipes write in bursts (10,000 listing rows, sync-state rows for every file moved),
so they use a second connection to the same WAL database and group each burst in
one transaction. Other connections wait on SQLite's busy handler meanwhile; every
transaction here is short.
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
        async with self.conn.execute(sql, tuple(args)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Any:
        async with self.conn.execute(sql, tuple(args)) as cur:
            return await cur.fetchone()


class PipeDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

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
        async with self._lock:
            return await Tx(self.conn).fetchall(sql, args)

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Any:
        async with self._lock:
            return await Tx(self.conn).fetchone(sql, args)
