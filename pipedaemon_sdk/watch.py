"""``client.watch()``: the daemon's change events as an iterator (blocking) or async iterator.

A watch has a connection of its own, subscribed with ``daemon.watch``. It yields
:class:`Event` s in id order: first those after ``since`` (when given), then each new
one as the daemon sends it. Ids only grow; ``watch.missed`` is true when events after
``since`` were already pruned, and a gap between two ids means events were lost
meanwhile (``client.events(since=...)`` gives them while they are retained).
"""

from __future__ import annotations

import queue
from typing import Any

import msgspec

from .protocol.wire import JobInfo

WATCH_KEY = "\x00watch"  # the queue of a connection's watch notifications
WATCH_METHODS = ("pipe.changed", "schedule.failed")


class Event(msgspec.Struct, omit_defaults=True):
    """``pipe.changed``: new, modified and gone file names (relative to the pipe; counts exact,
    names capped at 1,000 each); ``job.finished``: a scheduled job's end (``job``);
    ``schedule.failed``: a scheduled run failed (``action``, ``error``, ``failures`` in a row,
    ``next_run``, and ``job_id`` when the run was a job)."""

    id: int
    kind: str
    profile: str
    pipe: str | None = None
    time: float = 0.0
    new: list[str] = []
    modified: list[str] = []
    gone: list[str] = []
    counts: dict[str, int] = {}
    job: JobInfo | None = None
    action: str | None = None
    error: dict[str, Any] | None = None
    failures: int = 0
    next_run: float | None = None
    job_id: str | None = None


def is_watch_message(method: Any, params: Any) -> bool:
    return method in WATCH_METHODS or (
        method == "job.finished" and isinstance(params, dict) and "event_id" in params
    )


def to_event(method: str, params: dict[str, Any]) -> Event:
    if method == "job.finished" and "event_id" in params:
        job = {k: v for k, v in params.items() if k not in ("event_id", "pipe", "profile", "scheduled")}
        params = {
            "id": params["event_id"],
            "kind": "job.finished",
            "profile": params.get("profile", ""),
            "pipe": params.get("pipe"),
            "time": params.get("updated_at", 0.0),
            "job": job,
        }
    return msgspec.convert(params, Event)


def events_of(answer: dict[str, Any]) -> list[Event]:
    return [msgspec.convert(e, Event) for e in answer.get("events", [])]


class _Base:
    def __init__(self, client: Any, params: dict[str, Any]) -> None:
        self.client = client
        self.params = params
        self.last_id = params.get("since") or 0
        self.missed = False
        self._backlog: list[Event] = []
        self._conn: Any = None

    def _opened(self, answer: dict[str, Any]) -> None:
        self.missed = not answer.get("complete", True)
        self._backlog = events_of(answer)
        if self.params.get("since") is None:
            self.last_id = answer.get("last_id", 0)

    def _from_backlog(self) -> Event | None:
        """The next of the stored events answered by daemon.watch, if any is left."""
        while self._backlog:
            ev = self._take(self._backlog.pop(0))
            if ev is not None:
                return ev
        return None

    def _take(self, item: Any) -> Event | None:
        """The event of a queued notification, or None for one already yielded."""
        ev = item if isinstance(item, Event) else to_event(*item)
        if ev.id <= self.last_id:
            return None
        self.last_id = ev.id
        return ev


class Watch(_Base):
    """Blocking iterator of events; ``next_event(timeout)`` waits at most ``timeout`` seconds."""

    def _open(self) -> None:
        from ._sync import SyncConnection

        self.client._connection()  # the daemon runs (started if needed)
        conn = SyncConnection(str(self.client.socket_path))
        conn.open()
        self._queue = conn.job_queue(WATCH_KEY)
        self._conn = conn
        self._opened(conn.request("daemon.watch", self.params, self.client.request_timeout_s))

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event; None after ``timeout`` seconds without one. StopIteration when the daemon
        closed the connection."""
        from ._sync import CLOSED

        if self._conn is None:
            self._open()
        ev = self._from_backlog()
        if ev is not None:
            return ev
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if item is CLOSED:
                raise StopIteration
            ev = self._take(item)
            if ev is not None:
                return ev

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        ev = self.next_event()
        assert ev is not None
        return ev

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Watch:
        if self._conn is None:
            self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncWatch(_Base):
    """Async iterator of events (``async for ev in client.watch(...)``)."""

    async def _open(self) -> None:
        from ._async import AsyncConnection

        await self.client._connection()
        conn = AsyncConnection(str(self.client.socket_path))
        await conn.open()
        self._queue = conn.job_queue(WATCH_KEY)
        self._conn = conn
        self._opened(await conn.request("daemon.watch", self.params, self.client.request_timeout_s))

    async def next_event(self, timeout: float | None = None) -> Event | None:
        import asyncio

        from ._async import CLOSED

        if self._conn is None:
            await self._open()
        ev = self._from_backlog()
        if ev is not None:
            return ev
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
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
