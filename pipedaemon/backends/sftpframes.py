"""Receiving SFTP packets from ssh's stdout with as few copies as a byte can take.

A StreamReader copies each byte three times (into its buffer, out of it, and again when
the DATA payload is sliced out). Here small packets are cut from one staging buffer, and
a big DATA reply's payload is received straight into a bytearray of its own, which the
reader of the file then owns: one copy, from the kernel.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

STAGE = 256 * 1024
BIG = 32 * 1024  # DATA payloads at least this long get their own buffer
DATA = 103
DIRECT = -DATA  # the type delivered with a payload received on its own
MAX_FRAME = 1 << 24
_U32 = struct.Struct(">I")
_DATA_HEAD = struct.Struct(">IBII")  # length, type, id, payload length

Deliver = Callable[[int, int, bytes | bytearray], None]  # (type, request id, body or payload)


class FrameReceiver(asyncio.BufferedProtocol):
    """Cuts the pipe's bytes into SFTP packets and hands each to ``deliver``.

    ``deliver(type, id, body)``: the packet's body (type byte first), or for a big DATA
    reply ``(DIRECT, id, payload)``. ``lost(exc)`` once, at the end of the stream.
    """

    def __init__(self, deliver: Deliver, lost: Callable[[BaseException | None], None]) -> None:
        self._deliver, self._lost = deliver, lost
        self._stage = bytearray(STAGE)
        self._start = self._end = 0  # unparsed bytes: stage[start:end]
        self._payload: bytearray | None = None  # a big DATA payload being received
        self._got = 0
        self._rid = 0
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._payload is not None:
            return memoryview(self._payload)[self._got:]
        if self._end == len(self._stage):
            self._compact()
        return memoryview(self._stage)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._payload is not None:
            self._got += nbytes
            if self._got == len(self._payload):
                payload, self._payload = self._payload, None
                self._deliver(DIRECT, self._rid, payload)
            return
        self._end += nbytes
        self._parse()

    def data_received(self, data: bytes) -> None:
        """For loops whose pipes do not fill buffers (asyncio's own): same path, one copy more."""
        view = memoryview(data)
        while view:
            buf = self.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _compact(self) -> None:
        left = self._end - self._start
        self._stage[:left] = self._stage[self._start:self._end]
        self._start, self._end = 0, left

    def _parse(self) -> None:
        stage = self._stage
        while self._end - self._start >= 4:
            (n,) = _U32.unpack_from(stage, self._start)
            if not 5 <= n <= MAX_FRAME:
                self._lost(ConnectionError(f"bad SFTP packet length {n}"))
                if self.transport is not None:
                    self.transport.close()
                return
            have = self._end - self._start - 4
            if have >= n:
                body = bytes(stage[self._start + 4:self._start + 4 + n])
                self._start += 4 + n
                self._deliver(body[0], _U32.unpack_from(body, 1)[0], body)
                continue
            if have >= 9 and stage[self._start + 4] == DATA and n - 9 >= BIG:
                _, _, self._rid, size = _DATA_HEAD.unpack_from(stage, self._start)
                self._payload = bytearray(size)
                part = self._end - self._start - 13
                self._payload[:part] = stage[self._start + 13:self._end]
                self._got = part
                self._start = self._end = 0
                return
            if 4 + n > len(stage):  # a big packet of another kind: make room for it
                self._stage = stage = stage[self._start:self._end] + bytearray(4 + n)
                self._end -= self._start
                self._start = 0
            return
