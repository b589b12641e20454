"""The bucket connector: a remote's buckets and their objects.

``Datastore``/``Bucket`` work for both clients: with ``AsyncPipeClient`` every
method returns an awaitable, as the client's own methods do.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import msgspec

from .protocol.wire import ObjectInfo, UploadResult

if TYPE_CHECKING:
    from ._async.api import AsyncApi
    from ._async.streams import AsyncObjectStream
    from ._common import ProgressCallback
    from ._sync.api import Api
    from ._sync.streams import ObjectStream


class Datastore:
    """The buckets of one remote (S3 buckets, or folders under the remote's root)."""

    def __init__(self, client: Api | AsyncApi, remote: str) -> None:
        self._client = client
        self.remote = remote

    def __repr__(self) -> str:
        return f"Datastore({self.remote!r})"

    def _p(self, **kw: Any) -> dict[str, Any]:
        return {"profile": self._client.profile, "remote": self.remote, **kw}

    def list(self, return_type: str = "array") -> Any:
        """Bucket names: a list, or one comma-separated string with return_type='str'."""
        return self._client._call("bucket.list", self._p(),
                                  lambda names: ",".join(names) if return_type == "str" else names)

    def get_buckets(self) -> Any:
        return self._client._call("bucket.list", self._p(), lambda names: [self.get_bucket(n) for n in names])

    def get_bucket(self, name: str) -> Bucket:
        return Bucket(self, name)

    def create_bucket(self, name: str) -> Any:
        return self._client._call("bucket.create", self._p(bucket=name))

    def remove_bucket(self, name: str) -> Any:
        """Remove an empty bucket; one with objects is refused and left untouched."""
        return self._client._call("bucket.remove", self._p(bucket=name))

    def bucket_exists(self, name: str) -> Any:
        return self._client._call("bucket.exists", self._p(bucket=name))


def _objects(raw: Any) -> list[ObjectInfo] | list[str]:
    if raw and isinstance(raw[0], str):
        return raw
    return msgspec.convert(raw, list[ObjectInfo])


class Bucket:
    def __init__(self, datastore: Datastore, name: str) -> None:
        self.datastore = datastore
        self._client = datastore._client
        self.name = name

    def __repr__(self) -> str:
        return f"Bucket({self.datastore.remote!r}, {self.name!r})"

    def _p(self, **kw: Any) -> dict[str, Any]:
        return self.datastore._p(bucket=self.name, **kw)

    def list(self, prefix: str = "", metadata: bool = True, recursive: bool = True) -> Any:
        """Objects (ObjectInfo with size, modified_at, etag), or names with metadata=False."""
        return self._client._call("object.list", self._p(prefix=prefix, metadata=metadata,
                                                         recursive=recursive), _objects)

    def list_filename(self, return_type: str = "array", contains: str = "", recursive: bool = True) -> Any:
        return self._client._call(
            "object.list", self._p(metadata=False, recursive=recursive, contains=contains),
            lambda names: ",".join(names) if return_type == "str" else names)

    def stat(self, path: str | list[str]) -> Any:
        return self._client._call("object.stat", self._p(key=path),
                                  lambda raw: msgspec.convert(raw, ObjectInfo if isinstance(path, str)
                                                              else list[ObjectInfo]))

    def delete(self, path: str | list[str]) -> Any:
        """Delete one object or a list; if any is missing, nothing is deleted (NotFoundError)."""
        return self._client._call("object.delete", self._p(key=path))

    def get(self, file_name: str, offset: int = 0,
            length: int | None = None) -> ObjectStream | Awaitable[AsyncObjectStream]:
        """A readable stream of the object: ``.read()``, ``.stream(chunk_size)`` (an awaitable of an
        AsyncObjectStream with the asyncio client)."""
        return self._client._open_read(self._p(key=file_name, offset=offset, length=length))

    def put(self, object_name: str, data: Any, length: int) -> Any:
        """Store ``length`` bytes from ``data`` (bytes or a binary file); the object's etag."""
        return self._client._write_stream(self._p(key=object_name), data, length,
                                          lambda raw: raw.get("etag"))

    def fget(self, object_name: str, file_path: str | os.PathLike[str],
             on_progress: ProgressCallback | None = None, wait: bool = True) -> Any:
        """Download to ``file_path`` (whole and verified); the object's stat."""
        params = self._p(key=object_name, dest=os.path.abspath(os.fspath(file_path)))
        return self._client._start_job("transfer.download", params, on_progress=on_progress, wait=wait,
                                       convert=lambda r: msgspec.convert(r["stat"], ObjectInfo))

    def fput(self, object_name: str, file_path: str | os.PathLike[str],
             on_progress: ProgressCallback | None = None, wait: bool = True) -> Any:
        """Upload a local file; the object's etag."""
        params = self._p(key=object_name, path=os.path.abspath(os.fspath(file_path)))
        return self._client._start_job("transfer.upload", params, on_progress=on_progress, wait=wait,
                                       convert=lambda r: msgspec.convert(r, UploadResult).etag)

    def put_request(self, url: str, path: str, data: str | None = None, method: str = "GET",
                    headers: dict[str, str] | None = None, wait: bool = True) -> Any:
        """The daemon fetches ``url`` and stores the body at ``path`` in this bucket."""
        params = self._p(key=path, url=url, method=method, headers=headers or {}, data=data)
        return self._client._start_job("object.put_request", params, on_progress=None, wait=wait,
                                       convert=lambda r: msgspec.convert(r, ObjectInfo))

    def fcopy_to(self, new_bucket: str, object_name: str, object_source: str, wait: bool = True) -> Any:
        """Copy ``object_source`` of this bucket to ``new_bucket/object_name`` (server-side if possible)."""
        params = self._p(key=object_source, dst_key=object_name, dst_bucket=new_bucket)
        return self._client._start_job("transfer.copy", params, on_progress=None, wait=wait,
                                       convert=lambda r: msgspec.convert(r, ObjectInfo))
