"""Asyncio connection to the daemon: one stream, one reader task."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec

from .autostart import check_peer
from .protocol.errors import DaemonConnectionError, DaemonTimeoutError, error_from_code
from .protocol.wire import MAX_LINE, Message, Request, encode_line, message_decoder
from .watch import WATCH_KEY, is_watch_message

CLOSED = object()


class AsyncConnection:
    def __init__(self, path: str, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Message], bool]] = {}
        self._jobs: dict[str, asyncio.Queue[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.stopping = False  # the daemon said it stops (daemon.stopping notification)
        self._close_reason = "connection closed"

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE + 1)
        try:
            if not self.shared:
                check_peer(self._writer.get_extra_info("socket"), self.path)
        except DaemonConnectionError:
            self._writer.close()
            self._writer = None
            raise
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._shutdown()

    @property
    def closed(self) -> bool:
        return self._closed or self._writer is None

    async def request(self, method: str, params: dict[str, Any], timeout: float | None,
                      job_start: bool = False) -> Any:
        if self.closed:
            raise DaemonConnectionError(f"not connected to the daemon ({self._close_reason})")
        rid = next(self._ids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, job_start)
        line = encode_line(Request(method=method, params=msgspec.Raw(encode_line(params)[:-1]), id=rid))
        try:
            assert self._writer is not None
            self._writer.write(line)
            await self._writer.drain()
        except OSError as exc:
            self._pending.pop(rid, None)
            raise DaemonConnectionError(f"daemon connection lost while sending {method}: {exc}") from exc
        try:
            msg = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self._pending.pop(rid, None)
            raise DaemonTimeoutError(f"{method}: no answer from the daemon within {timeout:g} s") from None
        if msg is None:
            raise DaemonConnectionError(f"daemon connection lost during {method} ({self._close_reason})")
        if msg.error is not msgspec.UNSET:
            err = msg.error
            raise error_from_code(err.code, err.message, err.data)
        return msg.result

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the daemon closes this connection (as it does when it stops)."""
        if self._task is None:
            return True
        done, _ = await asyncio.wait([self._task], timeout=timeout)
        return bool(done)

    def job_queue(self, job_id: str) -> asyncio.Queue[Any]:
        q = self._jobs.get(job_id)
        if q is None:
            q = self._jobs[job_id] = asyncio.Queue()
            if self._closed:
                q.put_nowait(CLOSED)
        return q

    def forget_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                self._dispatch(line)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            self._close_reason = str(exc) or type(exc).__name__
        finally:
            self._shutdown()

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = message_decoder.decode(line)
        except msgspec.DecodeError:
            return
        if msg.id is not msgspec.UNSET:
            entry = self._pending.pop(msg.id, None)  # type: ignore[arg-type]
            if entry is None:
                return
            fut, job_start = entry
            if job_start and isinstance(msg.result, dict) and isinstance(msg.result.get("id"), str):
                self.job_queue(msg.result["id"])  # subscribe before the caller resumes
            if not fut.done():
                fut.set_result(msg)
            return
        if msg.method == "daemon.stopping":  # asked to stop: its jobs are checkpointed, not lost
            self.stopping = True
            self._close_reason = "the daemon was asked to stop"
            return
        if is_watch_message(msg.method, msg.params):  # a watch's event (watch.py)
            wq = self._jobs.get(WATCH_KEY)
            if wq is not None:
                wq.put_nowait((msg.method, msg.params))
        if msg.method in ("job.progress", "job.finished") and isinstance(msg.params, dict):
            jid = msg.params.get("job_id" if msg.method == "job.progress" else "id")
            q = self._jobs.get(jid) if isinstance(jid, str) else None
            if q is not None:
                q.put_nowait((msg.method, msg.params))

    def _shutdown(self) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_result(None)  # type: ignore[arg-type]
        for q in self._jobs.values():
            q.put_nowait(CLOSED)
