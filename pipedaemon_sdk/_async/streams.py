"""Object bytes over their own connection, never inside JSON.

A stream call opens a fresh connection (checked like the control connection: served by our own
user, unless the client is a shared daemon's), sends one request line and then the connection
carries raw bytes: after the response line for ``object.read``, or after the request line for
``object.write``. The connection closes at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._common import STREAM_LIMIT, check_data, parse_header, pieces, request_line
from .._io_async import AsyncStream
from ..protocol.errors import DaemonConnectionError, StorageError


class AsyncObjectStream:
    """A readable object (from ``bucket.get``): ``read()``, ``stream(n)``, ``close()``."""

    def __init__(self, stream: AsyncStream, header: dict[str, Any]) -> None:
        self._stream = stream
        self.info = header
        self.size: int = header["length"]
        self.etag: str | None = header.get("etag")
        self._left = self.size

    async def read(self, n: int = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        data = await self._stream.read_exactly(want)
        self._left -= len(data)
        if len(data) < want:
            await self.close()
            raise StorageError(f"the object stream ended after {self.size - self._left} of {self.size} bytes")
        return data

    async def stream(self, chunk_size: int = 32 * 1024) -> AsyncIterator[bytes]:
        while self._left > 0:
            yield await self.read(chunk_size)
        await self.close()

    async def close(self) -> None:
        await self._stream.close()

    async def __aenter__(self) -> AsyncObjectStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _connect(path: str, shared: bool) -> AsyncStream:
    try:
        return await AsyncStream.connect(path, shared=shared, limit=STREAM_LIMIT)
    except OSError as exc:
        raise DaemonConnectionError(f"cannot open a stream to the daemon: {exc}") from exc


async def async_open_read(path: str, params: dict[str, Any], shared: bool = False) -> AsyncObjectStream:
    stream = await _connect(path, shared)
    try:
        await stream.send(request_line("object.read", params))
        header = parse_header(await stream.readline())
    except BaseException:
        await stream.close()
        raise
    return AsyncObjectStream(stream, header)


async def async_write(path: str, params: dict[str, Any], data: Any, length: int, shared: bool = False) -> Any:
    """Send ``length`` bytes of ``data`` (bytes or a readable binary file) as an object."""
    check_data(data, length)
    stream = await _connect(path, shared)
    try:
        await stream.send(request_line("object.write", {**params, "size": length}))
        try:
            for piece in pieces(data, length):
                await stream.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon refused early; its answer says why
        return parse_header(await stream.readline())
    finally:
        await stream.close()
