"""The contract every storage backend keeps.

The engine (transfer, sync, datastore) owns policy: retries, temporary names,
verification, resume. A backend only talks to its storage. It implements the
required methods of ``Backend``, states how they behave in ``traits``, derives from
the optional capabilities it has (``Rename``, ``Multipart``...: small ABCs below, each
found once in ``backend.features``), and maps its native errors to the project's own
at its edge (one mapper per backend, given to ``error_edge``), so the engine never
sees a botocore, asyncssh or aioftp exception.

Paths given to a backend are POSIX strings. For S3 the first component is the
bucket (``"bucket/key/in/it"``); for SFTP, FTP and local they are server paths,
absolute (``"/srv/data/x"``) or relative to the login folder (``"data/x"``).
"""

from __future__ import annotations

import contextlib
import datetime
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgspec

from pipedaemon_sdk.protocol.errors import DaemonError, StorageError


class TransientError(StorageError):
    """A failure worth retrying (reset, timeout, 5xx, throttling)."""


class Entry(msgspec.Struct, omit_defaults=True):
    """One file (or folder) as a listing or ``stat`` reports it."""

    name: str  # relative to the listed folder in list(); the path asked for in stat()
    size: int = 0
    mtime: float | None = None  # seconds since the epoch, UTC
    etag: str | None = None  # S3 ETag without quotes; None where the storage has none
    is_dir: bool = False


class Traits(msgspec.Struct, frozen=True):
    """How a backend's required methods behave (facts, not methods): declared by its class."""

    atomic_write: bool = False  # write() publishes whole or not at all (S3 PUT)
    ranged_read: bool = True  # read(path, offset, length) starts mid-file cheaply: parallel ranges
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
    """What every backend does. Anything more is an optional capability (below): a small ABC
    the backend's class also derives from, found once in ``features`` when it is built."""

    protocol: ClassVar[str]
    traits: ClassVar[Traits]
    features: Features  # what this backend can do beyond the required methods

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        self.options = options
        self.credentials = credentials
        self.max_streams = max_streams
        self.features = Features.of(self)

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
        ``extra``: storage-specific arguments of this one write (NativeMetadata.upload_args),
        also given to Multipart.mp_create; backends without any ignore it.

        One request where the storage has requests (S3: exactly one PUT, refused above
        ``hints().max_write``): the engine, not the backend, decides when to use parts."""

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Remove the file ``path``; NotFoundError if there is none."""

    @abstractmethod
    async def mkdir(self, path: str) -> None:
        """Make the folder ``path`` and its parents; fine if it exists."""

    @abstractmethod
    async def rmdir(self, path: str) -> None:
        """Remove the empty folder ``path`` (where the storage's top level is buckets: the empty
        bucket)."""


# -- optional capabilities ---------------------------------------------------------------------
# A backend declares one by deriving from it (``class S3Backend(Backend, Multipart, ...)``);
# an ABC's abstract methods make a declared capability impossible to leave unimplemented.
class Rename(ABC):
    @abstractmethod
    async def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` on the server, replacing ``dst``, making its parent folders."""


class ServerCopy(ABC):
    @abstractmethod
    async def copy(self, src: str, dst: str) -> Entry:
        """Copy ``src`` to ``dst`` without the bytes passing through the daemon."""

    def copies_from(self, other: Backend) -> bool:
        """``copy`` also takes the paths of ``other`` (another remote's backend): one endpoint
        (the caller still checks that the credentials match). The default: never."""
        return False


class SetMtime(ABC):
    @abstractmethod
    async def set_mtime(self, path: str, mtime: float) -> None:
        """Set the modified time of the file ``path`` (seconds since the epoch, UTC)."""


class FinishUpload(ABC):
    """The last steps of the engine's temporary-name uploads as one operation (a local folder:
    one worker-thread hop instead of three, which is what many small files cost)."""

    @abstractmethod
    async def finish_upload(self, tmp: str, dst: str, mtime: float | None) -> Entry:
        """Give ``tmp`` the modification time ``mtime`` (when not None; a refusal is no error),
        rename it to ``dst`` and return ``dst``'s entry."""


class SmallPut(NamedTuple):
    """One file of ``SmallFiles.put_small``: its bytes, the temporary name they are written
    under, the final name, and the modification time to give it (None: leave it)."""

    tmp: str
    dst: str
    data: bytes
    mtime: float | None


class SmallFiles(ABC):
    """Batches of small files (each whole in memory) read, or written and published, in one
    operation: for a local folder one worker-thread hop per batch instead of two or three per
    file, which is what many small files cost. The engine chooses the batches and keeps the
    policy (which files, verification, retries: a file whose result is an error goes the
    one-file way again); one file failing never fails the others."""

    @abstractmethod
    async def read_small(self, items: list[tuple[str, int]]) -> list[bytes | DaemonError]:
        """For each ``(path, size)``: the file's first ``size`` bytes (fewer when it is shorter;
        one byte when ``size`` is 0, so a file that grew shows), or the error reading it."""

    @abstractmethod
    async def put_small(self, items: list[SmallPut]) -> list[Entry | DaemonError]:
        """For each item: ``data`` written under ``tmp`` (parent folders made), its stored size
        checked, ``mtime`` set, then renamed to ``dst`` (replacing it); ``dst``'s entry. A file
        that fails gets its error and leaves nothing under either name: never a half-written
        file under ``dst``."""


class RangeWrites(ABC):
    @abstractmethod
    async def open_writer(self, path: str, size: int) -> RangeWriter:
        """``path`` open for parallel writes at offsets, ``size`` bytes long (never truncating
        below it: a resumed transfer keeps the chunks that landed)."""


class Multipart(ABC):
    """Objects stored as numbered parts uploaded separately, then completed (S3)."""

    @abstractmethod
    async def mp_create(self, path: str, extra: dict[str, Any] | None = None) -> str:
        """Start a multipart upload; ``extra``: storage-specific arguments (e.g. metadata)."""

    @abstractmethod
    async def mp_upload_part(self, path: str, upload_id: str, part_number: int, data: bytes,
                             md5: bytes | None = None) -> str:
        """Upload one part (numbered from 1); return its ETag without quotes. With ``md5`` (the
        part's digest) the storage refuses a body that arrived different (ChecksumMismatch)."""

    @abstractmethod
    async def mp_parts(self, path: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """Parts already uploaded: part number -> (etag, size)."""

    @abstractmethod
    async def mp_complete(self, path: str, upload_id: str, parts: list[tuple[int, str]],
                          size: int | None = None) -> Entry:
        """Complete; ``size`` (the bytes sent) lets the entry describe our object even when
        another writer replaced the key in between."""

    @abstractmethod
    async def mp_abort(self, path: str, upload_id: str) -> None:
        """Abort the upload; one already gone is fine."""

    @abstractmethod
    async def stored_part_size(self, path: str) -> int | None:
        """The size of part 1 of a multipart object (to recompute its ETag); None when unknown."""

    @abstractmethod
    async def abort_stale_uploads(self, path: str) -> int:
        """Abort multipart uploads of ``path`` not in flight here (a killed daemon's); how many."""


class Buckets(ABC):
    """The storage's top level is buckets (the first component of a path), made and listed."""

    @abstractmethod
    async def list_buckets(self) -> list[str]: ...

    @abstractmethod
    async def create_bucket(self, name: str) -> None: ...


class HostKeys(ABC):
    """The server is trusted by its host key (SSH)."""

    @property
    @abstractmethod
    def seen_host_key(self) -> str | None:
        """The key accepted on first use (``known_hosts="accept-new"`` without a pin yet), for
        the registry to pin; None otherwise."""


class Identity(ABC):
    @abstractmethod
    async def identity(self) -> tuple[str | None, datetime.datetime | None]:
        """Who the storage sees this backend as (the login an ssh config resolved, an access
        key id) and when that identity expires (temporary credentials), where known."""


class Native(msgspec.Struct):
    """What the storage holds beside an object: user metadata (names without prefix), tags, and
    the object."""

    meta: dict[str, str]
    tags: dict[str, str]
    entry: Entry


class NativeMetadata(ABC):
    """Metadata the storage itself holds beside an object (S3's ``x-amz-meta-*`` and tags):
    what the daemon writes there other tools see. Storages without keep theirs in the daemon."""

    @abstractmethod
    async def read(self, path: str) -> Native:
        """The object's metadata and tags; NotFoundError if there is no object."""

    @abstractmethod
    async def write(
        self, path: str, meta: dict[str, str], tags: dict[str, str], if_etag: str | None
    ) -> Entry:
        """Replace the object's metadata and tags, its bytes untouched; ConflictError when the
        object is no longer ``if_etag``. The entry of the object afterwards."""

    @abstractmethod
    def upload_args(self, meta: dict[str, str], tags: dict[str, str]) -> dict[str, Any]:
        """The backend's ``extra`` arguments of one upload's write (or mp_create) that carry the
        metadata and tags: passed with that upload alone, so two uploads of one path at the
        same moment never exchange their metadata."""


class HasNativeMetadata(ABC):
    """The backend's storage holds metadata; its NativeMetadata (a companion object, so the
    backend's own file keeps only the ``extra`` hook of one write)."""

    @abstractmethod
    def native_metadata(self) -> NativeMetadata: ...


class Unsupported(NotImplementedError):
    """A capability asked of a backend that does not have it."""


C = TypeVar("C")


@dataclass(frozen=True)
class Features:
    """What one backend can do: its class's traits, and each optional capability (the object to
    call, typed as the capability) or None. Found once, when the backend is built; look a
    capability up once per transfer, not per part."""

    protocol: str
    atomic_write: bool = False
    ranged_read: bool = True
    implied_folders: bool = False
    checksums: tuple[str, ...] = ()
    rename: Rename | None = None
    server_copy: ServerCopy | None = None
    set_mtime: SetMtime | None = None
    finish_upload: FinishUpload | None = None
    small_files: SmallFiles | None = None
    range_writes: RangeWrites | None = None
    multipart: Multipart | None = None
    buckets: Buckets | None = None
    host_keys: HostKeys | None = None
    identity: Identity | None = None
    native_metadata: NativeMetadata | None = None

    @classmethod
    def of(cls, backend: Backend, *, lacking: tuple[type, ...] = ()) -> Features:
        """``backend``'s features; ``lacking``: capabilities its class has that this server
        does not offer (an FTP server without MFMT)."""

        def found(kind: type[C]) -> C | None:
            return backend if isinstance(backend, kind) and kind not in lacking else None  # type: ignore[return-value]

        meta = found(HasNativeMetadata)
        t = backend.traits
        return cls(protocol=backend.protocol, atomic_write=t.atomic_write, ranged_read=t.ranged_read,
                   implied_folders=t.implied_folders, checksums=t.checksums, rename=found(Rename),
                   server_copy=found(ServerCopy), set_mtime=found(SetMtime),
                   finish_upload=found(FinishUpload), small_files=found(SmallFiles),
                   range_writes=found(RangeWrites),
                   multipart=found(Multipart), buckets=found(Buckets), host_keys=found(HostKeys),
                   identity=found(Identity), native_metadata=meta.native_metadata() if meta else None)

    def need(self, kind: type[C]) -> C:
        """The capability ``kind`` (one of CAPABILITIES); Unsupported when the backend lacks it."""
        found = getattr(self, CAPABILITIES[kind])
        if found is None:
            raise Unsupported(f"the {self.protocol} backend has no {kind.__name__}")
        return found  # type: ignore[no-any-return]

    def names(self) -> frozenset[str]:
        """The capabilities this backend has, by their field names."""
        return frozenset(name for name in CAPABILITIES.values() if getattr(self, name) is not None)


# Each optional capability and its field in Features.
CAPABILITIES: dict[type, str] = {
    Rename: "rename", ServerCopy: "server_copy", SetMtime: "set_mtime", FinishUpload: "finish_upload",
    SmallFiles: "small_files",
    RangeWrites: "range_writes",
    Multipart: "multipart", Buckets: "buckets", HostKeys: "host_keys", Identity: "identity",
    NativeMetadata: "native_metadata",
}


ErrorMapper = Callable[[BaseException], DaemonError | None]


def missing_root(root: str) -> DaemonError:
    """A remote's root that is not there: writes never make it (an unmounted share, a typo)."""
    from pipedaemon_sdk.protocol.errors import NotFoundError

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
