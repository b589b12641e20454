"""Leave nothing behind on the storage: no orphaned multipart upload, no temporary file.

When an upload fails or is cancelled the engine aborts its multipart upload, or deletes
its temporary file; if the storage refuses even that (it is down), the upload id or the
path is written down here and the janitor finishes the job later: at start, every few
minutes, and on ``daemon.cleanup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal, Protocol

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Multipart
from ..state import State
from .common import is_temp

log = logging.getLogger("pipedaemon.janitor")
SWEEP_EVERY = 300.0
MAX_ATTEMPTS = 100

Chore = Callable[[Backend, str, str], Awaitable[None]]


class BackendSource(Protocol):
    """Where the janitor gets its backends: the daemon's remotes (remotes.Remotes)."""

    async def backend(self, profile: str, name: str,
                      mode: Literal["read", "write"] = "read") -> tuple[Backend, object]: ...

    def open_backends(self) -> Iterable[Backend]: ...


async def _abort(backend: Backend, path: str, upload_id: str) -> None:
    await backend.features.need(Multipart).mp_abort(path, upload_id)


async def _delete_temp(backend: Backend, path: str, _: str) -> None:
    if is_temp(path):  # only ever one of our own temporary names
        await backend.delete(path)


class Janitor:
    """Given the state it writes its chores to and the remotes it opens backends from."""

    def __init__(self, state: State, remotes: BackendSource) -> None:
        self.state = state
        self.remotes = remotes
        self._task: asyncio.Task[None] | None = None

    async def remember(self, remote_key: str, path: str, upload_id: str | None) -> None:
        """A multipart upload to abort (``upload_id``), or a temporary file to delete (None)."""
        profile, _, remote = remote_key.partition("/")
        if upload_id is None:
            await self.state.execute(
                "INSERT OR IGNORE INTO pending_deletes(profile, remote, path, created_at) VALUES (?,?,?,?)",
                (profile, remote, path, time.time()))
            log.warning("could not delete the temporary %s on %s; will retry", path, remote)
            return
        await self.state.execute(
            "INSERT OR IGNORE INTO pending_aborts(profile, remote, path, upload_id, created_at) "
            "VALUES (?,?,?,?,?)", (profile, remote, path, upload_id, time.time()))
        log.warning("could not abort upload %s of %s on %s; will retry", upload_id, path, remote)

    async def sweep(self) -> dict[str, int]:
        aborted = await self._sweep("pending_aborts", "upload_id", "abort of {1}", _abort)
        deleted = await self._sweep("pending_deletes", "path", "delete of {0}", _delete_temp)
        left = [int((await self.state.fetchone(f"SELECT COUNT(*) FROM {table}"))[0])
                for table in ("pending_aborts", "pending_deletes")]
        strays = 0
        for backend in self.remotes.open_backends():
            try:  # e.g. S3 uploads made by a create whose answer was lost, landing late
                strays += await backend.tidy()
            except E.DaemonError as err:
                log.info("tidying %s failed: %s", backend.describe(), err.message)
        return {"aborted": aborted, "pending": left[0], "deleted": deleted, "pending_deletes": left[1],
                "strays": strays}

    async def _sweep(self, table: str, key: str, what: str, act: Chore) -> int:
        """Retry each remembered chore of ``table``; forget it once done (or found done)."""
        rows = await self.state.fetchall(
            f"SELECT profile, remote, path, {key} FROM {table} WHERE attempts < ?", (MAX_ATTEMPTS,))
        done = 0
        for profile, remote, path, ident in rows:
            where = f"profile=? AND remote=? AND {key}=?"
            try:
                backend, _ = await self.remotes.backend(profile, remote, "write")
                with contextlib.suppress(E.NotFoundError):  # already gone: nothing left to do
                    await act(backend, path, ident)
            except E.DaemonError as err:
                await self.state.execute(f"UPDATE {table} SET attempts=attempts+1 WHERE {where}",
                                                (profile, remote, ident))
                log.info("%s on %s still failing: %s", what.format(path, ident), remote, err.message)
                continue
            await self.state.execute(f"DELETE FROM {table} WHERE {where}", (profile, remote, ident))
            done += 1
        return done

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the janitor must outlive a bad sweep
                log.exception("janitor sweep failed")
            await asyncio.sleep(SWEEP_EVERY)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
