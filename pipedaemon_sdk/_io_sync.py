"""The blocking primitives under the generated ``_sync/`` code: the twins of ``_io_async.py``
(see there). Threads and plain sockets; no asyncio."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .protocol.errors import DaemonConnectionError

T = TypeVar("T")


def check_peer(sock: socket.socket, path: str) -> None:
    """The daemon must run as our user: another user's socket could collect our credentials."""
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: the folder and socket modes must do
        return
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid = struct.unpack("3i", creds)[1]
    if uid != os.getuid():
        raise DaemonConnectionError(f"{path} is served by uid {uid}, not by this user; not using it")


class Stream:
    """A connected Unix socket: lines and exact byte counts in, bytes out (sends may come from
    any thread while one reads)."""

    def __init__(self, sock: socket.socket, buffer: int) -> None:
        self._sock = sock
        self._f = sock.makefile("rb", buffering=buffer)
        self._send_lock = threading.Lock()

    @classmethod
    def connect(cls, path: str, *, shared: bool, limit: int) -> Stream:
        """Connect (OSError as raised) and check the peer unless ``shared``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            if not shared:  # a shared daemon runs as its own account (docs/sharing.md)
                check_peer(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, min(limit, 1 << 20))

    def readline(self) -> bytes:
        return self._f.readline()

    def read_exactly(self, n: int) -> bytes:
        """``n`` bytes, fewer only when the connection ended first."""
        return self._f.read(n)

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(data)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
        except OSError:
            pass
        self._sock.close()
        self._f.close()


class Slot:
    """Where one answer arrives: ``set`` by the reader thread, ``wait``-ed for by the caller."""

    __slots__ = ("_event", "job_start", "value")

    def __init__(self, job_start: bool = False) -> None:
        self._event = threading.Event()
        self.value: Any = None
        self.job_start = job_start

    def set(self, value: Any) -> None:
        self.value = value
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


class Queue(Generic[T]):
    """Notifications for one job or watch: ``put`` never blocks, ``get`` waits at most ``timeout``."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[T] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        self._q.put(item)

    def get(self, timeout: float | None = None) -> T:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None


class Background:
    """Runs ``target`` beside the caller (a daemon thread). ``stop`` has nothing to do: the thread
    reads a socket and ends once that is closed."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def run_blocking(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    return fn(*args, **kw)
