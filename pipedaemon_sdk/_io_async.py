"""The asyncio primitives under the SDK's asyncio code (``_async/``).

``_async/`` is written once, against these names; ``tools/unasync.py`` turns it into the
blocking ``_sync/`` by renaming ``AsyncStream`` to ``Stream`` and so on, whose blocking
twins are in ``_io_sync.py``. Everything that differs between asyncio and threads lives in
these two small files, so the logic above them exists once.

asyncio is imported where it is used, not here: it costs ~50 ms, and ``import pipedaemon_sdk``
(or a blocking client) must not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from ._io_sync import check_peer

T = TypeVar("T")


class AsyncStream:
    """A connected Unix socket: lines and exact byte counts in, bytes out."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, path: str, *, shared: bool, limit: int) -> AsyncStream:
        """Connect (OSError as raised) and check the peer unless ``shared``; ``limit``: the longest line."""
        import asyncio

        reader, writer = await asyncio.open_unix_connection(path, limit=limit)
        try:
            if not shared:  # a shared daemon runs as its own account (docs/sharing.md)
                check_peer(writer.get_extra_info("socket"), path)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def readline(self) -> bytes:
        """The next line with its newline; b"" at the end (ValueError past ``limit``)."""
        line: bytes = await self._reader.readline()
        return line

    async def read_exactly(self, n: int) -> bytes:
        """``n`` bytes, fewer only when the connection ended first."""
        import asyncio

        try:
            data: bytes = await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        return data

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class AsyncSlot:
    """Where one answer arrives: ``set`` by the reader, ``wait``-ed for by the caller."""

    __slots__ = ("_event", "job_start", "value")

    def __init__(self, job_start: bool = False) -> None:
        import asyncio

        self._event = asyncio.Event()
        self.value: Any = None
        self.job_start = job_start

    def set(self, value: Any) -> None:
        self.value = value
        self._event.set()

    async def wait(self, timeout: float | None) -> bool:
        """True once set; False after ``timeout`` seconds (None: no limit)."""
        import asyncio

        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class AsyncQueue(Generic[T]):
    """Notifications for one job or watch: ``put`` never blocks, ``get`` waits at most ``timeout``."""

    def __init__(self) -> None:
        import asyncio

        self._q: asyncio.Queue[T] = asyncio.Queue()

    def put(self, item: T) -> None:
        self._q.put_nowait(item)

    async def get(self, timeout: float | None = None) -> T:
        """The next item; TimeoutError (the builtin) after ``timeout`` seconds."""
        import asyncio

        try:
            return await asyncio.wait_for(self._q.get(), timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            raise TimeoutError from None


class AsyncBackground:
    """Runs ``target`` beside the caller (an asyncio task) until it returns or is stopped."""

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        import asyncio

        self._task = asyncio.get_running_loop().create_task(target(), name=name)

    async def stop(self) -> None:
        import asyncio

        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def wait(self, timeout: float) -> bool:
        """True once ``target`` has returned; False after ``timeout`` seconds."""
        import asyncio

        done, _ = await asyncio.wait([self._task], timeout=timeout)
        return bool(done)


async def async_run_blocking(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(*args, **kw)`` in a worker thread, so the event loop keeps running meanwhile."""
    import asyncio

    return await asyncio.to_thread(fn, *args, **kw)
