"""A handle on a daemon job: follow its progress, wait for it, cancel it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from .._common import CLOSED, ProgressCallback, call_safely, decode_job_event, lost, outcome
from ..protocol.errors import DaemonTimeoutError
from ..protocol.wire import JobInfo, ProgressEvent

if TYPE_CHECKING:
    from .client import AsyncPipeClient
    from .connection import AsyncConnection


class AsyncJob:
    """A job of the daemon, started by this client or any other (``client.job(id)``)."""

    def __init__(self, client: AsyncPipeClient, info: JobInfo, subscribed: bool) -> None:
        self._client = client
        self.info = info
        self.id = info.id
        # The connection that receives this job's events: after a reconnect, watch again.
        self._sub_conn: Any = client._conn if subscribed else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, kind={self.info.kind!r}, state={self.info.state!r})"

    @property
    def state(self) -> str:
        return self.info.state

    async def _subscribe(self) -> AsyncConnection:
        conn = await self._client._connection()
        if self._sub_conn is not conn:
            raw = await self._client._conn_request("job.watch", {"job_id": self.id}, job_start=True)
            self.info = msgspec.convert(raw, JobInfo)
            self._sub_conn = conn
        return conn

    async def events(self, timeout: float | None = None) -> AsyncIterator[ProgressEvent]:
        """Progress events as they happen; ends when the job finishes."""
        conn = await self._subscribe()
        if self.info.done:
            return
        q = conn.job_queue(self.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = await q.get(left)
            except TimeoutError:
                raise DaemonTimeoutError(f"job {self.id} did not finish within {timeout:g} s") from None
            if item is CLOSED:
                raise lost(self.id, conn)
            msg = decode_job_event(item)
            if isinstance(msg, JobInfo):
                self.info = msg
                conn.forget_job(self.id)
                return
            yield msg

    async def wait(self, timeout: float | None = None,
                   on_progress: ProgressCallback | None = None) -> JobInfo:
        """Until the job ends: its JobInfo, or its error raised."""
        async for ev in self.events(timeout):
            call_safely(on_progress, ev)
        return outcome(self.info)

    async def cancel(self) -> JobInfo:
        self.info = msgspec.convert(await self._client._conn_request("job.cancel", {"job_id": self.id}),
                                    JobInfo)
        return self.info

    async def refresh(self) -> JobInfo:
        self.info = msgspec.convert(await self._client._conn_request("job.get", {"job_id": self.id}),
                                    JobInfo)
        return self.info
