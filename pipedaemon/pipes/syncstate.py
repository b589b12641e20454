"""Each pipe file's state at its last sync, to tell which side changed since.

A row holds the local file as it was left (size, mtime in ns) and the remote file
as it was seen (size, mtime, ETag). A side whose current file differs from its
recorded half changed. ``local_size`` None means "the local side does not match
any sync" (a conflict kept with merge_mode="keep" on pull: the local file stays
the newer version, so a later push sends it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from ..state import State

MTIME_SLACK_S = 0.001  # listings and stat of the same file may round differently below this


@dataclass(slots=True)
class FileState:
    local_size: int | None
    local_mtime_ns: int | None
    remote_size: int | None
    remote_mtime: float | None
    remote_etag: str | None


def local_changed(size: int, mtime_ns: int, st: FileState | None) -> bool:
    return st is None or st.local_size is None or (size, mtime_ns) != (st.local_size, st.local_mtime_ns)


def remote_changed(size: int, mtime: float | None, etag: str | None, st: FileState | None) -> bool:
    if st is None or st.remote_size is None:
        return True
    if etag and st.remote_etag:
        return etag != st.remote_etag
    if size != st.remote_size:
        return True
    if mtime is None or st.remote_mtime is None:
        return False
    return abs(mtime - st.remote_mtime) > MTIME_SLACK_S


Row = tuple[str, int | None, int | None, int | None, float | None, str | None]
# A file a running pull or push moved, for its result: (filename, size, modified_at, action, etag).
DoneRow = tuple[str, int, "float | None", str, "str | None"]


class DoneFile(msgspec.Struct):
    """A row of a pull's or push's result, as the wire carries it (no dict per file)."""

    filename: str
    size: int
    modified_at: float | None
    action: str
    etag: str | None = None
BATCH_ROWS = 1000  # sync-state rows of a running job written in one transaction ...
BATCH_S = 0.5  # ... or what gathered in this long, whichever comes first


class SyncState:
    def __init__(self, db: State) -> None:
        self.db = db

    async def load(self, profile: str, pipe: str,
                   names: dict[str, str] | None = None) -> dict[str, FileState]:
        """The pipe's rows by file name (``names``: the string objects to use for names already
        held elsewhere, so a million names are not held twice)."""
        canon = names or {}
        rows = await self.db.fetch_as(
            lambda n, *st: (canon.get(n, n), FileState(*st)),
            "SELECT filename, local_size, local_mtime_ns, remote_size, remote_mtime, remote_etag "
            "FROM sync_state WHERE profile=? AND pipe=?", (profile, pipe))
        return dict(rows)

    async def open(self) -> None:
        """Rows of jobs no longer running in the table of what running jobs moved (state.py,
        migration 10) are leftovers of a daemon killed at a job's very end."""
        await self.db.execute("DELETE FROM pipe_job_done WHERE job_id NOT IN (SELECT id FROM jobs WHERE "
                              "state IN ('queued', 'running'))")

    async def save(self, profile: str, pipe: str, rows: Iterable[Row], done: Iterable[DoneRow] = (),
                   job_id: str | None = None) -> None:
        """Rows of sync state, and (``job_id``) the files the job moved, in one transaction: after
        a kill -9 both hold the same files, or neither does."""
        now = time.time()
        batch = [(profile, pipe, *r, now) for r in rows]
        moved = [(job_id, *d) for d in done] if job_id is not None else []
        if not batch and not moved:
            return
        async with self.db.tx() as tx:
            await tx.executemany(
                "INSERT OR REPLACE INTO sync_state(profile, pipe, filename, local_size, local_mtime_ns, "
                "remote_size, remote_mtime, remote_etag, synced_at) VALUES (?,?,?,?,?,?,?,?,?)", batch)
            if moved:
                await tx.executemany("INSERT OR REPLACE INTO pipe_job_done(job_id, filename, size, "
                                     "modified_at, action, etag) VALUES (?,?,?,?,?,?)", moved)

    async def job_done(self, job_id: str) -> list[DoneRow]:
        """What an earlier run of this job (a killed daemon's) moved, in the order moved."""
        rows = await self.db.fetchall("SELECT filename, size, modified_at, action, etag FROM pipe_job_done "
                                      "WHERE job_id=?", (job_id,))
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def forget_job(self, job_id: str) -> None:
        await self.db.execute("DELETE FROM pipe_job_done WHERE job_id=?", (job_id,))

    async def forget(self, profile: str, pipe: str, names: Iterable[str] | None = None) -> None:
        async with self.db.tx() as tx:
            if names is None:
                await tx.execute("DELETE FROM sync_state WHERE profile=? AND pipe=?", (profile, pipe))
            else:
                await tx.executemany("DELETE FROM sync_state WHERE profile=? AND pipe=? AND filename=?",
                                     ((profile, pipe, n) for n in names))


class StateWriter:
    """Buffers rows of a running pull or push: written in one transaction every ``every`` rows,
    or ``every_s`` seconds after the first row waiting, and at the end."""

    def __init__(self, state: SyncState, profile: str, pipe: str, every: int = BATCH_ROWS,
                 every_s: float = BATCH_S, job_id: str | None = None) -> None:
        self.state = state
        self.profile = profile
        self.pipe = pipe
        self.every = every
        self.every_s = every_s
        self.job_id = job_id
        self.rows: list[Row] = []
        self.done: list[DoneRow] = []
        self._since = 0.0

    async def add(self, row: Row, done: DoneRow | None = None) -> None:
        if not self.rows:
            self._since = time.monotonic()
        self.rows.append(row)
        if done is not None:
            self.done.append(done)
        if len(self.rows) >= self.every or time.monotonic() - self._since >= self.every_s:
            await self.flush()

    async def flush(self) -> None:
        rows, self.rows = self.rows, []
        done, self.done = self.done, []
        await self.state.save(self.profile, self.pipe, rows, done, self.job_id)
