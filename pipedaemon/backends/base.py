"""The contract every storage backend keeps.

The engine (transfer, sync, datastore) owns policy: retries, temporary names,
verification, resume. A backend only talks to its storage. It implements the
required methods, declares what else it can do in ``caps``, and maps its native
errors to the project's own at its edge (see ``error_edge``), so the engine never
sees a botocore, asyncssh or aioftp exception.

Paths given to a backend are POSIX strings. For S3 the first component is the
bucket (``"bucket/key/in/it"``); for SFTP, FTP and local they are server paths,
absolute (``"/srv/data/x"``) or relative to the login folder (``"data/x"``).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import msgspec

from pipedaemon_sdk.errors import DaemonError, StorageError


class TransientError(StorageError):
    """A failure worth retrying (reset, timeout, 5xx, throttling)."""


class Entry(msgspec.Struct, omit_defaults=True):
    """One file (or folder) as a listing or ``stat`` reports it."""

    name: str  # relative to the listed folder in list(); the path asked for in stat()
    size: int = 0
    mtime: float | None = None  # seconds since the epoch, UTC
    etag: str | None = None  # S3 ETag without quotes; None where the storage has none
    is_dir: bool = False


class Capabilities(msgspec.Struct, frozen=True):
    atomic_write: bool = False  # write() publishes whole or not at all (S3 PUT)
    rename: bool = False  # rename(src, dst) on the server
    multipart: bool = False  # mp_create / mp_upload_part / mp_complete / mp_abort / mp_parts
    server_copy: bool = False  # copy(src, dst) without the data passing through us
    set_mtime: bool = False  # set_mtime(path, mtime)
    ranged_read: bool = True  # read(path, offset, length) starts mid-file cheaply
    offset_write: bool = False  # open_writer(): parallel writes at offsets
    buckets: bool = False  # list_buckets / create_bucket / remove_bucket are native
    # Folders are implied by the names under them (S3 prefixes, a shared daemon's keys): mkdir
    # and rmdir do nothing, an empty folder does not show, and a folder goes with its last file.
    implied_folders: bool = False
    checksums: tuple[str, ...] = ()  # what stat()/list() can report: "s3etag", "md5"...


class Hints(msgspec.Struct, frozen=True):
    """What a remote's settings say about moving one file; the engine's Tuning is derived from
    them once per transfer (the engine decides, the backend only does what it is asked)."""

    part_size: int | None = None  # multipart: the part size the remote asks for
    min_part: int = 1  # multipart: the smallest part but the last the storage accepts
    put_threshold: int | None = None  # multipart: files up to this size go as one write()
    max_write: int | None = None  # the largest single write() the storage accepts
    write_concurrency: int = 2  # parts of one one-pass stream in flight at once
    copy_part_size: int | None = None  # server-side multipart copy: part size


class RangeWriter(ABC):
    """A file open for writing at offsets, for parallel chunked uploads."""

    @abstractmethod
    async def write_at(self, offset: int, data: bytes) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class Backend(ABC):
    protocol: ClassVar[str]
    caps: ClassVar[Capabilities]

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        self.options = options
        self.credentials = credentials
        self.max_streams = max_streams

    # -- lifecycle -------------------------------------------------------------
    async def connect(self) -> None:
        """Open connections and prove the credentials work (AuthFailedError if not)."""

    async def close(self) -> None:
        """Release every connection; the backend is not used afterwards."""

    def describe(self) -> str:
        """Endpoint or identity for check_remote; never a secret."""
        return self.protocol

    def hints(self) -> Hints:
        """The remote's transfer settings (part size, cut-offs) for the engine's Tuning."""
        return Hints()

    async def tidy(self) -> int:
        """Clean up what this backend knows it may have left on the storage; how many.
        The janitor calls it on every open backend at each sweep."""
        return 0

    # -- required --------------------------------------------------------------
    @abstractmethod
    def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        """Files under the folder ``path``, names relative to it with ``/``.

        Non-recursive listings also yield immediate sub-folders with ``is_dir``.
        A folder that does not exist lists as empty.
        """

    @abstractmethod
    async def stat(self, path: str) -> Entry:
        """The file at ``path``; NotFoundError if there is none."""

    @abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of ``path`` from ``offset``, ``length`` of them or to the end.

        Pieces are bytes, or bytearrays the caller then owns (never reused by the backend).
        """

    async def finish_upload(self, tmp: str, dst: str, mtime: float | None) -> Entry | None:
        """Optional, for the engine's temporary-name uploads: give ``tmp`` the modification time
        ``mtime`` (when not None; a refusal is no error), rename it to ``dst`` and return
        ``dst``'s entry, as one operation (a local folder: one worker-thread hop instead of
        three). None: not offered, the engine makes the three calls."""
        return None

    async def open_read(self, path: str, offset: int = 0,
                        length: int | None = None) -> tuple[Entry, AsyncIterator[bytes] | None]:
        """The entry of ``path`` and, where one request answers both (S3's GET gives the size
        and ETag), its bytes from ``offset`` as ``read`` gives them; ``None`` for the bytes: the
        caller reads them with ``read``. The default asks ``stat`` alone."""
        return await self.stat(path), None

    @abstractmethod
    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        """Store the whole stream at ``path``, making parent folders; return its entry.
        ``extra``: storage-specific arguments of this one write (S3: metadata, tags), as for
        ``mp_create``; backends without any ignore it.

        One request where the storage has requests (S3: exactly one PUT, refused above
        ``hints().max_write``): the engine, not the backend, decides when to use multipart."""

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Remove the file ``path``; NotFoundError if there is none."""

    @abstractmethod
    async def mkdir(self, path: str) -> None:
        """Make the folder ``path`` and its parents; fine if it exists."""

    @abstractmethod
    async def rmdir(self, path: str) -> None:
        """Remove the empty folder ``path`` (for S3: the empty bucket)."""

    # -- optional, declared in caps -------------------------------------------
    async def rename(self, src: str, dst: str) -> None:
        raise NotImplementedError

    async def copy(self, src: str, dst: str) -> Entry:
        raise NotImplementedError

    async def set_mtime(self, path: str, mtime: float) -> None:
        raise NotImplementedError

    async def open_writer(self, path: str, size: int) -> RangeWriter:
        raise NotImplementedError

    async def stored_part_size(self, path: str) -> int | None:
        """The size of part 1 of a multipart object (to recompute its ETag); None when unknown."""
        return None

    async def abort_stale_uploads(self, path: str) -> int:
        """Abort multipart uploads of ``path`` not in flight here (a killed daemon's); how many."""
        return 0

    async def mp_create(self, path: str, extra: dict[str, Any] | None = None) -> str:
        """Start a multipart upload; ``extra``: storage-specific arguments (e.g. metadata)."""
        raise NotImplementedError

    async def mp_upload_part(self, path: str, upload_id: str, part_number: int, data: bytes,
                             md5: bytes | None = None) -> str:
        """Upload one part (numbered from 1); return its ETag without quotes. With ``md5`` (the
        part's digest) the storage refuses a body that arrived different (ChecksumMismatch)."""
        raise NotImplementedError

    async def mp_parts(self, path: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """Parts already uploaded: part number -> (etag, size)."""
        raise NotImplementedError

    async def mp_complete(self, path: str, upload_id: str, parts: list[tuple[int, str]],
                          size: int | None = None) -> Entry:
        """Complete; ``size`` (the bytes sent) lets the entry describe our object even when
        another writer replaced the key in between."""
        raise NotImplementedError

    async def mp_abort(self, path: str, upload_id: str) -> None:
        raise NotImplementedError

    async def list_buckets(self) -> list[str]:
        raise NotImplementedError

    async def create_bucket(self, name: str) -> None:
        raise NotImplementedError


ErrorMapper = Callable[[BaseException], DaemonError | None]


def missing_root(root: str) -> DaemonError:
    """A remote's root that is not there: writes never make it (an unmounted share, a typo)."""
    from pipedaemon_sdk.errors import NotFoundError

    return NotFoundError(f"the remote's folder {root} does not exist (not mounted?); create it, "
                         "or set the option create_root=true to have it made",
                         {"path": root, "field": "remotepath"})


@contextlib.contextmanager
def error_edge(mapper: ErrorMapper, path: str = "") -> Iterator[None]:
    """Turn a backend's native exceptions into the project's at the backend's edge.

    ``mapper`` returns the DaemonError for a native exception (or None to let it
    through). Our own errors pass unchanged; ``path`` is added to ``error.data``.
    """
    try:
        yield
    except (DaemonError, SourceError):
        raise
    except Exception as exc:
        mapped = mapper(exc)
        if mapped is None:
            raise
        if path and "path" not in mapped.data:
            mapped.data["path"] = path
        raise mapped from exc


class SourceError(Exception):
    """A failure of the caller's own stream given to write() (a local file that shrank, a client
    socket that closed), carried past the backend's error edge unmapped: it is never the
    storage's fault. ``source_errors()`` gives the caller its own error back."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def source(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The one source pump: the caller's stream, its failures raised as SourceError."""
    stream = aiter(chunks)
    while True:
        try:
            chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except Exception as exc:  # tagged so no error edge blames the storage
            raise SourceError(exc) from exc
        yield chunk


@contextlib.contextmanager
def source_errors() -> Iterator[None]:
    """Around a whole write(): the caller's stream's failure comes back as it was raised."""
    try:
        yield
    except SourceError as exc:
        raise exc.error from None


BACKENDS: dict[str, str] = {
    "local": "pipedaemon.backends.local:LocalBackend",
    "s3": "pipedaemon.backends.s3:S3Backend",
    "sftp": "pipedaemon.backends.sftp_transport:SFTP",  # asyncssh or OpenSSH, per remote
    "ftp": "pipedaemon.backends.ftp:FTPBackend",
    "pipedaemon": "pipedaemon.backends.pipedaemon:PipedaemonBackend",
}


def backend_class(protocol: str) -> type[Backend]:
    """Import the backend for ``protocol`` only when it is used."""
    import importlib

    module, _, name = BACKENDS[protocol].partition(":")
    return getattr(importlib.import_module(module), name)
