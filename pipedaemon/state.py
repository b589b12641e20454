"""The daemon's SQLite state (WAL), with a schema version and forward migrations.

Each migration is applied once, in order, inside a transaction; ``PRAGMA
user_version`` records how far a database has come. Add new tables by appending.

One ``State`` holds two connections to the file. Writes go through the first, one at a
time: a statement on its own (``execute``), or a burst grouped in one transaction
(``async with state.tx() as tx:`` -- 10,000 listing rows, the sync-state rows of every
file moved), statements of other coroutines waiting for it. Reads outside a
transaction go through the second: WAL lets them read the last commit while a burst is
being written, so a ``pipe.list`` does not queue behind a scan being stored (under load
it did, at 100-300 ms). A transaction is committed whole or not at all, so a daemon
killed in the middle (kill -9) leaves the state of the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: jobs and their final state, so job.get answers after a restart.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        profile TEXT NOT NULL DEFAULT 'default',
        state TEXT NOT NULL,
        params BLOB NOT NULL,
        result BLOB,
        error BLOB,
        progress BLOB,
        checkpoint BLOB,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_state ON jobs(state);
    """,
    # 2: remotes; credentials sealed by secrets.Vault, host keys pinned by accept-new.
    """
    CREATE TABLE remotes (
        profile TEXT NOT NULL,
        name TEXT NOT NULL,
        protocol TEXT NOT NULL,
        location TEXT,
        options BLOB NOT NULL,
        credentials BLOB NOT NULL,
        host_key TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (profile, name)
    );
    """,
    # 3: resume notes of the transfer engine (transfer/resume.py).
    """
    CREATE TABLE transfer_resume (
        job_id TEXT NOT NULL,
        target TEXT NOT NULL,
        note BLOB NOT NULL,
        PRIMARY KEY (job_id, target)
    );
    CREATE TABLE transfer_done (
        job_id TEXT NOT NULL,
        target TEXT NOT NULL,
        idx INTEGER NOT NULL,
        info BLOB,
        PRIMARY KEY (job_id, target, idx)
    );
    """,
    # 4: pipes (pipes/store.py), profile config, cached remote listings (pipes/scan.py) and
    # each pipe file's state at its last sync (pipes/syncstate.py).
    """
    CREATE TABLE pipes (
        profile TEXT NOT NULL,
        name TEXT NOT NULL,
        settings BLOB NOT NULL,
        first_pull_done INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (profile, name)
    );
    CREATE TABLE pipe_profiles (
        profile TEXT PRIMARY KEY,
        config BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE scan_listings (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        folder TEXT NOT NULL,
        listed_at REAL NOT NULL,
        PRIMARY KEY (profile, remote, folder)
    );
    CREATE TABLE scan_entries (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        folder TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime REAL,
        etag TEXT,
        PRIMARY KEY (profile, remote, folder, name)
    ) WITHOUT ROWID;
    CREATE TABLE sync_state (
        profile TEXT NOT NULL,
        pipe TEXT NOT NULL,
        filename TEXT NOT NULL,
        local_size INTEGER,
        local_mtime_ns INTEGER,
        remote_size INTEGER,
        remote_mtime REAL,
        remote_etag TEXT,
        synced_at REAL NOT NULL,
        PRIMARY KEY (profile, pipe, filename)
    ) WITHOUT ROWID;
    """,
    # 5: multipart uploads whose abort failed; the janitor retries them (transfer/janitor.py).
    """
    CREATE TABLE pending_aborts (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        path TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (profile, remote, upload_id)
    );
    """,
    # 6: temporary files on a remote whose delete failed (the storage was down); the janitor
    # retries them too.
    """
    CREATE TABLE pending_deletes (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        path TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (profile, remote, path)
    );
    """,
    # 7: metadata beside the objects (metadata/store.py) and provenance links between object
    # versions (provenance/store.py).
    """
    CREATE TABLE object_metadata (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        path TEXT NOT NULL,
        record BLOB NOT NULL,
        native INTEGER NOT NULL DEFAULT 0,
        etag TEXT,
        size INTEGER,
        mtime REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (profile, remote, path)
    );
    CREATE TABLE prov_edges (
        id INTEGER PRIMARY KEY,
        profile TEXT NOT NULL,
        from_ref TEXT NOT NULL,
        from_version TEXT NOT NULL,
        from_identity BLOB NOT NULL,
        to_ref TEXT NOT NULL,
        to_version TEXT NOT NULL,
        to_identity BLOB NOT NULL,
        rel_type TEXT NOT NULL,
        analysis_mode TEXT,
        qualifier_note TEXT,
        qualifier_time TEXT,
        qualifiers BLOB,
        created_at REAL NOT NULL,
        UNIQUE (profile, from_ref, from_version, to_ref, to_version, rel_type)
    );
    CREATE INDEX prov_edges_from ON prov_edges(profile, from_ref, from_version);
    CREATE INDEX prov_edges_to ON prov_edges(profile, to_ref, to_version);
    """,
    # 8: change events with an increasing id (events.py), schedules' run state (schedules.py),
    # and what each mirror last copied (mirror.py).
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        profile TEXT NOT NULL,
        pipe TEXT,
        time REAL NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE schedule_state (
        profile TEXT NOT NULL,
        pipe TEXT NOT NULL,
        spec BLOB NOT NULL,
        next_run REAL,
        last_run REAL,
        last_status TEXT,
        last_error BLOB,
        failures INTEGER NOT NULL DEFAULT 0,
        job_id TEXT,
        PRIMARY KEY (profile, pipe)
    );
    CREATE TABLE mirror_state (
        profile TEXT NOT NULL,
        mirror TEXT NOT NULL,
        name TEXT NOT NULL,
        src_size INTEGER,
        src_mtime REAL,
        src_etag TEXT,
        dst_size INTEGER,
        dst_etag TEXT,
        inflight INTEGER NOT NULL DEFAULT 0,
        synced_at REAL NOT NULL,
        PRIMARY KEY (profile, mirror, name)
    ) WITHOUT ROWID;
    """,
    # 9: owners and grants of remotes and pipes on a shared daemon (access.py): role is
    # owner, admin, write or read; username "public" is every user who can connect.
    """
    CREATE TABLE share_acl (
        kind TEXT NOT NULL,
        profile TEXT NOT NULL,
        name TEXT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL,
        granted_by TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (kind, profile, name, username)
    );
    """,
    # 10: what a running pull or push moved so far (its result), written in the same
    # transaction as the sync state (pipes/syncstate.py), so the two agree after kill -9.
    """
    CREATE TABLE pipe_job_done (
        job_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER,
        modified_at REAL,
        action TEXT,
        etag TEXT,
        PRIMARY KEY (job_id, filename)
    ) WITHOUT ROWID;
    """,
]


BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's transaction (a CLI, a test)


class Tx:
    """Statements on one connection: inside an open write transaction (the caller holds the
    write lock), or reads of the last commit."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        cur = await self.conn.execute(sql, tuple(args))
        n = cur.rowcount
        await cur.close()
        return n

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    # A read runs to its end in one call on aiosqlite's thread. Stepped across awaits, its
    # statement would hold a read transaction open while other coroutines use the same
    # connection; a write then finds a stale snapshot and SQLite fails it at once with
    # "database is locked", without the busy timeout (found by the load suite in CI).
    async def fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        return list(await self.conn.execute_fetchall(sql, tuple(args)))

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Any:
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None


async def _connect(path: Path) -> aiosqlite.Connection:
    # sqlite3's default 5 s ran out on a loaded machine ("database is locked" crashed a push,
    # found by the soak); a statement waits up to 30 s for another process's transaction.
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        await conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        await conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        await conn.close()
        raise
    return conn


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._write: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one write (statement or transaction) at a time

    async def open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._write = await _connect(self.path)
            self.path.chmod(0o600)
            await self._write.execute("PRAGMA journal_mode=WAL")
            await self._write.execute("PRAGMA foreign_keys=ON")
            await self.migrate()
            self._read = await _connect(self.path)
            await self._read.execute("PRAGMA query_only=ON")
        except BaseException:
            # aiosqlite's worker thread is not a daemon thread: left open, it keeps a failed
            # daemon alive (holding the lock) instead of letting it exit with its error.
            await self.close()
            raise

    async def migrate(self) -> None:
        version = (await Tx(self._writer).fetchone("PRAGMA user_version"))[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._writer.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    async def close(self) -> None:
        for attr in ("_read", "_write"):
            conn = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                await conn.close()

    @property
    def _writer(self) -> aiosqlite.Connection:
        if self._write is None:
            raise RuntimeError("state is closed")
        return self._write

    @property
    def _reader(self) -> Tx:
        if self._read is None:
            raise RuntimeError("state is closed")
        return Tx(self._read)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        """One write transaction, committed when the block ends (rolled back if it raises);
        writes of other coroutines wait for it. Reads inside it go through ``tx``."""
        async with self._lock:
            tx = Tx(self._writer)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await tx.execute("ROLLBACK")
                raise
            await tx.execute("COMMIT")

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        """One statement, committed on its own; how many rows it changed."""
        async with self._lock:
            return await Tx(self._writer).execute(sql, args)

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        async with self.tx() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """The first row of the last commit (never waits for a transaction being written)."""
        return await self._reader.fetchone(sql, args)

    async def fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """Rows of the last commit (never waits for a transaction being written)."""
        return await self._reader.fetchall(sql, args)

    async def fetch_as(self, make: Callable[..., T], sql: str, args: Iterable[Any] = ()) -> list[T]:
        """``fetchall``, each row made into ``make(*row)`` as SQLite hands it over: a million rows
        are never a million tuples as well (memory the objects could not reuse)."""
        reader = self._reader.conn
        async with reader.execute(sql, tuple(args)) as cur:
            cur.row_factory = lambda _cur, row: make(*row)  # type: ignore[assignment]
            return list(await cur.fetchall())

    async def schema_version(self) -> int:
        return int((await self.fetchone("PRAGMA user_version"))[0])

    async def integrity_ok(self) -> bool:
        return (await self.fetchone("PRAGMA integrity_check"))[0] == "ok"
