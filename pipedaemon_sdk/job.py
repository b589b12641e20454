"""Handles on daemon jobs: follow their progress, wait for them, cancel them."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from .protocol.errors import DaemonConnectionError, DaemonStoppedError, DaemonTimeoutError, error_from_code
from .protocol.wire import JobInfo, ProgressEvent

if TYPE_CHECKING:
    from .client import AsyncPipeClient, PipeClient

log = logging.getLogger("pipedaemon_sdk")
ProgressCallback = Callable[[ProgressEvent], Any]


def call_safely(cb: ProgressCallback | None, ev: ProgressEvent) -> None:
    """Run a user's progress callback; its failure is logged, never propagated."""
    if cb is None:
        return
    try:
        cb(ev)
    except Exception:
        log.exception("on_progress callback raised; the job goes on")


def outcome(info: JobInfo) -> JobInfo:
    """The finished job, or its error raised."""
    if info.state == "succeeded":
        return info
    if info.error is not None:
        raise error_from_code(info.error.code, info.error.message, info.error.data)
    raise error_from_code(1007 if info.state == "cancelled" else -32603, f"job {info.id} {info.state}")


def lost(job_id: str, conn: Any) -> DaemonConnectionError:
    """The error for a connection that ended while following ``job_id``."""
    if getattr(conn, "stopping", False):
        return DaemonStoppedError(f"the daemon was asked to stop while following job {job_id}; the job is "
                                  "checkpointed and resumes when the daemon starts again")
    return DaemonConnectionError(f"lost the daemon while following job {job_id}")


def _decode(item: Any) -> ProgressEvent | JobInfo:
    method, params = item
    if method == "job.progress":
        return msgspec.convert(params, ProgressEvent)
    return msgspec.convert(params, JobInfo)


class Job:
    """A job of the daemon, seen from a blocking client."""

    def __init__(self, client: PipeClient, info: JobInfo, subscribed: bool) -> None:
        self._client = client
        self.info = info
        self.id = info.id
        # The connection that receives this job's events: after a reconnect, watch again.
        self._sub_conn: Any = client._conn if subscribed else None

    def __repr__(self) -> str:
        return f"Job({self.id!r}, kind={self.info.kind!r}, state={self.info.state!r})"

    @property
    def state(self) -> str:
        return self.info.state

    def _subscribe(self) -> Any:
        conn = self._client._connection()
        if self._sub_conn is not conn:
            self.info = msgspec.convert(self._client._conn_request("job.watch", {"job_id": self.id},
                                                                   job_start=True), JobInfo)
            self._sub_conn = conn
        return conn

    def events(self, timeout: float | None = None) -> Iterator[ProgressEvent]:
        """Progress events as they happen; ends when the job finishes."""
        conn = self._subscribe()
        if self.info.done:
            return
        q = conn.job_queue(self.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        from ._sync import CLOSED

        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = q.get(timeout=left)
            except queue.Empty:
                raise DaemonTimeoutError(f"job {self.id} did not finish within {timeout:g} s") from None
            if item is CLOSED:
                raise lost(self.id, conn)
            msg = _decode(item)
            if isinstance(msg, JobInfo):
                self.info = msg
                conn.forget_job(self.id)
                return
            yield msg

    def wait(self, timeout: float | None = None, on_progress: ProgressCallback | None = None) -> JobInfo:
        """Block until the job ends; its JobInfo, or its error raised."""
        for ev in self.events(timeout):
            call_safely(on_progress, ev)
        return outcome(self.info)

    def cancel(self) -> JobInfo:
        self.info = msgspec.convert(self._client._conn_request("job.cancel", {"job_id": self.id}), JobInfo)
        return self.info

    def refresh(self) -> JobInfo:
        self.info = msgspec.convert(self._client._conn_request("job.get", {"job_id": self.id}), JobInfo)
        return self.info


class AsyncJob:
    """A job of the daemon, seen from an asyncio client."""

    def __init__(self, client: AsyncPipeClient, info: JobInfo, subscribed: bool) -> None:
        self._client = client
        self.info = info
        self.id = info.id
        self._sub_conn: Any = client._conn if subscribed else None

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r}, kind={self.info.kind!r}, state={self.info.state!r})"

    @property
    def state(self) -> str:
        return self.info.state

    async def _subscribe(self) -> Any:
        conn = await self._client._connection()
        if self._sub_conn is not conn:
            raw = await self._client._conn_request("job.watch", {"job_id": self.id}, job_start=True)
            self.info = msgspec.convert(raw, JobInfo)
            self._sub_conn = conn
        return conn

    async def events(self, timeout: float | None = None) -> AsyncIterator[ProgressEvent]:
        import asyncio

        from ._async import CLOSED

        conn = await self._subscribe()
        if self.info.done:
            return
        q = conn.job_queue(self.id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(q.get(), left)
            except asyncio.TimeoutError:
                raise DaemonTimeoutError(f"job {self.id} did not finish within {timeout:g} s") from None
            if item is CLOSED:
                raise lost(self.id, conn)
            msg = _decode(item)
            if isinstance(msg, JobInfo):
                self.info = msg
                conn.forget_job(self.id)
                return
            yield msg

    async def wait(self, timeout: float | None = None,
                   on_progress: ProgressCallback | None = None) -> JobInfo:
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
