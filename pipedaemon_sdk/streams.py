"""Object bytes over their own connection, never inside JSON.

A stream call opens a fresh connection, sends one request line and then the
connection carries raw bytes: after the response line for ``object.read``, or
after the request line for ``object.write``. The connection closes at the end.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO

import msgspec

from .autostart import check_peer
from .protocol.errors import DaemonConnectionError, StorageError, error_from_code
from .protocol.wire import Message, Request, encode_line, message_decoder

PIECE = 1 << 20


def request_line(method: str, params: dict[str, Any]) -> bytes:
    return encode_line(Request(method=method, params=msgspec.Raw(encode_line(params)[:-1]), id=1))


def parse_header(line: bytes) -> Any:
    if not line.endswith(b"\n"):
        raise DaemonConnectionError("the daemon closed the stream before answering")
    msg: Message = message_decoder.decode(line)
    if msg.error is not msgspec.UNSET:
        raise error_from_code(msg.error.code, msg.error.message, msg.error.data)
    return msg.result


class ObjectStream:
    """A readable object (from ``bucket.get``): ``read()``, ``stream(n)``, ``close()``."""

    def __init__(self, sock: socket.socket, f: BinaryIO, header: dict[str, Any]) -> None:
        self._sock, self._f = sock, f
        self.info = header
        self.size: int = header["length"]
        self.etag: str | None = header.get("etag")
        self._left = self.size

    def read(self, n: int = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        data = self._f.read(want)
        self._left -= len(data)
        if len(data) < want:
            self.close()
            raise StorageError(f"the object stream ended after {self.size - self._left} of {self.size} bytes")
        return data

    def stream(self, chunk_size: int = 32 * 1024) -> Iterator[bytes]:
        while self._left > 0:
            yield self.read(chunk_size)
        self.close()

    def close(self) -> None:
        self._f.close()
        self._sock.close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(path: str, shared: bool = False) -> socket.socket:
    """A stream connection, checked like the control connection: served by our own user (an
    object's bytes must never go to, or come from, another user's socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise DaemonConnectionError(f"cannot open a stream to the daemon: {exc}") from exc
    try:
        if not shared:  # a shared daemon runs as its own account (docs/sharing.md)
            check_peer(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


async def _async_connect(path: str, shared: bool = False) -> tuple[Any, Any]:
    import asyncio

    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
    try:
        if not shared:
            check_peer(writer.get_extra_info("socket"), path)
    except BaseException:
        writer.close()
        raise
    return reader, writer


def open_read(path: str, params: dict[str, Any], shared: bool = False) -> ObjectStream:
    sock = _connect(path, shared)
    f = sock.makefile("rb", buffering=PIECE)
    try:
        sock.sendall(request_line("object.read", params))
        header = parse_header(f.readline())
    except BaseException:
        f.close()
        sock.close()
        raise
    return ObjectStream(sock, f, header)


def _pieces(data: Any, length: int) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        if len(view) < length:
            raise ValueError(f"data holds {len(view)} bytes, fewer than length={length}")
        for off in range(0, length, PIECE):
            yield bytes(view[off:min(off + PIECE, length)])
        return
    left = length
    while left:
        piece = data.read(min(PIECE, left))
        if not piece:
            raise ValueError(f"data ended {left} bytes before length={length}")
        left -= len(piece)
        yield piece


def check_data(data: Any, length: int) -> None:
    """Refuse before connecting what cannot work: the daemon would start a write only to abort it."""
    if length < 0:
        raise ValueError(f"length must be >= 0, not {length}")
    if isinstance(data, (bytes, bytearray, memoryview)) and memoryview(data).nbytes < length:
        raise ValueError(f"data holds {memoryview(data).nbytes} bytes, fewer than length={length}")
    if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "read"):
        raise TypeError(f"data must be bytes or a readable binary file, not {type(data).__name__}")


def write(path: str, params: dict[str, Any], data: Any, length: int, shared: bool = False) -> Any:
    """Send ``length`` bytes of ``data`` (bytes or a readable binary file) as an object."""
    check_data(data, length)
    sock = _connect(path, shared)
    try:
        with sock.makefile("rb") as f:
            sock.sendall(request_line("object.write", {**params, "size": length}))
            try:
                for piece in _pieces(data, length):
                    sock.sendall(piece)
            except BrokenPipeError:
                pass  # the daemon refused early; its answer says why
            return parse_header(f.readline())
    finally:
        sock.close()


class AsyncObjectStream:
    def __init__(self, reader: Any, writer: Any, header: dict[str, Any]) -> None:
        self._reader, self._writer = reader, writer
        self.info = header
        self.size: int = header["length"]
        self.etag: str | None = header.get("etag")
        self._left = self.size

    async def read(self, n: int = -1) -> bytes:
        import asyncio

        want = self._left if n is None or n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        try:
            data = await self._reader.readexactly(want)
        except asyncio.IncompleteReadError as exc:
            await self.close()
            raise StorageError(f"the object stream ended after {self.size - self._left + len(exc.partial)}"
                               f" of {self.size} bytes") from None
        self._left -= len(data)
        return data

    async def stream(self, chunk_size: int = 32 * 1024) -> AsyncIterator[bytes]:
        while self._left > 0:
            yield await self.read(chunk_size)
        await self.close()

    async def close(self) -> None:
        self._writer.close()

    async def __aenter__(self) -> AsyncObjectStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def async_open_read(path: str, params: dict[str, Any], shared: bool = False) -> AsyncObjectStream:
    reader, writer = await _async_connect(path, shared)
    writer.write(request_line("object.read", params))
    try:
        header = parse_header(await reader.readline())
    except BaseException:
        writer.close()
        raise
    return AsyncObjectStream(reader, writer, header)


async def async_write(path: str, params: dict[str, Any], data: Any, length: int,
                      shared: bool = False) -> Any:

    check_data(data, length)
    reader, writer = await _async_connect(path, shared)
    try:
        writer.write(request_line("object.write", {**params, "size": length}))
        try:
            for piece in _pieces(data, length):
                writer.write(piece)
                await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return parse_header(await reader.readline())
    finally:
        writer.close()
