"""One bounded in-flight window for every parallel piece of one file.

The shape of asyncssh's ``_SFTPParallelIO``: at most ``depth`` requests in flight, the next
one started as soon as one ends, the first failure cancels the rest and is raised as itself
(not wrapped in an exception group), and nothing is left running or "never retrieved".
It serves S3 parts (uploads and streams), S3 server-side copy parts, SFTP ranged reads and
writes (both transports: asyncssh and OpenSSH), and the engine's parallel chunks. Ranged
reads go through ``read_range``: each piece is ``read_exact``, which asks again for the rest
of a short read (a server's packet limit), so the window itself stays generic.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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
        try:
            while len(self.pending) >= self.depth:
                await self._wait_one()
        except BaseException:
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: no "coroutine was never awaited" warning
            raise
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


Read = Callable[[int, int], Awaitable[bytes]]


async def read_exact(read: Read, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` through ``read(offset, n)``: a short read is asked again
    for the rest; fewer come back only at the end of the file."""
    data = await read(offset, size)
    if len(data) == size or not data:
        return data  # the usual case: no copy
    got = bytearray(data)
    while len(got) < size:
        more = await read(offset + len(got), size - len(got))
        if not more:
            break
        got += more
    return bytes(got)


async def read_range(read: Read, start: int, end: int, piece: int, depth: int) -> AsyncIterator[bytes]:
    """[start, end) in order, in pieces of ``piece`` bytes, ``depth`` of them in flight; stops
    at the first piece that comes back short (the end of the file came early: the caller
    checks sizes). Leaving early cancels the reads ahead at once."""
    piece = max(1, piece)

    def maker(pos: int) -> Callable[[], Awaitable[bytes]]:
        return lambda: read_exact(read, pos, min(piece, end - pos))

    chunks = ordered((maker(pos) for pos in range(start, end, piece)), depth)
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for data in chunks:
            if data:
                yield data
            if len(data) < piece:
                return
