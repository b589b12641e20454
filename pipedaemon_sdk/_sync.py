"""Blocking connection to the daemon: one socket, one reader thread.

The reader thread routes responses to the waiting caller by id and job
notifications to per-job queues, so callbacks run in the caller's thread, never in
the reader (a callback that raises cannot break the connection).
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
from typing import Any

import msgspec

from .autostart import check_peer
from .protocol.errors import DaemonConnectionError, DaemonTimeoutError, error_from_code
from .protocol.wire import Message, Request, encode_line, message_decoder
from .watch import WATCH_KEY, is_watch_message

CLOSED = object()  # put on job queues when the connection ends


class _Slot:
    __slots__ = ("event", "job_start", "msg")

    def __init__(self, job_start: bool) -> None:
        self.event = threading.Event()
        self.msg: Message | None = None
        self.job_start = job_start


class SyncConnection:
    def __init__(self, path: str, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Slot] = {}
        self._jobs: dict[str, queue.SimpleQueue[Any]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self.stopping = False  # the daemon said it stops (daemon.stopping notification)
        self._close_reason = "connection closed"
        self._gone = threading.Event()  # set when the reader sees the connection end

    def open(self) -> None:
        """Connect; raises the OSError (FileNotFoundError, ConnectionRefusedError...)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
            if not self.shared:
                check_peer(sock, self.path)
        except (OSError, DaemonConnectionError):
            sock.close()
            raise
        self._sock = sock
        threading.Thread(target=self._read_loop, name="pipedaemon-sdk-reader", daemon=True).start()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    @property
    def closed(self) -> bool:
        return self._closed or self._sock is None

    def request(self, method: str, params: dict[str, Any], timeout: float | None,
                job_start: bool = False) -> Any:
        if self.closed:
            raise DaemonConnectionError(f"not connected to the daemon ({self._close_reason})")
        rid = next(self._ids)
        slot = _Slot(job_start)
        with self._lock:
            if self._closed:  # the reader ended after the check above: nobody would wake us
                raise DaemonConnectionError(f"not connected to the daemon ({self._close_reason})")
            self._pending[rid] = slot
        line = encode_line(Request(method=method, params=msgspec.Raw(encode_line(params)[:-1]), id=rid))
        try:
            with self._send_lock:
                assert self._sock is not None
                self._sock.sendall(line)
        except OSError as exc:
            self._pending.pop(rid, None)
            raise DaemonConnectionError(f"daemon connection lost while sending {method}: {exc}") from exc
        if not slot.event.wait(timeout):
            with self._lock:
                self._pending.pop(rid, None)
            raise DaemonTimeoutError(f"{method}: no answer from the daemon within {timeout:g} s")
        msg = slot.msg
        if msg is None:
            raise DaemonConnectionError(f"daemon connection lost during {method} ({self._close_reason})")
        if msg.error is not msgspec.UNSET:
            err = msg.error
            raise error_from_code(err.code, err.message, err.data)
        return msg.result

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the daemon closes this connection (as it does when it stops)."""
        return self._gone.wait(timeout)

    def job_queue(self, job_id: str) -> queue.SimpleQueue[Any]:
        """The queue of notifications for a job (made on first use)."""
        with self._lock:
            q = self._jobs.get(job_id)
            if q is None:
                q = self._jobs[job_id] = queue.SimpleQueue()
                if self._closed:
                    q.put(CLOSED)
            return q

    def forget_job(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    # -- reader thread ----------------------------------------------------------
    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            with sock.makefile("rb", buffering=1 << 16) as f:
                for line in f:
                    self._dispatch(line)
        except (OSError, ValueError) as exc:
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
                    # Subscribe before the caller wakes: events may follow at once.
                    jid = msg.result.get("id")
                    if isinstance(jid, str) and jid not in self._jobs:
                        self._jobs[jid] = queue.SimpleQueue()
            if slot is not None:
                slot.msg = msg
                slot.event.set()
            return
        if msg.method == "daemon.stopping":  # asked to stop: its jobs are checkpointed, not lost
            self.stopping = True
            self._close_reason = "the daemon was asked to stop"
            return
        if is_watch_message(msg.method, msg.params):  # a watch's event (watch.py)
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
            slot.event.set()  # msg stays None: the caller raises DaemonConnectionError
        for q in jobs:
            q.put(CLOSED)
        self._gone.set()
