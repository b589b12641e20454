"""fsspec filesystems over the daemon: ``pipedaemon://REMOTE/path`` and ``pipe://PIPE/path``.

Needs the optional extra (``pip install pipedaemon[fsspec]``); importing
``pipedaemon_sdk`` does not import this module. fsspec finds both protocols through
the ``fsspec.specs`` entry points. Credentials stay in the daemon: these classes
only hold a remote's or a pipe's name.

Folders are implied by the names, as on S3 (``mkdir`` creates nothing, empty
folders are not listed), on every kind of remote, so a path means the same
everywhere. Listings come from the daemon's cached scans (TTL: the profile's
``scan_ttl_s``; ``refresh=True`` lists afresh); writes go through the daemon's
engine (verified, under a temporary name until complete).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .client import PipeClient
from .protocol.errors import NotFoundError

STREAM_MAX = 8 << 20  # files up to this size move on one stream; larger ones as a chunked job
INFO_TTL_S = 5.0  # how long entries seen by ls answer info() without asking the daemon (``info_ttl_s``)

_clients: dict[tuple[int, str, str], PipeClient] = {}
_clients_lock = threading.Lock()


def client_for(socket_path: str | None, profile: str | None) -> PipeClient:
    """One shared client per process, daemon socket and profile (a client is thread-safe).

    Without ``socket_path`` the socket is ``$PIPEDAEMON_SOCKET`` (read now, not at import):
    a Dask worker talks to the daemon of the machine it runs on.
    """
    probe = PipeClient(socket_path=socket_path, profile=profile)
    key = (os.getpid(), str(probe.socket_path), probe.profile)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = PipeClient(socket_path=probe.socket_path, profile=probe.profile,
                                                request_timeout_s=120.0)
        return client


def _progress(callback: Callback) -> Any:
    def on_progress(ev: Any) -> None:
        callback.set_size(ev.bytes_total)
        callback.absolute_update(ev.bytes_done)

    return on_progress


def file_info(path: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"name": path, "size": row["size"], "type": "file", "modified_at": row.get("modified_at"),
            "etag": row.get("etag")}


def dir_info(path: str) -> dict[str, Any]:
    return {"name": path, "size": 0, "type": "directory"}


def children(path: str, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries directly in folder ``path``, from the infos of every file below it."""
    out: dict[str, dict[str, Any]] = {}
    for info in files:
        head, sep, _ = info["name"][len(path) + 1:].partition("/")
        name = f"{path}/{head}"
        out[name] = dir_info(name) if sep else info
    return sorted(out.values(), key=lambda i: i["name"])


def info_in(path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``path``'s info from the listing of its parent folder (names relative to it)."""
    base = path.rpartition("/")[2]
    inside = f"{base}/"
    is_dir = False
    for row in rows:
        if row["name"] == base:
            return file_info(path, row)
        is_dir = is_dir or row["name"].startswith(inside)
    if is_dir:  # a folder is there while it holds a file (an empty one left on disk is not)
        return dir_info(path)
    raise FileNotFoundError(path)


class _DaemonFileSystem(AbstractFileSystem):
    """What both protocols share; subclasses say how a path maps to a remote object."""

    root_marker = ""

    def __init__(self, socket_path: str | None = None, profile: str | None = None,
                 block_size: int = 4 << 20, info_ttl_s: float = INFO_TTL_S, stream_max: int = STREAM_MAX,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_max = stream_max  # writes up to this size go on one stream, larger ones as a job
        self.info_ttl_s = info_ttl_s  # an info() younger than this comes from the last ls (0: never)
        self.socket_path = socket_path
        self.profile = profile
        self.block_size = block_size
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}

    @property
    def client(self) -> PipeClient:
        return client_for(self.socket_path, self.profile)

    # -- what subclasses provide ------------------------------------------------------
    def _tops(self) -> list[str]:
        raise NotImplementedError

    def _files(self, top: str, folder: str, refresh: bool) -> list[dict[str, Any]]:
        """Files under ``folder`` of ``top`` (recursively): name (relative), size, modified_at, etag."""
        raise NotImplementedError

    def _target(self, top: str, rel: str) -> tuple[str, str]:
        """The (remote, key) holding ``rel`` of ``top``."""
        raise NotImplementedError

    # -- paths ------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        path = str(path)
        for proto in (cls.protocol if isinstance(cls.protocol, tuple) else (cls.protocol,)):
            if path.startswith(f"{proto}://"):
                path = path[len(proto) + 3:]
        return path.strip("/")

    def _split(self, path: str) -> tuple[str, str]:
        top, _, rel = self._strip_protocol(path).partition("/")
        return top, rel.strip("/")

    def _key(self, path: str) -> tuple[str, str]:
        top, rel = self._split(path)
        if not rel:
            raise IsADirectoryError(path)
        return self._target(top, rel)

    def _p(self, path: str, **kw: Any) -> dict[str, Any]:
        remote, key = self._key(path)
        return {"profile": self.client.profile, "remote": remote, "key": key, **kw}

    def _forget(self, path: str) -> None:
        self._seen.pop(self._strip_protocol(path), None)
        self.invalidate_cache(path)

    # -- listing ----------------------------------------------------------------------
    _file_info = staticmethod(file_info)
    _dir_info = staticmethod(dir_info)

    def _tree(self, path: str, refresh: bool = False) -> list[dict[str, Any]]:
        """Every file below ``path`` (a folder), as full infos."""
        top, rel = self._split(path)
        base = f"{top}/{rel}" if rel else top
        now = time.monotonic()
        out = []
        for row in self._files(top, rel, refresh):
            info = self._file_info(f"{base}/{row['name']}", row)
            self._seen[info["name"]] = (now, info)
            out.append(info)
        return out

    def ls(self, path: str, detail: bool = True, refresh: bool = False, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        if not path:
            out = [self._dir_info(t) for t in self._tops()]
        else:
            files = self._tree(path, refresh)
            if not files:
                info = self.info(path)  # FileNotFoundError for nothing there
                out = [info] if info["type"] == "file" else []
            else:
                out = children(path, files)
        return out if detail else [i["name"] for i in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        top, rel = self._split(path)
        if not rel:
            if top and top not in self._tops():
                raise FileNotFoundError(path)
            return self._dir_info(path)
        seen = self._seen.get(path)
        if seen and time.monotonic() - seen[0] < self.info_ttl_s:
            return seen[1]
        parent = rel.rpartition("/")[0]
        return info_in(path, self._files(top, parent, False))  # the daemon's cached listing

    def ukey(self, path: str) -> str:
        info = self.info(path)
        return info.get("etag") or f"{info['size']}-{info.get('modified_at')}"

    def checksum(self, path: str) -> int:
        """Changes when the object changes: from its etag (or size and time without one)."""
        return int(hashlib.md5(self.ukey(path).encode()).hexdigest(), 16)

    def modified(self, path: str) -> Any:
        import datetime

        ts = self.info(path).get("modified_at")
        if ts is None:
            raise NotImplementedError(f"{path}: the storage gives no modified time")
        return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)

    # -- folders: implied by the names ----------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass

    def rmdir(self, path: str) -> None:
        pass

    # -- reading ----------------------------------------------------------------------
    def read_range(self, path: str, start: int, length: int | None) -> bytes:
        with self.client._open_read(self._p(path, offset=start, length=length)) as stream:
            return stream.read()

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = size + start if start is not None and start < 0 else start
            end = size + end if end is not None and end < 0 else end
        begin = max(start or 0, 0)
        length = None if end is None else max(0, end - begin)
        try:
            return self.read_range(path, begin, length)
        except NotFoundError as exc:
            raise FileNotFoundError(path) from exc

    def get_file(self, rpath: str, lpath: str, callback: Callback = DEFAULT_CALLBACK, outfile: Any = None,
                 **kwargs: Any) -> None:
        """Download through the engine: whole and verified, under a temporary name until then."""
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        if outfile is not None:
            outfile.write(self.cat_file(rpath))
            return
        os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
        remote, key = self._key(rpath)
        self.client.download(remote=remote, key=key, dest=lpath, on_progress=_progress(callback))

    # -- writing ----------------------------------------------------------------------
    def upload_local(self, lpath: str, rpath: str, callback: Callback = DEFAULT_CALLBACK) -> None:
        """Store a local file at ``rpath``: one stream when small, a chunked job when large."""
        remote, key = self._key(rpath)
        size = os.path.getsize(lpath)
        if size <= self.stream_max:
            callback.set_size(size)
            with open(lpath, "rb") as f:
                self.client._write_stream(self._p(rpath), f, size, None)
            callback.absolute_update(size)
        else:
            self.client.upload(lpath, remote=remote, key=key, on_progress=_progress(callback))
        self._forget(rpath)

    def put_file(self, lpath: str, rpath: str, callback: Callback = DEFAULT_CALLBACK, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            return  # folders are implied by the files in them
        if mode == "create" and self.exists(rpath):
            raise FileExistsError(rpath)
        self.upload_local(lpath, rpath, callback)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        if mode == "create" and self.exists(path):
            raise FileExistsError(path)
        self.client._write_stream(self._p(path), bytes(value), len(value), None)
        self._forget(path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        if self.isdir(path1):
            return
        remote, key = self._key(path1)
        dst_remote, dst_key = self._key(path2)
        params = {"profile": self.client.profile, "remote": remote, "key": key, "dst_key": dst_key,
                  "dst_remote": dst_remote}
        self.client._start_job("transfer.copy", params, on_progress=None, wait=True)
        self._forget(path2)

    def rm_file(self, path: str) -> None:
        self.rm(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files (with ``recursive``, everything under a folder); folders go with their files."""
        paths = path if isinstance(path, list) else [path]
        by_remote: dict[str, list[str]] = {}
        for p in self.expand_path(paths, recursive=recursive, maxdepth=maxdepth):
            info = self.info(p)
            if info["type"] != "file":
                continue
            remote, key = self._key(p)
            by_remote.setdefault(remote, []).append(key)
            self._forget(p)
        for remote, keys in by_remote.items():
            for i in range(0, len(keys), 1000):
                self.client._call("object.delete", {"profile": self.client.profile, "remote": remote,
                                                    "key": keys[i:i + 1000]})

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if "x" in mode and self.exists(path):
            raise FileExistsError(path)
        if "a" in mode:
            raise NotImplementedError("appending is not supported: objects are written whole")
        if "r" in mode:
            info = self.info(path)
            if info["type"] != "file":
                raise IsADirectoryError(path)
            return DaemonReadFile(self, info["name"], "rb", block_size or self.block_size,
                                  cache_options=cache_options, size=info["size"],
                                  cache_type=kwargs.get("cache_type", "readahead"))
        return DaemonWriteFile(self, self._strip_protocol(path), "wb", block_size or self.block_size)


class DaemonReadFile(AbstractBufferedFile):
    """Ranged reads through the daemon; fsspec's cache reads ahead (``cache_type``)."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.read_range(self.path, start, max(0, end - start))


class DaemonWriteFile(AbstractBufferedFile):
    """Spooled to a local temporary file, handed to the engine on close: the final name
    shows only complete, verified content; a write that fails or raises stores nothing."""

    _tmp: Any = None

    def _initiate_upload(self) -> None:
        self._tmp = tempfile.NamedTemporaryFile(prefix="pdfs-", suffix=".part", delete=False)

    def _upload_chunk(self, final: bool = False) -> bool:
        self.buffer.seek(0)
        shutil.copyfileobj(self.buffer, self._tmp)
        if final:
            self._tmp.close()
            try:
                self.fs.upload_local(self._tmp.name, self.path)
            finally:
                os.unlink(self._tmp.name)
        return True

    def discard(self) -> None:
        if self._tmp is not None:
            self._tmp.close()
            os.unlink(self._tmp.name)
            self._tmp = None

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if et is None:
            self.close()
            return
        self.closed = True  # nothing reaches the remote from a failed write
        if self._tmp is not None:
            self.discard()


class PipedaemonFileSystem(_DaemonFileSystem):
    """``pipedaemon://REMOTE/key``: the objects of a remote, keys under its root."""

    protocol = ("pipedaemon",)

    def _tops(self) -> list[str]:
        return list(self.client.list_remotes())

    def _files(self, top: str, folder: str, refresh: bool) -> list[dict[str, Any]]:
        try:
            raw = self.client._call("fs.list", {"profile": self.client.profile, "remote": top,
                                                "path": folder, "cached": not refresh})
        except NotFoundError as exc:
            raise FileNotFoundError(f"{top}: {exc}") from exc
        return raw["files"]

    def _target(self, top: str, rel: str) -> tuple[str, str]:
        return top, rel


def __getattr__(name: str) -> Any:
    # pipe:// builds on the classes above: imported when first asked for, so the two modules
    # import each other in one direction only (the fsspec entry point asks for it by name).
    if name == "PipeFileSystem":
        from .fsspec_pipe import PipeFileSystem

        return PipeFileSystem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .fsspec_pipe import PipeFileSystem

__all__ = ["DaemonReadFile", "DaemonWriteFile", "PipeFileSystem", "PipedaemonFileSystem", "client_for"]
