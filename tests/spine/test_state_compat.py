"""A state.db written by the previous version (one SQLite layer for the daemon, a second for
the pipes, over the same file) opens with the unified State and keeps its data.

The schema below is that version's, copied as it was (its nine migrations, user_version 9):
test data, not derived from pipedaemon/state.py, so a change there that an old database
could not follow fails here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from pipedaemon.state import MIGRATIONS, State
from pipedaemon_sdk import PipeClient

OLD_VERSION = 9
OLD_SCHEMA = """
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
    CREATE TABLE pending_aborts (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        path TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (profile, remote, upload_id)
    );
    CREATE TABLE pending_deletes (
        profile TEXT NOT NULL,
        remote TEXT NOT NULL,
        path TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (profile, remote, path)
    );
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
"""

OLD_ROWS: dict[str, tuple[str, list[tuple[object, ...]]]] = {
    "jobs": ("id, kind, profile, state, params, result, created_at, updated_at",
             [("oldjob", "hash.file", "default", "succeeded", b'{"path": "/x"}', b'{"md5": "abc"}',
               1.0, 2.0)]),
    "pipes": ("profile, name, settings, first_pull_done, created_at, updated_at",
              [("default", "vendor", msgspec.json.encode({"name": "vendor", "remote": "r",
                                                          "options": {"include": "*.csv"}}), 1, 1.0, 2.0)]),
    "pipe_profiles": ("profile, config, updated_at",
                      [("default", msgspec.json.encode({"parallel_files": 3, "scan_ttl_s": 60.0}), 2.0)]),
    "scan_listings": ("profile, remote, folder, listed_at", [("default", "r", "", 5.0)]),
    "scan_entries": ("profile, remote, folder, name, size, mtime, etag",
                     [("default", "r", "", "a.csv", 1, 3.0, "e")]),
    "sync_state": ("profile, pipe, filename, local_size, local_mtime_ns, remote_size, remote_mtime, "
                   "remote_etag, synced_at",
                   [("default", "vendor", "a.csv", 1, 3_000_000_000, 1, 3.0, "e", 4.0)]),
    "events": ("kind, profile, pipe, time, data", [("pipe.changed", "default", "vendor", 4.0, b"{}")]),
    "share_acl": ("kind, profile, name, username, role, granted_by, updated_at",
                  [("pipe", "default", "vendor", "bob", "read", "alice", 4.0)]),
}


def write_old_db(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(f"BEGIN; {OLD_SCHEMA}; PRAGMA user_version={OLD_VERSION}; COMMIT;")
    for table, (columns, rows) in OLD_ROWS.items():
        marks = ", ".join("?" for _ in columns.split(","))
        db.executemany(f"INSERT INTO {table}({columns}) VALUES ({marks})", rows)
    db.close()


def columns(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                       "AND name NOT LIKE 'sqlite_%'")]
    return {t: [tuple(c) for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}


async def test_an_old_state_db_opens_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_db(path)
    state = State(path)
    await state.open()
    try:
        assert await state.schema_version() == len(MIGRATIONS) >= OLD_VERSION
        assert await state.integrity_ok()
        for table, (cols, rows) in OLD_ROWS.items():
            assert await state.fetchall(f"SELECT {cols} FROM {table}") == rows, table
        async with state.tx() as tx:  # the pipes' writes and the daemon's, on the old tables
            await tx.execute("UPDATE sync_state SET synced_at=5.0 WHERE pipe='vendor'")
        assert await state.execute("UPDATE jobs SET updated_at=3.0 WHERE id='oldjob'") == 1
        assert await state.fetchone("SELECT synced_at FROM sync_state") == (5.0,)
    finally:
        await state.close()


async def test_the_old_schema_is_what_a_new_db_has(tmp_path: Path) -> None:
    """Every table and column of the old schema is in a new database, with the same type,
    default and key: data of one is data of the other."""
    write_old_db(tmp_path / "old.db")
    state = State(tmp_path / "new.db")
    await state.open()
    await state.close()
    old, new = (sqlite3.connect(tmp_path / n) for n in ("old.db", "new.db"))
    try:
        old_cols, new_cols = columns(old), columns(new)
        for table, cols in old_cols.items():
            assert set(cols) <= set(new_cols.get(table, [])), table
    finally:
        old.close()
        new.close()


def test_the_daemon_serves_an_old_db(pd_env: dict[str, Path]) -> None:
    """Through the daemon: the job, the pipe and the profile config written by the old version."""
    write_old_db(pd_env["home"] / "state.db")
    with PipeClient() as c:
        assert c.job("oldjob").info.result == {"md5": "abc"}
        assert c.list_pipes() == ["vendor"]
        config = c.get_profile_config()
        assert (config["parallel_files"], config["scan_ttl_s"]) == (3, 60.0)
