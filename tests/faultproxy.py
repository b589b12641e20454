"""A fault-injecting TCP proxy on loopback, between the daemon and a real server.

Each new connection takes the next action from a schedule (a list, cycled past its
end with "pass", or a seeded function of the connection number):
- ``("pass",)``: forward both ways;
- ``("reset_after", n)``: forward, then reset once the server has sent ``n`` bytes;
- ``("stall_after", n, seconds)``: forward ``n`` server bytes, then stop forwarding
  for ``seconds`` (past the client's timeouts), then close;
- ``("truncate_after", n)``: forward ``n`` server bytes, then close cleanly (FIN);
- ``("slow", bytes_per_s)``: forward at a limited rate;
- ``("corrupt_every", n)``: flip one bit in every ``n``-th byte the server sends;
- ``("http_status", code)``: answer the first HTTP request with ``code`` and an S3
  style error body (503 SlowDown, 500 InternalError), then close.
It runs its own event loop in a thread, so tests and the daemon are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

Action = tuple[Any, ...]

BODIES = {
    503: (b"Service Unavailable", b"SlowDown", b"Please reduce your request rate."),
    500: (b"Internal Server Error", b"InternalError", b"We encountered an internal error."),
}


class FaultProxy:
    def __init__(self, target_port: int, schedule: list[Action] | Callable[[int], Action] | None = None,
                 target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.schedule = schedule or []
        self.connections = 0
        self.faults: list[Action] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_schedule(self, schedule: list[Action] | Callable[[int], Action]) -> None:
        self.schedule = schedule

    def _next_action(self) -> Action:
        n = self.connections
        self.connections += 1
        if callable(self.schedule):
            action = self.schedule(n)
        else:
            action = self.schedule[n] if n < len(self.schedule) else ("pass",)
        if action[0] != "pass":
            self.faults.append(action)
        return action

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        action = self._next_action()
        try:
            if action[0] == "http_status":
                await self._http_status(cr, cw, int(action[1]))
                return
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        up = asyncio.ensure_future(self._pipe(cr, sw, None))
        down = asyncio.ensure_future(self._pipe(sr, cw, action))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        for w in (sw, cw):
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, action: Action | None) -> None:
        sent = 0
        kind = action[0] if action else "pass"
        limit = int(action[1]) if kind in ("reset_after", "stall_after", "truncate_after") else None
        while True:
            data = await r.read(65536)
            if not data:
                with contextlib.suppress(Exception):
                    w.write_eof()
                return
            if limit is not None and sent + len(data) >= limit:
                w.write(data[: max(0, limit - sent)])
                with contextlib.suppress(Exception):
                    await w.drain()
                if kind == "reset_after":
                    w.transport.abort()  # RST: the connection breaks mid-response
                elif kind == "stall_after":
                    await asyncio.sleep(float(action[2]))  # type: ignore[index]
                return
            if kind == "slow":
                await asyncio.sleep(len(data) / float(action[1]))  # type: ignore[index]
            if kind == "corrupt_every":
                data = _corrupt(data, sent, int(action[1]))  # type: ignore[index]
            w.write(data)
            await w.drain()
            sent += len(data)

    async def _http_status(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter, code: int) -> None:
        head = await cr.readuntil(b"\r\n\r\n")
        length, expect = 0, False
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
            expect = expect or line.lower().startswith(b"expect: 100-continue")
        if length and not expect:  # with Expect the client waits for us before sending a body
            await cr.readexactly(length)
        reason, err, msg = BODIES.get(code, (b"Error", b"InternalError", b"error"))
        body = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" + err + b"</Code><Message>" + msg
                + b"</Message></Error>")
        cw.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % (code, reason, len(body)) + body)
        with contextlib.suppress(Exception):
            await cw.drain()
        cw.close()


def _corrupt(data: bytes, start: int, every: int) -> bytes:
    """Flip a bit at each stream position that is a multiple of ``every`` (past the first)."""
    out = bytearray(data)
    first = ((start // every) + 1) * every
    for pos in range(first, start + len(data), every):
        out[pos - start] ^= 0x01
    return bytes(out)
