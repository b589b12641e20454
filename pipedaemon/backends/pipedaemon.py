"""A shared daemon as storage: its object methods, on its socket, as the connecting user.

``{"protocol": "pipedaemon", "options": {"socket": "/run/pipedaemon/shared.sock",
"pipe": "vendor"}}`` reads and writes the files of the shared daemon's pipe ``vendor``
(paths relative to its folder); ``"remote": "lake"`` instead addresses a remote's root.
The shared daemon checks the user's role on every request and holds the credentials;
this daemon only sees file names, sizes, etags and bytes. Files land in the user's
folders, written by the user's own daemon, so they are the user's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, ClassVar

import msgspec

from pipedaemon_sdk import AsyncPipeClient
from pipedaemon_sdk.protocol.errors import DaemonConnectionError, DaemonTimeoutError, StorageError
from pipedaemon_sdk.streams import async_open_read, parse_header, request_line

from .base import Backend, Entry, Traits, TransientError

PIECE = 1 << 20


def _entry(raw: dict[str, Any], name: str | None = None) -> Entry:
    return Entry(name=raw["name"] if name is None else name, size=int(raw.get("size") or 0),
                 mtime=raw.get("modified_at"), etag=raw.get("etag"), is_dir=bool(raw.get("is_dir")))


@contextlib.asynccontextmanager
async def _edge() -> AsyncIterator[None]:
    """A shared daemon out of reach is worth retrying; its answers (1001, 1005...) are final."""
    try:
        yield
    except (DaemonConnectionError, DaemonTimeoutError, ConnectionError) as exc:
        raise TransientError(f"shared daemon: {exc}", {"reason": "connection"}) from exc


class PipedaemonBackend(Backend):
    protocol = "pipedaemon"
    # The shared daemon's object.write publishes whole (its engine's temporary names or PUT).
    # Its folders are implied by keys, as on S3: the object methods have no mkdir/rmdir, and a
    # user with write on a pipe gets no say over the storage's own folders.
    traits: ClassVar[Traits] = Traits(atomic_write=True, ranged_read=True, implied_folders=True)

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *, max_streams: int = 8) -> None:
        super().__init__(options, credentials, max_streams=max_streams)
        self.socket: str = options["socket"]
        self.timeout: float = float(options.get("timeout", 60.0))
        where = {"pipe": options["pipe"]} if options.get("pipe") else {"remote": options["remote"]}
        self._where: dict[str, Any] = {"profile": options.get("profile", "default"), **where}
        self._client = AsyncPipeClient(self.socket, shared=True, request_timeout_s=self.timeout)

    def describe(self) -> str:
        kind, name = next((k, v) for k, v in self._where.items() if k != "profile")
        return f"pipedaemon {self.socket} {kind} {name}"

    async def _call(self, method: str, **params: Any) -> Any:
        async with _edge():
            return await self._client.call(method, {**self._where, **params})

    async def connect(self) -> None:
        # Proves the socket answers and the user may see the pipe or remote (1001 if not).
        async with _edge():
            await self._client.connect()
            if "pipe" in self._where:
                await self._client.call("pipe.get", {"profile": self._where["profile"],
                                                     "name": self._where["pipe"]})
            else:
                await self._client.call("remote.get", {"profile": self._where["profile"],
                                                       "name": self._where["remote"]})

    async def close(self) -> None:
        await self._client.close()

    def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        return self._list(path, recursive)

    async def _list(self, path: str, recursive: bool) -> AsyncIterator[Entry]:
        folder = path if not path or path.endswith("/") else path + "/"
        rows = await self._call("object.list", prefix=folder, recursive=recursive, metadata=True)
        for raw in rows:
            name = raw["name"]
            if name.startswith(folder) and name != folder:
                yield _entry(raw, name[len(folder):])

    async def stat(self, path: str) -> Entry:
        return _entry(await self._call("object.stat", key=path), path)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self._read(path, offset, length)

    async def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        async with _edge():
            stream = await async_open_read(self.socket, {**self._where, "key": path, "offset": offset,
                                                         "length": length}, shared=True)
        try:
            left = stream.size
            while left > 0:
                async with _edge():
                    piece = await stream.read(min(PIECE, left))
                left -= len(piece)
                yield piece
        except StorageError as exc:  # the stream ended early: the engine resumes from what came
            raise TransientError(str(exc), {"path": path}) from exc
        finally:
            await stream.close()

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        if size is None:  # the wire needs the length first
            data = b"".join([bytes(c) async for c in chunks])
            chunks, size = _once(data), len(data)
        async with _edge():
            reader, writer = await asyncio.open_unix_connection(self.socket, limit=1 << 24)
        try:
            writer.write(request_line("object.write", {**self._where, "key": path, "size": size}))
            sent = 0
            try:
                async for piece in chunks:
                    sent += len(piece)
                    if sent > size:
                        raise StorageError(f"{path}: more than the {size} bytes announced", {"path": path})
                    writer.write(piece)
                    await writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused early (1005...): its answer says why
            async with _edge():
                raw = parse_header(await asyncio.wait_for(reader.readline(), self.timeout))
        finally:
            writer.close()
        entry = _entry(raw, path)
        # The shared daemon's engine verified what it stored; an ETag of parts it chose (its S3
        # remote's part size) cannot be checked against the md5 this daemon sent, so it is not passed up.
        if "-" in (entry.etag or ""):
            entry = msgspec.structs.replace(entry, etag=None)
        return entry

    async def delete(self, path: str) -> None:
        await self._call("object.delete", key=path)

    async def mkdir(self, path: str) -> None:
        """Folders are implied (traits.implied_folders): they appear with their first file."""

    async def rmdir(self, path: str) -> None:
        """Folders are implied (traits.implied_folders): the shared daemon's storage keeps its own."""


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
