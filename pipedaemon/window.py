"""One bounded in-flight window for every parallel piece of one file.

The shape of asyncssh's ``_SFTPParallelIO``: at most ``depth`` requests in flight, the next
one started as soon as one ends, the first failure cancels the rest and is raised as itself
(not wrapped in an exception group), and nothing is left running or "never retrieved".
It serves S3 parts (uploads and streams), S3 server-side copy parts, SFTP ranged reads and
writes, and the engine's parallel chunks; short reads are re-queued by the caller's piece
function (``read_exact``), so the window itself stays generic.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

R = TypeVar("R")


class Window:
    """``async with Window(depth) as w: await w.submit(coro)``: waits while ``depth`` are in flight;
    leaving the block waits for the rest, or cancels them all if the block failed."""

    def __init__(self, depth: int) -> None:
        self.depth = max(1, depth)
        self.pending: set[asyncio.Future[Any]] = set()

    async def submit(self, aw: Awaitable[Any]) -> asyncio.Future[Any]:
        while len(self.pending) >= self.depth:
            await self._wait_one()
        task = asyncio.ensure_future(aw)
        self.pending.add(task)
        return task

    async def _wait_one(self) -> None:
        done, self.pending = await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)
        _raise_first(done)

    async def drain(self) -> None:
        while self.pending:
            await self._wait_one()

    async def cancel(self) -> None:
        for task in self.pending:
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending = set()

    async def __aenter__(self) -> Window:
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if et is not None:
            await self.cancel()
            return
        try:
            await self.drain()
        except BaseException:
            await self.cancel()
            raise


def _raise_first(done: set[asyncio.Future[Any]]) -> None:
    """Retrieve every outcome (so none is "never retrieved"); raise the first failure."""
    first: BaseException | None = None
    for task in done:
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is not None and first is None:
            first = exc
    if first is not None:
        raise first


async def run_window(makers: Iterable[Callable[[], Awaitable[Any]]], depth: int) -> None:
    """Run what ``makers`` make, ``depth`` at a time (each made only when it can start)."""
    async with Window(depth) as window:
        for make in makers:
            await window.submit(make())


async def ordered(makers: Iterable[Callable[[], Awaitable[R]]], depth: int) -> AsyncIterator[R]:
    """The results of ``makers``, in their order, with up to ``depth`` running ahead (reads)."""
    queue: collections.deque[asyncio.Future[R]] = collections.deque()
    it = iter(makers)
    try:
        for make in it:
            queue.append(asyncio.ensure_future(make()))
            if len(queue) >= max(1, depth):
                break
        while queue:
            result = await queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(asyncio.ensure_future(nxt()))
            yield result
    finally:
        for task in queue:
            task.cancel()
        await asyncio.gather(*queue, return_exceptions=True)
