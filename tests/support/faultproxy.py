"""A fault-injecting TCP proxy on loopback, between the daemon and a real server.

Each new connection takes the next action from a schedule (a list, cycled past its
end with "pass", or a seeded function of the connection number):
- ``("pass",)``: forward both ways;
- ``("reset_after", n)``: forward, then reset once the server has sent ``n`` bytes;
- ``("stall_after", n, seconds)``: forward ``n`` server bytes, then stop forwarding
  for ``seconds`` (past the client's timeouts), then close;
- ``("truncate_after", n)``: forward ``n`` server bytes, then close cleanly (FIN);
- ``("slow", bytes_per_s)``: forward at a limited rate (``"slow_both"``: both ways);
- ``("corrupt_every", n)``: flip one bit in every ``n``-th byte the server sends;
- ``("rewrite", pattern, repl)``: ``re.sub`` the bytes the server sends (a header or a reply
  line told wrong; matched within one read, or one batch of whole lines on FTP control);
- ``("http_status", code)``: answer the first HTTP request with ``code`` and an S3
  style error body (503 SlowDown, 500 InternalError), then close;
- ``("reset_after_up", n)``, ``("stall_after_up", n, seconds)``, ``("truncate_after_up", n)``,
  ``("slow_up", bytes_per_s)``: the same, counting and holding the bytes the *client*
  sends (uploads: S3 part bodies, SFTP writes, FTP STOR data).
It runs its own event loop in a thread, so tests and the daemon are unaffected.

FTP (``ftp_data=True``): passive data connections would go straight to the server's
data port and miss the faults. The proxy rewrites the control connection's 227
(PASV) and 229 (EPSV) replies to a one-shot listener of its own, which forwards to the
server's data port with the next action of the schedule; so control and data
connections draw actions from the same schedule. Plain FTP only: under TLS the
replies cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

Action = tuple[Any, ...]

LIMITED = ("reset_after", "stall_after", "truncate_after")
DATA_LISTEN_S = 30.0  # a data listener nobody connects to is closed after this
_PASV = re.compile(rb"^227 [^(]*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
_EPSV = re.compile(rb"^229 [^(]*\(\|\|\|(\d+)\|\)")

BODIES = {
    503: (b"Service Unavailable", b"SlowDown", b"Please reduce your request rate."),
    500: (b"Internal Server Error", b"InternalError", b"We encountered an internal error."),
}


class FaultProxy:
    def __init__(self, target_port: int, schedule: list[Action] | Callable[[int], Action] | None = None,
                 target_host: str = "127.0.0.1", ftp_data: bool = False) -> None:
        self.target = (target_host, target_port)
        self.schedule = schedule or []
        self.ftp_data = ftp_data
        self.connections = 0
        self.data_connections = 0  # FTP data connections proxied (also counted in connections)
        self.faults: list[Action] = []  # actions handed to connections (other than "pass")
        self.fired: list[Action] = []  # actions that took effect (a reset within the bytes sent, ...)
        self.bytes_up = 0  # bytes forwarded client -> server, and server -> client
        self._live: set[asyncio.StreamWriter] = set()  # client sides of open connections
        self._stalled: set[asyncio.StreamWriter] = set()  # of them, those handed a stall
        self.bytes_down = 0
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
        await self._bridge(cr, cw, self.target, self._next_action(), control=self.ftp_data)

    async def _bridge(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter, target: tuple[str, int],
                      action: Action, control: bool = False) -> None:
        try:
            if action[0] == "http_status":
                self.fired.append(action)
                await self._http_status(cr, cw, int(action[1]))
                return
            sr, sw = await asyncio.open_connection(*target)
        except OSError:
            cw.close()
            return
        up = asyncio.ensure_future(self._pipe(cr, sw, action, upstream=True))
        down = asyncio.ensure_future(self._pipe(sr, cw, action, upstream=False, ftp_control=control))
        self._live.add(cw)
        if action[0].startswith("stall"):
            self._stalled.add(cw)
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._live.discard(cw)
            self._stalled.discard(cw)
            for t in (up, down):
                t.cancel()
            for w in (sw, cw):
                with contextlib.suppress(Exception):
                    w.close()

    def wait_quiet(self, timeout: float) -> None:
        """Until no connection handed a stall is open any more (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self._stalled and time.monotonic() < deadline:
            time.sleep(0.05)

    def drop_all(self) -> int:
        """Reset every connection open now (as a server or middlebox dropping idle ones); how many."""
        async def drop() -> int:
            live = list(self._live)
            for w in live:
                w.transport.abort()
            return len(live)
        return asyncio.run_coroutine_threadsafe(drop(), self._loop).result(10)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, action: Action | None,
                    upstream: bool = False, ftp_control: bool = False) -> None:
        """Forward ``r`` to ``w``, applying ``action`` if it is meant for this direction."""
        sent = 0
        kind = action[0] if action else "pass"
        if kind == "slow_both":
            kind = "slow"
        elif kind.endswith("_up") != upstream:
            kind = "pass"  # an action for the other direction
        kind = kind.removesuffix("_up")
        limit = int(action[1]) if kind in LIMITED else None  # type: ignore[index]
        pending = b""
        while True:
            data = await r.read(65536)
            if not data:
                with contextlib.suppress(Exception):
                    w.write(pending)
                    w.write_eof()
                return
            if ftp_control:  # whole reply lines only, so a passive reply can be rewritten
                pending += data
                head, sep, pending = pending.rpartition(b"\n")
                if not sep:
                    continue  # no whole line yet: it stays in pending
                data = await self._rewrite_passive(head + sep)
            if limit is not None and sent + len(data) >= limit:
                self.fired.append(action)  # type: ignore[arg-type]
                self._count(upstream, max(0, limit - sent))
                w.write(data[: max(0, limit - sent)])
                with contextlib.suppress(Exception):
                    await w.drain()
                if kind == "reset_after":
                    w.transport.abort()  # RST: the connection breaks mid-response
                elif kind == "stall_after":
                    await asyncio.sleep(float(action[2]))  # type: ignore[index]
                return
            if kind in ("slow", "corrupt_every") and sent == 0:
                self.fired.append(action)  # type: ignore[arg-type]
            if kind == "slow":
                await asyncio.sleep(len(data) / float(action[1]))  # type: ignore[index]
            if kind == "corrupt_every":
                data = _corrupt(data, sent, int(action[1]))  # type: ignore[index]
            if kind == "rewrite":
                data, n = re.subn(action[1], action[2], data)  # type: ignore[index]
                if n:
                    self.fired.append(action)  # type: ignore[arg-type]
            self._count(upstream, len(data))
            w.write(data)
            await w.drain()
            sent += len(data)

    def _count(self, upstream: bool, n: int) -> None:
        if upstream:
            self.bytes_up += n
        else:
            self.bytes_down += n

    async def _rewrite_passive(self, lines: bytes) -> bytes:
        """Point 227/229 replies at a one-shot listener that forwards to the server's data port."""
        out = []
        for line in lines.splitlines(keepends=True):
            m4, m6 = _PASV.match(line), _EPSV.match(line)
            if m4:
                host = ".".join(m4.group(i).decode() for i in range(1, 5))
                port = await self._data_listener((host, int(m4[5]) * 256 + int(m4[6])))
                line = b"227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n" % (port // 256, port % 256)
            elif m6:
                port = await self._data_listener((self.target[0], int(m6[1])))
                line = b"229 Entering extended passive mode (|||%d|).\r\n" % port
            out.append(line)
        return b"".join(out)

    async def _data_listener(self, target: tuple[str, int]) -> int:
        server: asyncio.AbstractServer | None = None

        async def accept(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            assert server is not None
            server.close()  # one connection per passive reply, as the server itself allows
            self.data_connections += 1
            await self._bridge(cr, cw, target, self._next_action())

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self._loop.call_later(DATA_LISTEN_S, server.close)
        return int(server.sockets[0].getsockname()[1])

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
