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


class SyncState:
    def __init__(self, db: State) -> None:
        self.db = db

    async def load(self, profile: str, pipe: str) -> dict[str, FileState]:
        rows = await self.db.fetchall(
            "SELECT filename, local_size, local_mtime_ns, remote_size, remote_mtime, remote_etag "
            "FROM sync_state WHERE profile=? AND pipe=?", (profile, pipe))
        return {r[0]: FileState(*r[1:]) for r in rows}

    async def save(self, profile: str, pipe: str, rows: Iterable[Row]) -> None:
        now = time.time()
        batch = [(profile, pipe, *r, now) for r in rows]
        if not batch:
            return
        async with self.db.tx() as tx:
            await tx.executemany(
                "INSERT OR REPLACE INTO sync_state(profile, pipe, filename, local_size, local_mtime_ns, "
                "remote_size, remote_mtime, remote_etag, synced_at) VALUES (?,?,?,?,?,?,?,?,?)", batch)

    async def forget(self, profile: str, pipe: str, names: Iterable[str] | None = None) -> None:
        async with self.db.tx() as tx:
            if names is None:
                await tx.execute("DELETE FROM sync_state WHERE profile=? AND pipe=?", (profile, pipe))
            else:
                await tx.executemany("DELETE FROM sync_state WHERE profile=? AND pipe=? AND filename=?",
                                     ((profile, pipe, n) for n in names))


class StateWriter:
    """Buffers rows of a running pull or push; flushed every ``every`` rows and at the end."""

    def __init__(self, state: SyncState, profile: str, pipe: str, every: int = 256) -> None:
        self.state = state
        self.profile = profile
        self.pipe = pipe
        self.every = every
        self.rows: list[Row] = []

    async def add(self, row: Row) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.every:
            await self.flush()

    async def flush(self) -> None:
        rows, self.rows = self.rows, []
        await self.state.save(self.profile, self.pipe, rows)
