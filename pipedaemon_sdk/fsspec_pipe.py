"""``pipe://PIPE/name``: a pipe's files, read from the local copy when it is in sync.

A read asks the daemon whether the file would be pulled (``pull_preview``): when
not, the local copy is opened directly; when it would, the bytes come from the
remote through the daemon, or with ``cache=True`` (a storage option, or an
argument to ``open``) the file is pulled first and the local copy opened, so the
pipe's sync state knows it. Writing stores the file in the pipe's local folder
(complete under its final name only) and pushes it.
"""

from __future__ import annotations

import glob
import os
import uuid
from typing import Any

from .fsspec import DaemonWriteFile, _DaemonFileSystem
from .protocol.errors import NotFoundError
from .protocol.pipefiles import TMP_MARK


class PipeFileSystem(_DaemonFileSystem):
    protocol = ("pipe",)

    def __init__(self, cache: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache = cache
        self._infos: dict[str, dict[str, Any]] = {}

    def _pipe_info(self, name: str) -> dict[str, Any]:
        if name not in self._infos:
            try:
                self._infos[name] = self.client.get_pipe(name)
            except NotFoundError as exc:
                raise FileNotFoundError(f"no pipe {name!r}") from exc
        return self._infos[name]

    def _pipe(self, name: str) -> Any:
        return self.client.pipe(name)

    def _tops(self) -> list[str]:
        return list(self.client.list_pipes())

    def _files(self, top: str, folder: str, refresh: bool) -> list[dict[str, Any]]:
        self._pipe_info(top)
        rows = self._pipe(top).scan_remote(attributes=True, cached=not refresh)
        prefix = f"{folder}/" if folder else ""
        return [{**r, "name": r["filename"][len(prefix):]} for r in rows if r["filename"].startswith(prefix)]

    def _target(self, top: str, rel: str) -> tuple[str, str]:
        info = self._pipe_info(top)
        if not info.get("remote"):
            raise NotImplementedError(f"pipe {top} is self-hosted: open it on the host's remote")
        folder = (info.get("dir") or "").strip("/")
        return info["remote"], f"{folder}/{rel}" if folder else rel

    def local_path(self, path: str) -> str:
        top, rel = self._split(path)
        return os.path.join(self._pipe_info(top)["dirpath"], *rel.split("/"))

    def in_sync(self, path: str) -> bool:
        """True when the local copy exists and a pull would not change it."""
        top, rel = self._split(path)
        if not os.path.isfile(self.local_path(path)):
            return False
        # files=[...] would force the file into the plan: filter by an exact pattern instead
        pattern = None if "|" in rel else glob.escape(rel)
        preview = self._pipe(top).pull_preview(include=pattern)
        return not any(r["filename"] == rel for r in [*preview, *preview.conflicts])

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, cache: bool | None = None, **kwargs: Any) -> Any:
        if "r" not in mode:
            if "x" in mode and self.exists(path):
                raise FileExistsError(path)
            return PipeWriteFile(self, self._strip_protocol(path), "wb", block_size or self.block_size)
        if self.in_sync(path):
            return open(self.local_path(path), "rb")
        if self.cache if cache is None else cache:
            top, rel = self._split(path)
            self._pipe(top).pull(files=[rel])
            return open(self.local_path(path), "rb")
        return super()._open(path, mode, block_size, autocommit, cache_options, **kwargs)

    def push_local(self, path: str) -> None:
        top, rel = self._split(path)
        self._pipe(top).push(files=[rel])
        self._forget(path)


class PipeWriteFile(DaemonWriteFile):
    """Written beside its final name in the pipe's folder, renamed when complete, then pushed."""

    def _initiate_upload(self) -> None:
        final = self.fs.local_path(self.path)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        folder, base = os.path.split(final)
        tmp = os.path.join(folder, f".{base}{TMP_MARK}-{uuid.uuid4().hex[:8]}")
        self._tmp = open(tmp, "wb")  # closed in _upload_chunk or discard

    def _upload_chunk(self, final: bool = False) -> bool:
        self.buffer.seek(0)
        self._tmp.write(self.buffer.read())
        if final:
            self._tmp.close()
            os.replace(self._tmp.name, self.fs.local_path(self.path))
            self._tmp = None
            self.fs.push_local(self.path)
        return True
