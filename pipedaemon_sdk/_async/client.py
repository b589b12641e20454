"""The daemon's client, the SDK's entry point: it connects (starting the daemon when needed) and
runs the RPC methods of ``api.py``."""

from __future__ import annotations

import os
from functools import partial
from types import TracebackType
from typing import Any

import msgspec

from .. import autostart
from .._common import Convert, ProgressCallback
from .._io_async import async_run_blocking
from ..protocol.errors import DaemonConnectionError
from ..protocol.wire import JobInfo
from .api import AsyncApi
from .connection import AsyncConnection
from .job import AsyncJob
from .streams import async_open_read, async_write
from .watch import AsyncWatch


class AsyncPipeClient(AsyncApi):
    """The daemon's client (the asyncio and the blocking one share every method name and
    signature). Starts the daemon when it is not running (``auto_start``)."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, profile: str | None = None,
                 auto_start: bool = True, start_timeout_s: float = 10.0,
                 request_timeout_s: float = 30.0, shared: bool = False) -> None:
        super().__init__(socket_path, profile, auto_start, start_timeout_s, request_timeout_s, shared)
        self._conn: AsyncConnection | None = None

    async def connect(self) -> AsyncPipeClient:
        return await self._connect(self.auto_start)

    async def _connect(self, auto_start: bool) -> AsyncPipeClient:
        if self._conn is not None and not self._conn.closed:
            return self
        path = str(self.socket_path)
        conn = AsyncConnection(path, shared=self.shared)
        try:
            await conn.open()
        except OSError as exc:
            if not autostart.is_retryable(exc):
                raise DaemonConnectionError(f"cannot connect to {path}: {exc}") from exc
            start = partial(autostart.connect_or_start, self.socket_path, partial(autostart.probe, path),
                            auto_start=auto_start, timeout=self.start_timeout_s)
            await async_run_blocking(start)  # it blocks: in a thread for the asyncio client
            try:
                await conn.open()
            except OSError as again:
                raise DaemonConnectionError(f"cannot connect to {path}: {again}") from again
        self._conn = conn
        return self

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> AsyncPipeClient:
        return await self.connect()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def shutdown(self, timeout: float = 30.0) -> Any:
        """Stop the daemon and return once it has: running jobs are checkpointed and resume
        on its next start. A daemon that is not running is not started to be stopped:
        ``{"stopping": False, "running": False}``."""
        for last in (False, True):
            try:
                await self._connect(auto_start=False)
            except DaemonConnectionError:
                return {"stopping": False, "running": False}
            try:
                result = await self._conn_request("daemon.shutdown", {})
                break
            except DaemonConnectionError:
                # The connection was to a daemon that died (its end not seen yet): is one there now?
                await self.close()
                if last:
                    raise
        if self._conn is not None:
            await self._conn.wait_closed(timeout)
        return result

    # -- the plumbing the methods (api.py) and jobs use ---------------------------------
    async def _connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed:  # reconnect after the daemon went away
            await self.connect()
        assert self._conn is not None
        return self._conn

    async def _conn_request(self, method: str, params: dict[str, Any], job_start: bool = False,
                            timeout: float | None = -1.0) -> Any:
        t = self.request_timeout_s if timeout == -1.0 else timeout
        conn = await self._connection()
        return await conn.request(method, params, t, job_start)

    async def _call(self, method: str, params: dict[str, Any], convert: Convert = None) -> Any:
        raw = await self._conn_request(method, params)
        return convert(raw) if convert else raw

    async def _start_job(self, method: str, params: dict[str, Any], *, on_progress: ProgressCallback | None,
                         wait: bool, convert: Convert = None, timeout: float | None = None) -> Any:
        info = msgspec.convert(await self._conn_request(method, params, job_start=True), JobInfo)
        job = AsyncJob(self, info, subscribed=True)
        if not wait:
            return job
        done = await job.wait(timeout=timeout, on_progress=on_progress)
        return convert(done.result) if convert else done.result

    def _job_handle(self, info: JobInfo) -> AsyncJob:
        return AsyncJob(self, info, subscribed=False)

    def _watch(self, params: dict[str, Any]) -> AsyncWatch:
        return AsyncWatch(self, params)

    async def _open_read(self, params: dict[str, Any]) -> Any:
        await self._connection()  # starts the daemon if needed
        return await async_open_read(str(self.socket_path), params, self.shared)

    async def _write_stream(self, params: dict[str, Any], data: Any, length: int, convert: Convert) -> Any:
        await self._connection()
        raw = await async_write(str(self.socket_path), params, data, length, self.shared)
        return convert(raw) if convert else raw
