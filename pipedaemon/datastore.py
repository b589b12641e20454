"""Buckets and objects on a remote: the bucket-connector API.

For S3 a bucket is an S3 bucket of the endpoint; for SFTP, FTP and local it is a
folder directly under the remote's root. Without a bucket, keys are relative to
the remote's root (DESIGN.md's addressing rule). Object bytes never travel in
JSON: ``object.read``/``object.write`` hand the connection over to a raw stream.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from pipedaemon_sdk.protocol import errors as E

from . import safepath, transfer
from .backends.base import Backend, Entry
from .remotes import Mode, Remote
from .retry import Attempts, retry
from .rpc import Context, Methods, ProfileParams, RawReply

log = logging.getLogger("pipedaemon.datastore")
# Take whatever the connection has buffered (up to this): reading small pieces off the
# front of a large buffer would copy the rest of it each time.
STREAM_PIECE = 16 << 20


def entry_dict(e: Entry, name: str | None = None) -> dict[str, Any]:
    return {"name": name if name is not None else e.name, "size": e.size, "modified_at": e.mtime,
            "etag": e.etag, "is_dir": e.is_dir}


def bucket_name(name: str) -> str:
    clean = safepath.clean_key(name)
    if "/" in clean.rstrip("/"):
        raise E.InvalidParamsError(f"a bucket name is one folder name, not a path: {name!r}",
                                   {"field": "bucket"})
    return clean.rstrip("/")


def base_path(remote: Remote, backend: Backend, bucket: str | None) -> str:
    """The backend folder that keys are relative to."""
    if bucket is None:
        return remote.root
    name = bucket_name(bucket)
    return f"{name}/" if backend.features.buckets is not None else f"{remote.root}{name}/"


class Target(ProfileParams):
    remote: str
    bucket: str | None = None


class KeyTarget(Target):
    key: str


class Where(ProfileParams):
    """The object methods' target: a remote (and bucket), or a pipe, keys relative to its folder
    (how a shared daemon's pipe is read, docs/sharing.md)."""

    remote: str = ""
    bucket: str | None = None
    pipe: str | None = None


class KeyWhere(Where):
    key: str


async def where(ctx: Context, p: Target | Where, mode: Mode = "read") -> tuple[Backend, str, tuple[str, str]]:
    """The backend, the folder keys are relative to, and the (profile, remote) it belongs to."""
    if isinstance(p, Where) and p.pipe:
        if p.remote or p.bucket is not None:
            raise E.InvalidParamsError("name a pipe, or a remote (and bucket), not both", {"field": "pipe"})
        rp = await ctx.daemon.pipes.store.resolve(p.profile, p.pipe)
        backend, _ = await ctx.daemon.remotes.backend(*rp.remote_key, mode)
        return backend, rp.folder, rp.remote_key
    if not p.remote:
        raise E.InvalidParamsError("name a remote (or a pipe)", {"field": "remote"})
    backend, remote = await ctx.daemon.remotes.backend(p.profile, p.remote, mode)
    return backend, base_path(remote, backend, p.bucket), (p.profile, p.remote)


async def open_target(ctx: Context, p: Target | Where, mode: Mode = "read") -> tuple[Backend, str]:
    backend, base, _ = await where(ctx, p, mode)
    return backend, base


def object_key(key: str, field: str = "key") -> str:
    """A key to write an object at: safe, and naming a file (a trailing '/' names a folder)."""
    clean = safepath.clean_key(key)
    if clean.endswith("/"):
        raise E.InvalidParamsError(f"{key!r} ends in '/': it names a folder, not an object",
                                   {"field": field, "key": key})
    return clean


async def resolve(ctx: Context, p: KeyTarget | KeyWhere, mode: Mode = "read") -> tuple[Backend, str]:
    if mode == "write":
        object_key(p.key)
    backend, base = await open_target(ctx, p, mode)
    return backend, safepath.join(base, p.key)


# -- buckets ---------------------------------------------------------------------------
class RemoteOnly(ProfileParams):
    remote: str


class BucketParams(ProfileParams):
    remote: str
    bucket: str


METHODS = Methods()


@METHODS.rpc("bucket.list", RemoteOnly)
async def bucket_list(ctx: Context, p: RemoteOnly) -> list[str]:
    """Names of the buckets (S3) or of the folders under the remote's root."""
    backend, remote = await ctx.daemon.remotes.backend(p.profile, p.remote)
    if (buckets := backend.features.buckets) is not None:
        return sorted(await retry(buckets.list_buckets, what="list buckets"))
    return sorted([e.name.rstrip("/") async for e in backend.list(remote.root, recursive=False) if e.is_dir])


async def _bucket_exists(ctx: Context, p: BucketParams) -> bool:
    backend, remote = await ctx.daemon.remotes.backend(p.profile, p.remote)
    path = base_path(remote, backend, p.bucket)
    try:
        entry = await retry(lambda: backend.stat(path.rstrip("/")), what=f"stat {path}")
    except E.NotFoundError:
        return False
    return entry.is_dir or backend.features.buckets is not None


@METHODS.rpc("bucket.exists", BucketParams)
async def bucket_exists(ctx: Context, p: BucketParams) -> bool:
    """Whether the bucket exists."""
    return await _bucket_exists(ctx, p)


@METHODS.rpc("bucket.create", BucketParams)
async def bucket_create(ctx: Context, p: BucketParams) -> bool:
    """Create a bucket; AlreadyExists (1002) if it is there."""
    if await _bucket_exists(ctx, p):
        raise E.AlreadyExistsError(f"bucket {p.bucket} exists", {"bucket": p.bucket, "remote": p.remote})
    backend, remote = await ctx.daemon.remotes.backend(p.profile, p.remote, "write")
    path = base_path(remote, backend, p.bucket).rstrip("/")
    if (buckets := backend.features.buckets) is not None:
        await retry(lambda: buckets.create_bucket(path), what=f"create bucket {path}")
    else:
        await retry(lambda: backend.mkdir(path), what=f"mkdir {path}")
    return True


@METHODS.rpc("bucket.remove", BucketParams)
async def bucket_remove(ctx: Context, p: BucketParams) -> bool:
    """Remove an empty bucket; a bucket with objects is refused and left as it is."""
    backend, remote = await ctx.daemon.remotes.backend(p.profile, p.remote, "write")
    path = base_path(remote, backend, p.bucket)
    if not await _bucket_exists(ctx, p):
        raise E.NotFoundError(f"no such bucket: {p.bucket}", {"bucket": p.bucket, "remote": p.remote})
    async for e in backend.list(path, recursive=True):
        raise E.StorageError(f"bucket {p.bucket} is not empty (it holds {e.name!r}); nothing was removed",
                             {"bucket": p.bucket, "reason": "not empty"})
    if backend.features.buckets is None:  # a folder bucket holding only empty folders holds no objects
        for folder in await _subfolders(backend, path):
            await retry(lambda folder=folder: backend.rmdir(folder), what=f"remove folder {folder}")
    await retry(lambda: backend.rmdir(path.rstrip("/")), what=f"remove bucket {p.bucket}")
    return True


async def _subfolders(backend: Backend, path: str) -> list[str]:
    """The folders below ``path`` (which ends in '/'), deepest first."""
    out: list[str] = []
    async for e in backend.list(path, recursive=False):
        if e.is_dir:
            sub = f"{path}{e.name.rstrip('/')}/"
            out += [*await _subfolders(backend, sub), sub.rstrip("/")]
    return out


# -- objects ---------------------------------------------------------------------------
class ListObjects(Where):
    prefix: str = ""
    recursive: bool = True
    metadata: bool = True
    contains: str = ""


@METHODS.rpc("object.list", ListObjects)
async def object_list(ctx: Context, p: ListObjects) -> list[Any]:
    """Objects under a bucket (or the remote's root, or a pipe's folder), names relative to it."""
    if p.pipe:
        return await _pipe_list(ctx, p)
    backend, base = await open_target(ctx, p)
    prefix = safepath.clean_key(p.prefix, allow_empty=True)
    folder = prefix.rpartition("/")[0]
    folder = f"{folder}/" if folder else ""
    out: list[Any] = []
    async for e in backend.list(base + folder, recursive=p.recursive):
        name = folder + e.name
        if not name.startswith(prefix) or transfer.is_temp(name) or p.contains not in name:
            continue
        out.append(entry_dict(e, name) if p.metadata else name)
    return out


async def _pipe_list(ctx: Context, p: ListObjects) -> list[Any]:
    """A pipe's files from its scan cache: on a shared daemon, the one listing every user shares
    (a folder's flat listing too, so no reader's request lists the storage afresh)."""
    svc = ctx.daemon.pipes
    files, _ = await svc.remote_files(await svc.store.resolve(p.profile, p.pipe), cached=True)
    prefix = safepath.clean_key(p.prefix, allow_empty=True)
    rows = {n: {"name": f.name, "size": f.size, "modified_at": f.mtime, "etag": f.etag, "is_dir": False}
            for n, f in sorted(files.items())}
    if not p.recursive:  # one folder's files and subfolders, from the same listing (no bypass)
        folder = prefix.rpartition("/")[0]
        folder = f"{folder}/" if folder else ""
        flat: dict[str, dict[str, Any]] = {}
        for n, row in rows.items():
            head, sub, _ = n[len(folder):].partition("/") if n.startswith(folder) else ("", "", "")
            if head and sub:
                flat.setdefault(folder + head, {"name": folder + head, "size": 0, "modified_at": None,
                                                "etag": None, "is_dir": True})
            elif head:
                flat[n] = row
        rows = flat
    found = [r for n, r in rows.items() if n.startswith(prefix) and p.contains in n]
    return [r if p.metadata else r["name"] for r in found]


class StatObjects(Where):
    key: str | list[str]


@METHODS.rpc("object.stat", StatObjects)
async def object_stat(ctx: Context, p: StatObjects) -> Any:
    """Size, modified time and etag of one object (or a list of them)."""
    backend, base = await open_target(ctx, p)
    keys = [p.key] if isinstance(p.key, str) else p.key
    out = []
    for key in keys:
        path = safepath.join(base, key)
        entry = await retry(lambda path=path: backend.stat(path), what=f"stat {key}")
        out.append(entry_dict(entry, safepath.clean_key(key)))
    return out[0] if isinstance(p.key, str) else out


class DeleteObjects(Where):
    key: str | list[str]


@METHODS.rpc("object.delete", DeleteObjects)
async def object_delete(ctx: Context, p: DeleteObjects) -> dict[str, Any]:
    """Delete objects; if any is missing nothing is deleted (1001 names them)."""
    backend, base, rkey = await where(ctx, p, "write")
    keys = [p.key] if isinstance(p.key, str) else p.key
    paths = [safepath.join(base, k) for k in keys]
    missing, folders = [], []
    for key, path in zip(keys, paths, strict=True):
        try:
            entry = await retry(lambda path=path: backend.stat(path), what=f"stat {key}")
        except E.NotFoundError:
            missing.append(key)
            continue
        if entry.is_dir:  # backends disagree on deleting a folder: refuse it the same way everywhere
            folders.append(key)
    if missing or folders:
        why = [f"no such object: {', '.join(missing)}"] * bool(missing)
        why += [f"a folder, not an object: {', '.join(folders)}"] * bool(folders)
        raise E.NotFoundError(f"{'; '.join(why)}; nothing was deleted",
                              {"keys": missing + folders, "remote": p.remote})
    for path in paths:
        await retry(lambda path=path: backend.delete(path), what=f"delete {path}")
        ctx.daemon.remotes.changed(*rkey, path, None)
    return {"deleted": [safepath.clean_key(k) for k in keys]}


# -- raw streams -----------------------------------------------------------------------
class ReadObject(KeyWhere):
    offset: int = 0
    length: int | None = None


@METHODS.rpc("object.read", ReadObject, raw=True)
async def object_read(ctx: Context, p: ReadObject) -> RawReply:
    """Stream an object's bytes on this connection after the response line."""
    backend, path = await resolve(ctx, p)
    asked = None if p.length is None else max(0, p.length)
    # S3: the GET's answer gives the size and ETag of the header, so no HEAD goes first
    entry, first = await retry(lambda: backend.open_read(path, max(p.offset, 0), asked),
                               what=f"read {p.key}")
    if entry.is_dir:
        await _close(first)
        raise E.NotFoundError(f"{p.key} is a folder, not an object", {"key": p.key})
    start = min(max(p.offset, 0), entry.size)
    length = entry.size - start if asked is None else min(asked, entry.size - start)

    async def body() -> AsyncIterator[bytes]:
        nonlocal first
        sent = 0
        policy = Attempts(f"read {p.key}")
        try:
            while sent < length:
                at = sent
                stream, first = first or backend.read(path, start + sent, length - sent), None
                try:
                    async with contextlib.aclosing(stream):
                        async for piece in stream:
                            sent += len(piece)
                            yield piece
                except transfer.TransientError as exc:
                    if sent > at:
                        policy.progressed()
                    await policy.failed(exc)  # bounded, with backoff; then 1008
                    continue  # resume from what was sent
                if sent < length:
                    raise E.StorageError(f"{p.key}: the storage ended the object early", {"key": p.key})
        finally:
            await _close(first)

    return RawReply({**entry_dict(entry, p.key), "offset": start, "length": length}, body())


async def _close(stream: AsyncIterator[bytes] | None) -> None:
    if stream is not None:
        await stream.aclose()  # type: ignore[attr-defined]


class WriteObject(KeyWhere):
    size: int


@METHODS.rpc("object.write", WriteObject, raw=True)
async def object_write(ctx: Context, p: WriteObject) -> dict[str, Any]:
    """Take ``size`` raw bytes following the request line and store them as an object."""
    if p.size < 0:
        raise E.InvalidParamsError("size must be >= 0", {"field": "size"})
    conn = ctx.conn
    assert conn is not None
    object_key(p.key)
    backend, base, rkey = await where(ctx, p, "write")
    path = safepath.join(base, p.key)

    async def body() -> AsyncIterator[bytes]:
        left = p.size
        while left:
            piece = await conn.reader.read(min(STREAM_PIECE, left))
            if not piece:
                raise E.StorageError(f"the client sent {p.size - left} of {p.size} bytes; nothing was stored",
                                     {"key": p.key})
            left -= len(piece)
            yield piece

    entry = await transfer.upload_stream(backend, body(), path, p.size)
    ctx.daemon.remotes.changed(*rkey, path, entry)
    return entry_dict(entry, safepath.clean_key(p.key))
