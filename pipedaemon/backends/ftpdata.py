"""FTP data connections: what one transfer's bytes travel on, plain or TLS.

A plain download's bytes are received straight into buffers of our own (``Inbox``, an
asyncio BufferedProtocol): each byte is copied once on its way from the kernel to the
file, where a StreamReader copies it three more times (into its buffer, out of it, and
when pieces are gathered for a write). That was the largest cost of a fast FTP download.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import Any, TypeVar

BLOCK = 256 * 1024  # bytes per read() of a StreamReader (TLS, uploads' closing reads)
UNIT = 1 << 20  # one Inbox buffer: what a download hands on per piece
DEPTH = 4  # full buffers an Inbox holds before it stops reading (memory: DEPTH x UNIT)
SYNC_TIMEOUT_S = 10.0  # for the replies and closes that end a transfer
T = TypeVar("T")


async def timed(aw: Awaitable[T], timeout: float | None) -> T:
    return await asyncio.wait_for(aw, timeout) if timeout else await aw


class Inbox(asyncio.BufferedProtocol):
    """A plain data connection received into UNIT-sized bytearrays, handed on as they fill.

    ``read`` returns the next full buffer, or what has arrived so far when none is full
    (so a slow link still delivers), or ``b""`` at the end. The caller owns what it gets:
    each buffer is new, none is reused. Past DEPTH full buffers reading pauses until the
    caller catches up.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray(UNIT)
        self._n = 0
        self._full: deque[bytearray] = deque()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- protocol side ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)[self._n:]

    def buffer_updated(self, nbytes: int) -> None:
        self._n += nbytes
        if self._n == UNIT:
            self._full.append(self._buf)
            self._buf, self._n = bytearray(UNIT), 0
            if len(self._full) >= DEPTH and self.transport is not None:
                self.transport.pause_reading()
                self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- caller side --------------------------------------------------------------------
    async def read(self) -> bytes | bytearray:
        while not self._full and not self._n and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._full:
            out = self._full.popleft()
            if self._paused and len(self._full) < DEPTH // 2 and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            return out
        if self._n:
            out, n = self._buf, self._n
            self._buf, self._n = bytearray(UNIT), 0
            del out[n:]
            return out
        if self._error is not None:
            raise self._error
        return b""


class DataStream:
    """One data connection, plain or TLS.

    TLS runs here on memory BIOs over a plain TCP stream rather than in the event
    loop's SSL transport: uvloop's drops received bytes it has not decrypted yet when
    the server closes while the reader is paused, which cut the tail off downloads.
    Over raw TCP the EOF just queues behind the data.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float | None,
                 tls: ssl.SSLContext | None = None, hostname: str = "", session: Any = None,
                 inbox: Inbox | None = None) -> None:
        self._reader, self._writer, self._timeout = reader, writer, timeout
        self._inbox = inbox  # a plain download: reads come from here, not from ``reader``
        self._left: bytes | bytearray = b""  # what an Inbox buffer held past the last read's count
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl = (None if tls is None else
                     tls.wrap_bio(self._in, self._out, server_hostname=hostname, session=session))

    def _send_pending(self) -> None:
        if self._out.pending:
            self._writer.write(self._out.read())

    async def _fill(self) -> bool:
        """Feed the TLS layer what arrived; False at the TCP end."""
        self._send_pending()
        data = await timed(self._reader.read(BLOCK), self._timeout)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def handshake(self) -> None:
        assert self._ssl is not None
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not await self._fill():
                    raise ConnectionResetError("data connection closed during the TLS handshake") from None
        self._send_pending()

    @classmethod
    async def receiving(cls, host: str, port: int, timeout: float | None) -> DataStream:
        """A plain connection whose bytes arrive in an Inbox: for downloads and listings."""
        loop = asyncio.get_running_loop()
        transport, inbox = await timed(loop.create_connection(Inbox, host, port), timeout)
        return cls(None, transport, timeout, inbox=inbox)  # type: ignore[arg-type]

    async def read(self, count: int) -> bytes | bytearray:
        """Up to ``count`` bytes; ``b""`` at the end. Ask for UNIT or more to get the Inbox's
        buffers as they are (a smaller count makes a copy)."""
        if self._inbox is not None:
            if not self._left:
                self._left = await timed(self._inbox.read(), self._timeout)
            if len(self._left) <= count:
                out, self._left = self._left, b""
                return out
            out, self._left = self._left[:count], self._left[count:]
            return out
        if self._ssl is None:
            return await timed(self._reader.read(count), self._timeout)
        out = bytearray()
        while len(out) < count:
            try:
                chunk = self._ssl.read(count - len(out))
            except ssl.SSLWantReadError:
                if out or not await self._fill():
                    break  # return what we have; at the TCP end the next read reports EOF
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or a TCP close without it (servers often skip it): the end.
                # Whether the transfer was whole is the control channel's 226 to say.
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    async def write(self, data: bytes) -> None:
        if self._ssl is None:
            self._writer.write(data)
        else:
            view = memoryview(data)
            while view:
                view = view[self._ssl.write(view):]
            self._send_pending()
        await timed(self._writer.drain(), self._timeout)

    def close(self) -> None:
        if self._writer.is_closing():
            return
        if self._ssl is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._ssl.unwrap()  # queues our close_notify
            self._send_pending()
        self._writer.close()

    async def shutdown(self) -> None:
        """End an upload: close_notify and FIN, then wait for the server to close.

        Closing with unread bytes in the socket (a TLS 1.3 session ticket the server
        sent) makes the kernel send RST, and an RST makes the server throw away data
        it has not read yet: the upload would be cut short.
        """
        if self._ssl is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._ssl.unwrap()
            self._send_pending()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            if self._writer.can_write_eof():
                self._writer.write_eof()
            await timed(self._drain_to_eof(), SYNC_TIMEOUT_S)
        self._writer.close()

    async def _drain_to_eof(self) -> None:
        await self._writer.drain()
        while await self._reader.read(BLOCK):
            pass

