"""A folder on this machine as a remote.

Paths are absolute local paths; a relative path is taken relative to
``options.remotepath`` (the remote's root), the way other backends take it
relative to their login folder. Every blocking call runs in a worker thread so
the event loop never waits on the disk, and data moves in 1 MiB chunks.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat as statmod
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, BinaryIO

from pipedaemon.backends.base import (
    Backend,
    Entry,
    FinishUpload,
    RangeWriter,
    RangeWrites,
    Rename,
    ServerCopy,
    SetMtime,
    SmallFiles,
    SmallPut,
    Traits,
    TransientError,
    error_edge,
    missing_root,
    source,
    source_errors,
)
from pipedaemon_sdk.protocol.errors import (
    DaemonError,
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

CHUNK = 1024 * 1024  # bytes per read() chunk and per write() flush
LIST_BATCH = 512  # directory entries fetched per worker-thread hop

_OS_MESSAGES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.ENOTEMPTY: "folder not empty",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "a file is in the way",
    errno.EROFS: "read-only file system",
}
_TRANSIENT = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT}


def map_error(exc: BaseException) -> DaemonError | None:
    """The one place local OS errors become the project's errors."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        # ENOTDIR: a parent of the path is a file, so the path cannot exist either.
        return NotFoundError("no such file or folder")
    if isinstance(exc, PermissionError):
        return PermissionDeniedError("permission denied by the local file system")
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        message = _OS_MESSAGES.get(exc.errno, exc.strerror or name)
        cls = TransientError if exc.errno in _TRANSIENT else StorageError
        return cls(message, {"errno": name})
    return StorageError(f"local file system: {type(exc).__name__}: {exc}")


def _entry(name: str, st: os.stat_result, is_dir: bool = False) -> Entry:
    return Entry(name=name, size=0 if is_dir else st.st_size, mtime=st.st_mtime, is_dir=is_dir)


def _scan_batch(it: Any, rel: str, recursive: bool) -> list[tuple[Entry | None, str | None]]:
    """Up to LIST_BATCH items of one folder: (entry to report, sub-folder to walk)."""
    out: list[tuple[Entry | None, str | None]] = []
    for de in it:
        name = f"{rel}/{de.name}" if rel else de.name
        try:
            if de.is_dir(follow_symlinks=False):
                out.append((None, name) if recursive else (_entry(name, de.stat(), True), None))
            elif de.is_file():  # follows a symlink to a file; skips dir symlinks, fifos, sockets
                out.append((_entry(name, de.stat()), None))
        except FileNotFoundError:
            continue  # removed while we listed, or a dangling symlink
        if len(out) >= LIST_BATCH:
            break
    return out


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class LocalWriter(RangeWriter):
    """An open file descriptor written with pwrite, safe for parallel chunks."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self._path = path

    async def write_at(self, offset: int, data: bytes) -> None:
        if self._fd is None:
            raise StorageError("writer is closed", {"path": self._path})
        with error_edge(map_error, self._path):
            await asyncio.to_thread(_write_all, self._fd, data, offset)

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with error_edge(map_error, self._path):
                await asyncio.to_thread(os.close, fd)


class LocalBackend(Backend, Rename, ServerCopy, SetMtime, FinishUpload, SmallFiles, RangeWrites):
    protocol = "local"
    traits = Traits(ranged_read=True, checksums=())

    def _path(self, path: str) -> str:
        root = str(self.options.get("remotepath") or "/")
        return os.path.join(root, path)  # join keeps an absolute ``path`` as it is

    def describe(self) -> str:
        return f"local:{self.options.get('remotepath') or '/'}"

    async def connect(self) -> None:
        root = self.options.get("remotepath")
        if root is None:
            return
        if not os.path.isabs(str(root)):
            raise InvalidSettingsError("remotepath must be an absolute folder", {"field": "remotepath"})
        # A missing root is an error (an unmounted disk must not turn into a folder on the local
        # disk), unless the remote asks for it to be made: options.create_root.
        await self._root_exists()
        with error_edge(map_error, str(root)):
            if await asyncio.to_thread(os.path.exists, root):
                if not await asyncio.to_thread(os.path.isdir, root):
                    raise InvalidSettingsError("remotepath is not a folder", {"field": "remotepath"})
                # Only read access is required: a read-only folder is a fine source to pull from.
                if not await asyncio.to_thread(os.access, root, os.R_OK | os.X_OK):
                    raise PermissionDeniedError("no read access to remotepath", {"path": root})

    async def _root_exists(self) -> None:
        """1001 naming the root when it is missing; with create_root, make it instead."""
        root = self.options.get("remotepath")
        if root is None or await asyncio.to_thread(os.path.lexists, root):
            return
        if self.options.get("create_root"):
            with error_edge(map_error, str(root)):
                await asyncio.to_thread(os.makedirs, root, exist_ok=True)
            return
        raise missing_root(str(root))

    async def _parents(self, local: str) -> None:
        """Make the folders above ``local``, but never the remote's root itself."""
        await self._root_exists()
        await asyncio.to_thread(os.makedirs, os.path.dirname(local), exist_ok=True)

    # -- required --------------------------------------------------------------
    async def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        root = self._path(path)
        pending = [""]
        with error_edge(map_error, path):
            while pending:
                rel = pending.pop()
                try:
                    it = await asyncio.to_thread(os.scandir, os.path.join(root, rel))
                except (FileNotFoundError, NotADirectoryError):
                    if rel == "":
                        await self._root_exists()  # the root went away (unmounted): say so
                    continue  # a missing folder lists as empty; a sub-folder may vanish mid-walk
                try:
                    while batch := await asyncio.to_thread(_scan_batch, it, rel, recursive):
                        for entry, subdir in batch:
                            if subdir is not None:
                                pending.append(subdir)
                            if entry is not None:
                                yield entry
                finally:
                    it.close()

    async def stat(self, path: str) -> Entry:
        with error_edge(map_error, path):
            st = await asyncio.to_thread(os.stat, self._path(path))
        return _entry(path, st, is_dir=statmod.S_ISDIR(st.st_mode))

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        with error_edge(map_error, path):
            # Opened and the first chunk read in one worker-thread hop: a small file costs one.
            f, data = await asyncio.to_thread(_open_read, self._path(path), offset,
                                              CHUNK if length is None else min(CHUNK, length))
            try:
                left = length
                while data:
                    if left is not None:
                        left -= len(data)
                    yield data
                    if (left is not None and left <= 0) or f is None:
                        break
                    data = await asyncio.to_thread(f.read, CHUNK if left is None else min(CHUNK, left))
            finally:
                if f is not None:
                    f.close()

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        local = self._path(path)
        with source_errors():
            with error_edge(map_error, path):
                # Up to CHUNK gathered first: a stream that ends by then (a small file) is written,
                # its folders made and its entry read in one worker-thread hop.
                head: list[bytes] = []
                gathered = 0
                it = aiter(source(chunks))
                async for chunk in it:
                    head.append(chunk)
                    gathered += len(chunk)
                    if gathered >= CHUNK:
                        break
                else:
                    if size is not None and gathered != size:
                        raise StorageError(f"stream gave {gathered} bytes, {size} expected", {"path": path})
                    st = await asyncio.to_thread(self._write_small, local, head)
                    return _entry(path, st)
                await self._parents(local)
                f: BinaryIO = await asyncio.to_thread(open, local, "wb")
                try:
                    await asyncio.to_thread(f.writelines, head)
                    written = gathered + await self._pump(f, it)
                    await asyncio.to_thread(f.close)
                    if size is not None and written != size:
                        raise StorageError(f"stream gave {written} bytes, {size} expected", {"path": path})
                except BaseException:
                    # Leave no half-written file under the name (rclone does the same).
                    f.close()
                    await asyncio.to_thread(_unlink_quietly, local)
                    raise
        return await self.stat(path)

    def _root_exists_sync(self) -> None:
        """``_root_exists`` in a worker thread, for the hops that do several things at once."""
        root = self.options.get("remotepath")
        if root is None or os.path.lexists(root):
            return
        if self.options.get("create_root"):
            os.makedirs(root, exist_ok=True)
            return
        raise missing_root(str(root))

    def _write_small(self, local: str, data: list[bytes]) -> os.stat_result:
        self._root_exists_sync()
        parent = os.path.dirname(local)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        try:
            with open(local, "wb") as f:
                f.writelines(data)
        except BaseException:
            _unlink_quietly(local)
            raise
        return os.stat(local)

    @staticmethod
    async def _pump(f: BinaryIO, chunks: AsyncIterable[bytes]) -> int:
        """Copy the stream (already through ``source``) to ``f``, gathering small chunks so each
        thread hop moves ~1 MiB."""
        buf: list[bytes] = []
        pending = written = 0
        async for chunk in chunks:
            buf.append(chunk)
            pending += len(chunk)
            if pending >= CHUNK:
                await asyncio.to_thread(f.writelines, buf)
                written, buf, pending = written + pending, [], 0
        if buf:
            await asyncio.to_thread(f.writelines, buf)
        return written + pending

    async def delete(self, path: str) -> None:
        with error_edge(map_error, path):
            await asyncio.to_thread(os.unlink, self._path(path))

    async def mkdir(self, path: str) -> None:
        with error_edge(map_error, path):
            await asyncio.to_thread(os.makedirs, self._path(path), exist_ok=True)

    async def rmdir(self, path: str) -> None:
        # os.rmdir only ever removes an empty folder: ENOTEMPTY maps to "folder not empty".
        with error_edge(map_error, path):
            await asyncio.to_thread(os.rmdir, self._path(path))

    # -- optional --------------------------------------------------------------
    async def rename(self, src: str, dst: str) -> None:
        target = self._path(dst)
        with error_edge(map_error, src):
            await asyncio.to_thread(self._rename, self._path(src), target)  # one hop

    async def finish_upload(self, tmp: str, dst: str, mtime: float | None) -> Entry:
        target = self._path(dst)
        with error_edge(map_error, tmp):
            st = await asyncio.to_thread(self._finish, self._path(tmp), target, mtime)
        return _entry(dst, st)

    def _finish(self, tmp: str, target: str, mtime: float | None) -> os.stat_result:
        if mtime is not None:
            try:
                _set_mtime(tmp, mtime)
            except OSError as exc:
                if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                    raise  # no file to publish
        self._rename(tmp, target)
        return os.stat(target)

    async def read_small(self, items: list[tuple[str, int]]) -> list[bytes | DaemonError]:
        return await asyncio.to_thread(_read_small, [(p, self._path(p), n) for p, n in items])

    async def put_small(self, items: list[SmallPut]) -> list[Entry | DaemonError]:
        with error_edge(map_error, str(self.options.get("remotepath") or "/")):
            return await asyncio.to_thread(self._put_small, items)

    def _put_small(self, items: list[SmallPut]) -> list[Entry | DaemonError]:
        """``put_small`` in one worker-thread hop: the root checked once, each parent folder once."""
        self._root_exists_sync()
        parents: set[str] = set()
        out: list[Entry | DaemonError] = []
        for item in items:
            tmp, target = self._path(item.tmp), self._path(item.dst)
            try:
                parent = os.path.dirname(target)
                if parent not in parents:
                    if not os.path.isdir(parent):
                        os.makedirs(parent, exist_ok=True)
                    parents.add(parent)
                st = _write_stamped(tmp, item.data, item.mtime)
                if st.st_size != len(item.data):
                    raise StorageError(f"stored {st.st_size} bytes, sent {len(item.data)}")
                os.replace(tmp, target)
                out.append(_entry(item.dst, st))
            except Exception as exc:  # noqa: BLE001 - this file's error, the others go on
                _unlink_quietly(tmp)
                out.append(_mapped(exc, item.dst))
        return out

    def _rename(self, src: str, target: str) -> None:
        self._root_exists_sync()
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        os.replace(src, target)

    async def copy(self, src: str, dst: str) -> Entry:
        target = self._path(dst)
        with error_edge(map_error, src):
            await self._parents(target)
            # copyfile uses copy_file_range/sendfile: the bytes never enter Python.
            await asyncio.to_thread(shutil.copyfile, self._path(src), target)
        return await self.stat(dst)

    async def set_mtime(self, path: str, mtime: float) -> None:
        local = self._path(path)
        with error_edge(map_error, path):
            await asyncio.to_thread(_set_mtime, local, mtime)  # one hop

    async def open_writer(self, path: str, size: int) -> RangeWriter:
        local = self._path(path)
        with error_edge(map_error, path):
            await self._parents(local)
            # No O_TRUNC: a resumed transfer keeps the chunks that already landed.
            fd = await asyncio.to_thread(os.open, local, os.O_WRONLY | os.O_CREAT, 0o666)
            try:
                await asyncio.to_thread(os.ftruncate, fd, size)
            except BaseException:
                os.close(fd)
                raise
        return LocalWriter(fd, path)


def _open_read(path: str, offset: int, first: int) -> tuple[BinaryIO | None, bytes]:
    """The file open at ``offset`` and its first ``first`` bytes; the file is closed already (None)
    when those were all of it."""
    f: BinaryIO = open(path, "rb", buffering=0)  # closed by the caller, or below
    try:
        if offset:
            f.seek(offset)
        data = f.read(first) if first else b""
        while 0 < len(data) < first:  # a short read is the end of the file only when nothing follows
            more = f.read(first - len(data))
            if not more:
                break
            data += more
        if len(data) < first or not first:
            f.close()
            return None, data
        return f, data
    except BaseException:
        f.close()
        raise


def _read_small(items: list[tuple[str, str, int]]) -> list[bytes | DaemonError]:
    out: list[bytes | DaemonError] = []
    for path, local, size in items:
        try:
            with open(local, "rb", buffering=0) as f:
                want = size or 1  # one byte of a file planned empty shows it grew
                data = f.read(want)
                while 0 < len(data) < want and (more := f.read(want - len(data))):
                    data += more
            out.append(data)
        except Exception as exc:  # noqa: BLE001 - this file's error, the others go on
            out.append(_mapped(exc, path))
    return out


def _write_stamped(tmp: str, data: bytes, mtime: float | None) -> os.stat_result:
    """``data`` in a new file ``tmp``, given ``mtime``; its stat (one open, no path lookups more)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        _write_all(fd, data, 0)
        if mtime is not None:
            os.utime(fd, (time.time(), mtime))
        return os.fstat(fd)
    finally:
        os.close(fd)


def _mapped(exc: BaseException, path: str) -> DaemonError:
    """``exc`` as the project's error, naming ``path`` (error_edge's mapping, for one file of a batch)."""
    err = exc if isinstance(exc, DaemonError) else map_error(exc)
    if err is None:
        err = StorageError(f"local file system: {type(exc).__name__}: {exc}")
    if "path" not in err.data:
        err.data["path"] = path
    return err


def _set_mtime(local: str, mtime: float) -> None:
    st = os.stat(local)
    os.utime(local, (st.st_atime, mtime))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
