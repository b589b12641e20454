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
from typing import TYPE_CHECKING, Any

from pipedaemon_sdk import errors as E

from ..backends.base import Multipart
from ..rpc import Context, NoParams, rpc
from .common import is_temp

if TYPE_CHECKING:
    from ..server import Daemon

log = logging.getLogger("pipedaemon.janitor")
SWEEP_EVERY = 300.0
MAX_ATTEMPTS = 100


async def _abort(backend: Any, path: str, upload_id: str) -> None:
    await backend.features.need(Multipart).mp_abort(path, upload_id)


async def _delete_temp(backend: Any, path: str, _: str) -> None:
    if is_temp(path):  # only ever one of our own temporary names
        await backend.delete(path)


class Janitor:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._task: asyncio.Task[None] | None = None

    async def remember(self, remote_key: str, path: str, upload_id: str | None) -> None:
        """A multipart upload to abort (``upload_id``), or a temporary file to delete (None)."""
        profile, _, remote = remote_key.partition("/")
        if upload_id is None:
            await self.daemon.state.execute(
                "INSERT OR IGNORE INTO pending_deletes(profile, remote, path, created_at) VALUES (?,?,?,?)",
                (profile, remote, path, time.time()))
            log.warning("could not delete the temporary %s on %s; will retry", path, remote)
            return
        await self.daemon.state.execute(
            "INSERT OR IGNORE INTO pending_aborts(profile, remote, path, upload_id, created_at) "
            "VALUES (?,?,?,?,?)", (profile, remote, path, upload_id, time.time()))
        log.warning("could not abort upload %s of %s on %s; will retry", upload_id, path, remote)

    async def sweep(self) -> dict[str, int]:
        aborted = await self._sweep("pending_aborts", "upload_id", "abort of {1}", _abort)
        deleted = await self._sweep("pending_deletes", "path", "delete of {0}", _delete_temp)
        left = [int((await self.daemon.state.fetchone(f"SELECT COUNT(*) FROM {table}"))[0])
                for table in ("pending_aborts", "pending_deletes")]
        strays = 0
        for backend in self.daemon.services["remotes"].open_backends():
            try:  # e.g. S3 uploads made by a create whose answer was lost, landing late
                strays += await backend.tidy()
            except E.DaemonError as err:
                log.info("tidying %s failed: %s", backend.describe(), err.message)
        return {"aborted": aborted, "pending": left[0], "deleted": deleted, "pending_deletes": left[1],
                "strays": strays}

    async def _sweep(self, table: str, key: str, what: str, act: Any) -> int:
        """Retry each remembered chore of ``table``; forget it once done (or found done)."""
        rows = await self.daemon.state.fetchall(
            f"SELECT profile, remote, path, {key} FROM {table} WHERE attempts < ?", (MAX_ATTEMPTS,))
        done = 0
        remotes = self.daemon.services["remotes"]
        for profile, remote, path, ident in rows:
            where = f"profile=? AND remote=? AND {key}=?"
            try:
                backend, _ = await remotes.backend(profile, remote, "write")
                with contextlib.suppress(E.NotFoundError):  # already gone: nothing left to do
                    await act(backend, path, ident)
            except E.DaemonError as err:
                await self.daemon.state.execute(f"UPDATE {table} SET attempts=attempts+1 WHERE {where}",
                                                (profile, remote, ident))
                log.info("%s on %s still failing: %s", what.format(path, ident), remote, err.message)
                continue
            await self.daemon.state.execute(f"DELETE FROM {table} WHERE {where}", (profile, remote, ident))
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


async def start_service(daemon: Daemon) -> None:
    janitor = Janitor(daemon)
    daemon.services["janitor"] = janitor
    janitor.start()


@rpc("daemon.cleanup", NoParams)
async def daemon_cleanup(ctx: Context, p: NoParams) -> dict[str, Any]:
    """Finish now the clean-ups left to the janitor (multipart aborts, temporary files, S3 strays); counts."""
    return await ctx.daemon.services["janitor"].sweep()
