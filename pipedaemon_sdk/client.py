"""PipeClient (blocking) and AsyncPipeClient (asyncio): the SDK's entry points."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from . import autostart
from ._api import Api, Convert, ProgressCallback
from ._sync import SyncConnection
from .job import AsyncJob, Job
from .protocol.errors import DaemonConnectionError
from .protocol.paths import default_socket_path
from .protocol.wire import JobInfo

if TYPE_CHECKING:  # asyncio costs ~50 ms to import: only AsyncPipeClient pays it
    from ._async import AsyncConnection


class _Client(Api):
    """What both clients hold: where the daemon is, the profile and the timeouts."""

    _conn: Any

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, profile: str | None = None,
                 auto_start: bool = True, start_timeout_s: float = 10.0,
                 request_timeout_s: float = 30.0, shared: bool = False) -> None:
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.profile = profile if profile is not None else (os.environ.get("PIPEDAEMON_PROFILE") or "default")
        # shared: a shared daemon (docs/sharing.md) runs as its own account, so its uid is not
        # ours; it is never started by a client.
        self.shared = shared
        self.auto_start = auto_start and not shared
        self.start_timeout_s = start_timeout_s
        self.request_timeout_s = request_timeout_s
        self._conn = None

    def _forget_job(self, job_id: str) -> None:
        if self._conn is not None:
            self._conn.forget_job(job_id)


class PipeClient(_Client):
    """Blocking client. Starts the daemon when it is not running (``auto_start``)."""

    _conn: SyncConnection | None

    def connect(self) -> PipeClient:
        if self._conn is not None and not self._conn.closed:
            return self
        path = str(self.socket_path)

        def attempt() -> bool:
            conn = SyncConnection(path, shared=self.shared)
            try:
                conn.open()
            except OSError as exc:
                if autostart.is_retryable(exc):
                    return False
                raise DaemonConnectionError(f"cannot connect to {path}: {exc}") from exc
            self._conn = conn
            return True

        autostart.connect_or_start(self.socket_path, attempt, auto_start=self.auto_start,
                                   timeout=self.start_timeout_s)
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PipeClient:
        return self.connect()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing used by Api and Job ------------------------------------------
    def _connection(self) -> SyncConnection:
        if self._conn is None or self._conn.closed:  # reconnect after the daemon went away
            self.connect()
        assert self._conn is not None
        return self._conn

    def _conn_request(self, method: str, params: dict[str, Any], job_start: bool = False,
                      timeout: float | None = -1.0) -> Any:
        t = self.request_timeout_s if timeout == -1.0 else timeout
        return self._connection().request(method, params, t, job_start)

    def _job_queue(self, job_id: str) -> Any:
        return self._connection().job_queue(job_id)


    def _call(self, method: str, params: dict[str, Any], convert: Convert = None) -> Any:
        raw = self._conn_request(method, params)
        return convert(raw) if convert else raw

    def _start_job(self, method: str, params: dict[str, Any], *, on_progress: ProgressCallback,
                   wait: bool, convert: Convert = None, timeout: float | None = None) -> Any:
        info = msgspec.convert(self._conn_request(method, params, job_start=True), JobInfo)
        job = Job(self, info, subscribed=True)
        if not wait:
            return job
        result = job.wait(timeout=timeout, on_progress=on_progress).result
        return convert(result) if convert else result

    def shutdown(self, timeout: float = 30.0) -> Any:
        result = self._conn_request("daemon.shutdown", {})
        if self._conn is not None:
            self._conn.wait_closed(timeout)
        return result

    def _job_handle(self, info: JobInfo) -> Job:
        return Job(self, info, subscribed=False)

    def _watch(self, params: dict[str, Any]) -> Any:
        from .watch import Watch

        return Watch(self, params)

    def _open_read(self, params: dict[str, Any]) -> Any:
        from .streams import open_read

        self._connection()  # starts the daemon if needed
        return open_read(str(self.socket_path), params, self.shared)

    def _write_stream(self, params: dict[str, Any], data: Any, length: int, convert: Convert) -> Any:
        from .streams import write

        self._connection()
        raw = write(str(self.socket_path), params, data, length, self.shared)
        return convert(raw) if convert else raw


class AsyncPipeClient(_Client):
    """asyncio client: the same methods as PipeClient, as coroutines."""

    _conn: AsyncConnection | None

    async def connect(self) -> AsyncPipeClient:
        if self._conn is not None and not self._conn.closed:
            return self
        import asyncio

        from ._async import AsyncConnection

        path = str(self.socket_path)
        conn = AsyncConnection(path, shared=self.shared)
        try:
            await conn.open()
        except OSError as exc:
            if not autostart.is_retryable(exc):
                raise DaemonConnectionError(f"cannot connect to {path}: {exc}") from exc

            def probe() -> bool:  # blocking: runs in a thread while we wait for the daemon
                import socket

                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                    return True
                except OSError as err:
                    if autostart.is_retryable(err):
                        return False
                    raise DaemonConnectionError(f"cannot connect to {path}: {err}") from err
                finally:
                    s.close()

            await asyncio.to_thread(autostart.connect_or_start, self.socket_path, probe,
                                    auto_start=self.auto_start, timeout=self.start_timeout_s)
            await conn.open()
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

    async def _connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed:  # reconnect after the daemon went away
            await self.connect()
        assert self._conn is not None
        return self._conn

    async def _conn_request(self, method: str, params: dict[str, Any], job_start: bool = False,
                            timeout: float | None = -1.0) -> Any:
        t = self.request_timeout_s if timeout == -1.0 else timeout
        return await (await self._connection()).request(method, params, t, job_start)

    def _job_queue(self, job_id: str) -> Any:
        assert self._conn is not None
        return self._conn.job_queue(job_id)


    async def _call(self, method: str, params: dict[str, Any], convert: Convert = None) -> Any:
        raw = await self._conn_request(method, params)
        return convert(raw) if convert else raw

    async def _start_job(self, method: str, params: dict[str, Any], *, on_progress: ProgressCallback,
                         wait: bool, convert: Convert = None, timeout: float | None = None) -> Any:
        info = msgspec.convert(await self._conn_request(method, params, job_start=True), JobInfo)
        job = AsyncJob(self, info, subscribed=True)
        if not wait:
            return job
        result = (await job.wait(timeout=timeout, on_progress=on_progress)).result
        return convert(result) if convert else result

    async def shutdown(self, timeout: float = 30.0) -> Any:
        result = await self._conn_request("daemon.shutdown", {})
        if self._conn is not None:
            await self._conn.wait_closed(timeout)
        return result

    def _job_handle(self, info: JobInfo) -> AsyncJob:
        return AsyncJob(self, info, subscribed=False)

    def _watch(self, params: dict[str, Any]) -> Any:
        from .watch import AsyncWatch

        return AsyncWatch(self, params)

    async def _open_read(self, params: dict[str, Any]) -> Any:
        from .streams import async_open_read

        await self._connection()
        return await async_open_read(str(self.socket_path), params, self.shared)

    async def _write_stream(self, params: dict[str, Any], data: Any, length: int, convert: Convert) -> Any:
        from .streams import async_write

        await self._connection()
        raw = await async_write(str(self.socket_path), params, data, length, self.shared)
        return convert(raw) if convert else raw
