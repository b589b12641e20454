"""``client.watch()``: the daemon's change events, on a connection of the watch's own (see
``_events.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._common import CLOSED
from .._events import WATCH_KEY, Event, WatchBase
from .connection import AsyncConnection

if TYPE_CHECKING:
    from .._io_async import AsyncQueue


class AsyncWatch(WatchBase):
    """Iterator of events (``async for`` with the asyncio client); ``next_event(timeout)`` waits at
    most ``timeout`` seconds."""

    _conn: AsyncConnection | None
    _queue: AsyncQueue[Any]

    async def _open(self) -> None:
        await self.client._connection()  # the daemon runs (started if needed)
        conn = AsyncConnection(str(self.client.socket_path), shared=self.client.shared)
        await conn.open()
        self._queue = conn.job_queue(WATCH_KEY)
        self._conn = conn
        self._opened(await conn.request("daemon.watch", self.params, self.client.request_timeout_s))

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event; None after ``timeout`` seconds without one. Stop(Async)Iteration when the
        daemon closed the connection."""
        if self._conn is None:
            await self._open()
        ev = self._from_backlog()
        if ev is not None:
            return ev
        while True:
            try:
                item = await self._queue.get(timeout)
            except TimeoutError:
                return None
            if item is CLOSED:
                raise StopAsyncIteration
            ev = self._take(item)
            if ev is not None:
                return ev

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Event:
        ev = await self.next_event()
        assert ev is not None
        return ev

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> AsyncWatch:
        if self._conn is None:
            await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
