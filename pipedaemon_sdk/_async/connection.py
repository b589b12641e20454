"""One connection to the daemon: requests answered by id, job and watch notifications routed to
queues.

A reader runs beside the caller (an asyncio task, or a thread in the blocking flavour): it
hands each response to the caller waiting for its id and each notification to its job's (or the
watch's) queue, so callbacks run in the caller's own task or thread, never in the reader (a
callback that raises cannot break the connection).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import msgspec

from .._common import CLOSED, request_line
from .._events import WATCH_KEY, is_watch_message
from .._io_async import AsyncBackground, AsyncQueue, AsyncSlot, AsyncStream
from ..protocol.errors import DaemonConnectionError, DaemonTimeoutError, error_from_code
from ..protocol.wire import MAX_ANSWER_LINE, message_decoder


class AsyncConnection:
    def __init__(self, path: str, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._stream: AsyncStream | None = None
        self._reader: AsyncBackground | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, AsyncSlot] = {}
        self._jobs: dict[str, AsyncQueue[Any]] = {}
        self._lock = threading.Lock()  # the blocking twin's reader thread shares these two dicts
        self._closed = False
        self.stopping = False  # the daemon said it stops (daemon.stopping notification)
        self._close_reason = "connection closed"

    async def open(self) -> None:
        """Connect; raises the OSError (FileNotFoundError, ConnectionRefusedError...), or
        DaemonConnectionError for a socket another user serves."""
        self._stream = await AsyncStream.connect(self.path, shared=self.shared, limit=MAX_ANSWER_LINE)
        self._reader = AsyncBackground(self._read_loop, "pipedaemon-sdk-reader")

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
        if self._reader is not None:
            await self._reader.stop()
        self._shutdown()

    @property
    def closed(self) -> bool:
        return self._closed or self._stream is None

    async def request(self, method: str, params: dict[str, Any], timeout: float | None,
                      job_start: bool = False) -> Any:
        if self.closed:
            raise DaemonConnectionError(f"not connected to the daemon ({self._close_reason})")
        rid = next(self._ids)
        slot = AsyncSlot(job_start)
        with self._lock:
            if self._closed:  # the reader ended after the check above: nobody would answer
                raise DaemonConnectionError(f"not connected to the daemon ({self._close_reason})")
            self._pending[rid] = slot
        try:
            assert self._stream is not None
            await self._stream.send(request_line(method, params, rid))
        except OSError as exc:
            with self._lock:
                self._pending.pop(rid, None)
            raise DaemonConnectionError(f"daemon connection lost while sending {method}: {exc}") from exc
        if not await slot.wait(timeout):
            with self._lock:
                self._pending.pop(rid, None)
            raise DaemonTimeoutError(f"{method}: no answer from the daemon within {timeout:g} s")
        msg = slot.value
        if msg is None:
            raise DaemonConnectionError(f"daemon connection lost during {method} ({self._close_reason})")
        if msg.error is not msgspec.UNSET:
            err = msg.error
            raise error_from_code(err.code, err.message, err.data)
        return msg.result

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the daemon closes this connection (as it does when it stops)."""
        if self._reader is None:
            return True
        return await self._reader.wait(timeout)

    def job_queue(self, job_id: str) -> AsyncQueue[Any]:
        """The queue of notifications for a job (made on first use)."""
        with self._lock:
            q = self._jobs.get(job_id)
            if q is None:
                q = self._jobs[job_id] = AsyncQueue()
                if self._closed:
                    q.put(CLOSED)
            return q

    def forget_job(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    # -- the reader -----------------------------------------------------------------
    async def _read_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        try:
            while True:
                line = await stream.readline()
                if not line:
                    break
                self._dispatch(line)
        except (OSError, ValueError, EOFError) as exc:
            self._close_reason = str(exc) or type(exc).__name__
        finally:
            self._shutdown()

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = message_decoder.decode(line)
        except msgspec.DecodeError:
            return  # a garbled line is not ours to act on; the daemon never sends one
        if msg.id is not msgspec.UNSET:
            with self._lock:
                slot = self._pending.pop(msg.id, None)  # type: ignore[arg-type]
                if slot is not None and slot.job_start and isinstance(msg.result, dict):
                    # Subscribe before the caller resumes: events may follow at once.
                    jid = msg.result.get("id")
                    if isinstance(jid, str) and jid not in self._jobs:
                        self._jobs[jid] = AsyncQueue()
            if slot is not None:
                slot.set(msg)
            return
        if msg.method == "daemon.stopping":  # asked to stop: its jobs are checkpointed, not lost
            self.stopping = True
            self._close_reason = "the daemon was asked to stop"
            return
        if is_watch_message(msg.method, msg.params):  # a watch's event (_events.py)
            with self._lock:
                wq = self._jobs.get(WATCH_KEY)
            if wq is not None:
                wq.put((msg.method, msg.params))
        if msg.method in ("job.progress", "job.finished") and isinstance(msg.params, dict):
            jid = msg.params.get("job_id" if msg.method == "job.progress" else "id")
            with self._lock:
                q = self._jobs.get(jid) if isinstance(jid, str) else None
            if q is not None:
                q.put((msg.method, msg.params))

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
            jobs = list(self._jobs.values())
        for slot in pending.values():
            slot.set(None)  # value stays None: the caller raises DaemonConnectionError
        for q in jobs:
            q.put(CLOSED)
