"""Leave no orphaned multipart upload behind.

When an upload fails or is cancelled the engine aborts its multipart upload; if the
storage refuses even that (it is down), the upload id is written down here and the
janitor aborts it later: at start, every few minutes, and on ``daemon.cleanup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from pipedaemon_sdk import errors as E

from ..rpc import Context, NoParams, rpc

if TYPE_CHECKING:
    from ..server import Daemon

log = logging.getLogger("pipedaemon.janitor")
SWEEP_EVERY = 300.0
MAX_ATTEMPTS = 100


class Janitor:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._task: asyncio.Task[None] | None = None

    async def remember(self, remote_key: str, path: str, upload_id: str) -> None:
        profile, _, remote = remote_key.partition("/")
        await self.daemon.state.execute(
            "INSERT OR IGNORE INTO pending_aborts(profile, remote, path, upload_id, created_at) "
            "VALUES (?,?,?,?,?)", (profile, remote, path, upload_id, time.time()))
        log.warning("could not abort upload %s of %s on %s; will retry", upload_id, path, remote)

    async def sweep(self) -> dict[str, int]:
        rows = await self.daemon.state.fetchall(
            "SELECT profile, remote, path, upload_id FROM pending_aborts WHERE attempts < ?", (MAX_ATTEMPTS,))
        aborted = 0
        remotes = self.daemon.services["remotes"]
        for profile, remote, path, upload_id in rows:
            try:
                backend, _ = await remotes.backend(profile, remote, "write")
                with contextlib.suppress(E.NotFoundError):  # already gone: nothing left to abort
                    await backend.mp_abort(path, upload_id)
            except E.DaemonError as err:
                await self.daemon.state.execute(
                    "UPDATE pending_aborts SET attempts=attempts+1 WHERE profile=? AND remote=? AND "
                    "upload_id=?", (profile, remote, upload_id))
                log.info("abort of %s on %s still failing: %s", upload_id, remote, err.message)
                continue
            await self.daemon.state.execute(
                "DELETE FROM pending_aborts WHERE profile=? AND remote=? AND upload_id=?",
                (profile, remote, upload_id))
            aborted += 1
        left = (await self.daemon.state.fetchone("SELECT COUNT(*) FROM pending_aborts"))[0]
        return {"aborted": aborted, "pending": int(left)}

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
    """Abort now the multipart uploads whose abort failed earlier."""
    return await ctx.daemon.services["janitor"].sweep()
