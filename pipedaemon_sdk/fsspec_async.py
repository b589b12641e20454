"""``AsyncPipedaemonFileSystem``: ``pipedaemon://`` as an fsspec AsyncFileSystem over AsyncPipeClient.

For asyncio code (``asynchronous=True``: ``await fs._cat_file(...)``, ``await fs._ls(...)``)
and for fsspec's concurrent bulk operations (``cat``/``get``/``put`` of many paths run
at once on fsspec's IO loop). The protocol fsspec registers stays the blocking
``PipedaemonFileSystem``; create this class directly. Paths, listings and semantics
are the same (pipedaemon_sdk/fsspec.py).
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.asyn import AsyncFileSystem
from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .client import AsyncPipeClient
from .fsspec import STREAM_MAX, DaemonReadFile, DaemonWriteFile, _progress, children, dir_info, info_in
from .protocol.errors import NotFoundError


class AsyncPipedaemonFileSystem(AsyncFileSystem):
    protocol = ("pipedaemon",)
    root_marker = ""
    cachable = False  # a client belongs to the event loop it was first used on

    def __init__(self, socket_path: str | None = None, profile: str | None = None,
                 block_size: int = 4 << 20, stream_max: int = STREAM_MAX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_max = stream_max
        self.client = AsyncPipeClient(socket_path=socket_path, profile=profile, request_timeout_s=120.0)
        self.block_size = block_size

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        return (path[len("pipedaemon://"):] if path.startswith("pipedaemon://") else path).strip("/")

    def _split(self, path: str) -> tuple[str, str]:
        top, _, rel = self._strip_protocol(path).partition("/")
        if not rel.strip("/"):
            raise IsADirectoryError(path)
        return top, rel.strip("/")

    def _p(self, path: str, **kw: Any) -> dict[str, Any]:
        remote, key = self._split(path)
        return {"profile": self.client.profile, "remote": remote, "key": key, **kw}

    async def _files(self, top: str, folder: str, refresh: bool = False) -> list[dict[str, Any]]:
        try:
            raw = await self.client._call("fs.list", {"profile": self.client.profile, "remote": top,
                                                      "path": folder, "cached": not refresh})
        except NotFoundError as exc:
            raise FileNotFoundError(f"{top}: {exc}") from exc
        return raw["files"]

    async def _ls(self, path: str, detail: bool = True, refresh: bool = False, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        if not path:
            out = [dir_info(n) for n in await self.client.list_remotes()]
        else:
            top, _, rel = path.partition("/")
            files = [{**r, "name": f"{path}/{r['name']}", "type": "file"}
                     for r in await self._files(top, rel, refresh)]
            if files:
                out = children(path, files)
            else:
                info = await self._info(path)
                out = [info] if info["type"] == "file" else []
        return out if detail else [i["name"] for i in out]

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        top, _, rel = path.partition("/")
        if not rel:
            if top and top not in await self.client.list_remotes():
                raise FileNotFoundError(path)
            return dir_info(path)
        return info_in(path, await self._files(top, rel.rpartition("/")[0]))

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        **kwargs: Any) -> bytes:
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = (await self._info(path))["size"]
            start = size + start if start is not None and start < 0 else start
            end = size + end if end is not None and end < 0 else end
        begin = max(start or 0, 0)
        length = None if end is None else max(0, end - begin)
        try:
            stream = await self.client._open_read(self._p(path, offset=begin, length=length))
        except NotFoundError as exc:
            raise FileNotFoundError(path) from exc
        async with stream:
            return await stream.read()

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        if mode == "create" and await self._exists(path):
            raise FileExistsError(path)
        await self.client._write_stream(self._p(path), bytes(value), len(value), None)

    async def _put_file(self, lpath: str, rpath: str, callback: Callback = DEFAULT_CALLBACK,
                        mode: str = "overwrite", **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            return
        if mode == "create" and await self._exists(rpath):
            raise FileExistsError(rpath)
        size = os.path.getsize(lpath)
        if size <= self.stream_max:
            with open(lpath, "rb") as f:
                await self.client._write_stream(self._p(rpath), f, size, None)
            callback.set_size(size)
            callback.absolute_update(size)
            return
        remote, key = self._split(rpath)
        await self.client.upload(lpath, remote=remote, key=key, on_progress=_progress(callback))

    async def _get_file(self, rpath: str, lpath: str, callback: Callback = DEFAULT_CALLBACK,
                        **kwargs: Any) -> None:
        if await self._isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
        remote, key = self._split(rpath)
        await self.client.download(remote=remote, key=key, dest=lpath, on_progress=_progress(callback))

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        if await self._isdir(path1):
            return
        remote, key = self._split(path1)
        dst_remote, dst_key = self._split(path2)
        await self.client._start_job("transfer.copy", {"profile": self.client.profile, "remote": remote,
                                                       "key": key, "dst_key": dst_key,
                                                       "dst_remote": dst_remote}, on_progress=None, wait=True)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        if (await self._info(path))["type"] == "file":
            await self.client._call("object.delete", self._p(path))

    async def _rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None,
                  **kwargs: Any) -> None:
        for p in await self._expand_path(path, recursive=recursive, maxdepth=maxdepth):
            await self._rm_file(p)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass  # folders are implied by the names in them

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass

    # -- files (blocking, on fsspec's loop) ---------------------------------------------
    def read_range(self, path: str, start: int, length: int) -> bytes:
        return self.cat_file(path, start=start, end=start + length)

    def upload_local(self, lpath: str, rpath: str, callback: Callback = DEFAULT_CALLBACK) -> None:
        self.put_file(lpath, rpath, callback=callback)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if "x" in mode and self.exists(path):
            raise FileExistsError(path)
        if "r" in mode:
            info = self.info(path)
            return DaemonReadFile(self, info["name"], "rb", block_size or self.block_size,
                                  cache_options=cache_options, size=info["size"])
        return DaemonWriteFile(self, self._strip_protocol(path), "wb", block_size or self.block_size)
