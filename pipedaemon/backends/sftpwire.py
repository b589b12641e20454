"""SFTP version 3 over a pair of pipes: the codec and a pipelined client.

The pipes are an ``ssh -s HOST sftp`` process's stdin and stdout (as lftp does), so
encryption, MACs and SSH packets are OpenSSH's, in C, in their own process. What is
left here is the SFTP framing: a big read or write is one request and one reply of up
to the server's limit (OpenSSH: 255 KiB), so the Python work per byte is small.

Requests are pipelined: each gets an id and a future; one reader task matches replies
to futures. ``window`` bounds the requests in flight on one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import stat as statmod
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

# Packet types (draft-ietf-secsh-filexfer-02, version 3).
INIT, VERSION, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
EXTENDED = 200
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 101, 102, 103, 104, 105, 201
# Status codes.
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE, NO_CONNECTION, CONNECTION_LOST, \
    OP_UNSUPPORTED = range(9)
# Open flags.
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 0x10, 0x20
# Attribute flags.
A_SIZE, A_UIDGID, A_PERMISSIONS, A_ACMODTIME, A_EXTENDED = 1, 2, 4, 8, 0x80000000

DEFAULT_LIMIT = 32768  # what every server must accept, when it does not say its limits
DIRECT = -DATA  # sftpframes: a DATA reply whose payload was received on its own
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IBI")  # length, type, request id


class SFTPStatusError(Exception):
    """The server answered a request with a status other than OK."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message or f"SFTP status {code}")
        self.code = code


class SFTPConnectionLost(Exception):
    """The session's pipes closed (the ssh process ended) with requests unanswered."""


@dataclass
class Attrs:
    size: int | None = None
    permissions: int | None = None
    mtime: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.permissions is not None and statmod.S_ISDIR(self.permissions)

    @property
    def is_link(self) -> bool:
        return self.permissions is not None and statmod.S_ISLNK(self.permissions)


# -- codec --------------------------------------------------------------------------------
def s(value: bytes | str) -> bytes:
    """An SFTP string: length, then the bytes (names travel as UTF-8)."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return _U32.pack(len(raw)) + raw


def attrs_bytes(mtime: int | None = None, size: int | None = None) -> bytes:
    flags, body = 0, b""
    if size is not None:
        flags, body = flags | A_SIZE, body + _U64.pack(size)
    if mtime is not None:
        flags, body = flags | A_ACMODTIME, body + _U32.pack(mtime) * 2
    return _U32.pack(flags) + body


class Reader:
    """Reads the fields of one reply body in order."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | bytearray, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> bytes:
        n = self.u32()
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def text(self) -> str:
        return self.string().decode("utf-8", "surrogateescape")

    def attrs(self) -> Attrs:
        flags, a = self.u32(), Attrs()
        if flags & A_SIZE:
            a.size = self.u64()
        if flags & A_UIDGID:
            self.pos += 8
        if flags & A_PERMISSIONS:
            a.permissions = self.u32()
        if flags & A_ACMODTIME:
            self.pos += 4
            a.mtime = self.u32()
        if flags & A_EXTENDED:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return a


# -- the client ---------------------------------------------------------------------------
class SFTPSession:
    """One SFTP v3 session: requests go to ``writer`` (ssh's stdin); replies come from a
    ``sftpframes.FrameReceiver`` on ssh's stdout, which calls ``deliver`` and ``lost``."""

    def __init__(self, *, window: int = 64) -> None:
        self._w: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes | bytearray]]] = {}
        self._slots = asyncio.Semaphore(window)
        self._version: asyncio.Future[bytes | bytearray] | None = None
        self._started = False
        self._lost: BaseException | None = None
        self.extensions: dict[str, bytes] = {}
        self.max_read = self.max_write = DEFAULT_LIMIT

    @property
    def alive(self) -> bool:
        return self._lost is None and self._started

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self._w = writer

    # -- fed by the FrameReceiver -----------------------------------------------------
    def deliver(self, rtype: int, rid: int, body: bytes | bytearray) -> None:
        if rtype == VERSION:
            if self._version is not None and not self._version.done():
                self._version.set_result(body)
            return
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result((rtype, body))

    def lost(self, exc: BaseException | None) -> None:
        reason = f": {type(exc).__name__}" if exc is not None else ""
        self._fail(SFTPConnectionLost(f"SFTP session ended (the ssh process closed its output){reason}"))

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Exchange INIT and VERSION; learn the server's limits where it says them."""
        assert self._w is not None
        self._version = asyncio.get_running_loop().create_future()
        try:
            self._w.write(_U32.pack(5) + bytes([INIT]) + _U32.pack(3))
            await self._w.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            self._fail(SFTPConnectionLost(f"ssh ended before SFTP started: {type(exc).__name__}"))
        body = await self._version
        rd = Reader(body, 5)
        while rd.pos < len(body):
            name = rd.string().decode("ascii", "replace")
            self.extensions[name] = rd.string()
        self._started = True
        if "limits@openssh.com" in self.extensions:
            rd = await self.extended(b"limits@openssh.com", b"")
            _packet, read_len, write_len = rd.u64(), rd.u64(), rd.u64()
            self.max_read = read_len or DEFAULT_LIMIT
            self.max_write = write_len or DEFAULT_LIMIT

    async def close(self) -> None:
        if self._w is not None:
            with contextlib.suppress(Exception):
                self._w.close()
        self._fail(SFTPConnectionLost("session closed"))

    def _fail(self, exc: BaseException) -> None:
        self._lost = self._lost or exc
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self._lost)
        if self._version is not None and not self._version.done():
            self._version.set_exception(self._lost)

    async def request(self, kind: int, *parts: bytes | memoryview) -> tuple[int, Reader]:
        """Send one request; its reply's type and a reader positioned after the id."""
        async with self._slots:
            if self._lost is not None:
                raise self._lost
            assert self._w is not None
            rid = next(self._ids) & 0xFFFFFFFF
            fut: asyncio.Future[tuple[int, bytes | bytearray]] = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            size = 5 + sum(len(p) for p in parts)
            try:
                self._w.write(_HEAD.pack(size, kind, rid))
                for part in parts:
                    self._w.write(part)
                await self._w.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                # ssh's stdin is gone (uvloop says so with RuntimeError): the session is over.
                name = type(exc).__name__
                self._fail(SFTPConnectionLost(f"SFTP session ended (ssh's input closed): {name}"))
            rtype, body = await fut
            return rtype, Reader(body, 5)  # type: ignore[arg-type]

    @staticmethod
    def _status(rtype: int, rd: Reader, want: int) -> None:
        if rtype == want and want != STATUS:
            return
        if rtype != STATUS:
            raise SFTPConnectionLost(f"unexpected SFTP reply type {rtype}")
        code = rd.u32()
        message = rd.text() if rd.pos < len(rd.buf) else ""
        if code != OK or want != STATUS:
            raise SFTPStatusError(code, message)

    async def _expect(self, want: int, kind: int, *parts: bytes) -> Reader:
        rtype, rd = await self.request(kind, *parts)
        self._status(rtype, rd, want)
        return rd

    # -- operations -------------------------------------------------------------------
    async def extended(self, name: bytes, payload: bytes) -> Reader:
        return await self._expect(EXTENDED_REPLY, EXTENDED, s(name), payload)

    async def extended_status(self, name: bytes, payload: bytes) -> None:
        await self._expect(STATUS, EXTENDED, s(name), payload)

    async def open(self, path: str, flags: int) -> bytes:
        return (await self._expect(HANDLE, OPEN, s(path), _U32.pack(flags), attrs_bytes())).string()

    async def close_handle(self, handle: bytes) -> None:
        await self._expect(STATUS, CLOSE, s(handle))

    async def read(self, handle: bytes, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; b"" at the end of the file."""
        rtype, rd = await self.request(READ, s(handle), _U64.pack(offset), _U32.pack(length))
        if rtype == DIRECT:
            return rd.buf  # the payload, received into a bytearray of its own
        if rtype == STATUS and _U32.unpack_from(rd.buf, rd.pos)[0] == EOF:
            return b""
        self._status(rtype, rd, DATA)
        return rd.string()

    async def write(self, handle: bytes, offset: int, data: bytes | memoryview) -> None:
        await self._expect(STATUS, WRITE, s(handle), _U64.pack(offset), _U32.pack(len(data)), data)

    async def stat(self, path: str) -> Attrs:
        return (await self._expect(ATTRS, STAT, s(path))).attrs()

    async def lstat(self, path: str) -> Attrs:
        return (await self._expect(ATTRS, LSTAT, s(path))).attrs()

    async def fstat(self, handle: bytes) -> Attrs:
        return (await self._expect(ATTRS, FSTAT, s(handle))).attrs()

    async def setstat(self, path: str, *, mtime: int) -> None:
        await self._expect(STATUS, SETSTAT, s(path), attrs_bytes(mtime=mtime))

    async def ftruncate(self, handle: bytes, size: int) -> None:
        await self._expect(STATUS, FSETSTAT, s(handle), attrs_bytes(size=size))

    async def remove(self, path: str) -> None:
        await self._expect(STATUS, REMOVE, s(path))

    async def mkdir(self, path: str) -> None:
        await self._expect(STATUS, MKDIR, s(path), attrs_bytes())

    async def rmdir(self, path: str) -> None:
        await self._expect(STATUS, RMDIR, s(path))

    async def rename(self, src: str, dst: str) -> None:
        await self._expect(STATUS, RENAME, s(src), s(dst))

    async def posix_rename(self, src: str, dst: str) -> None:
        await self.extended_status(b"posix-rename@openssh.com", s(src) + s(dst))

    async def scandir(self, path: str) -> AsyncIterator[tuple[str, Attrs]]:
        handle = (await self._expect(HANDLE, OPENDIR, s(path))).string()
        try:
            while True:
                rtype, rd = await self.request(READDIR, s(handle))
                if rtype == STATUS and _U32.unpack_from(rd.buf, rd.pos)[0] == EOF:
                    return
                self._status(rtype, rd, NAME)
                for _ in range(rd.u32()):
                    name = rd.text()
                    rd.string()  # longname
                    yield name, rd.attrs()
        finally:
            with contextlib.suppress(Exception):
                await self.close_handle(handle)

    async def makedirs(self, path: str) -> None:
        """Make ``path`` and its missing parents; fine if it exists as a folder."""
        try:
            await self.mkdir(path)
            return
        except SFTPStatusError as exc:
            first = exc
            if exc.code == NO_SUCH_FILE and "/" in path.strip("/"):
                await self.makedirs(path.rstrip("/").rsplit("/", 1)[0] or "/")
                with contextlib.suppress(SFTPStatusError):
                    await self.mkdir(path)
            elif exc.code not in (FAILURE, PERMISSION_DENIED):
                raise
        try:
            found = await self.stat(path)  # it exists (made by now, or before), or the first error stands
        except SFTPStatusError:
            raise first from None
        if not found.is_dir:
            raise SFTPStatusError(FAILURE, f"{path} exists and is not a folder")
