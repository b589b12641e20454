"""Single-file jobs: upload, download, copy, fetching a URL into storage, hashing a local file.

``client.upload``/``download`` address keys under the remote's root; the bucket
API's ``fput``/``fget``/``fcopy_to``/``put_request`` add a bucket. All of them run
as jobs (progress, cancel, survive the client) through the transfer engine. ``hash.file``
hashes a local file (md5, sha256 or the S3 ETag), to compare it with a remote object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

import msgspec

from pipedaemon_sdk.protocol import errors as E

from . import safepath, transfer
from .backends.base import Backend
from .datastore import KeyTarget, base_path, entry_dict, object_key
from .hashing import MAX_PARTS, hash_path
from .jobs import JobContext, JobKinds
from .metadata import rpc as meta
from .remotes import Mode
from .retry import retry
from .rpc import Context, Methods, Params
from .transfer.limits import MAX_BPS

MiB = 1 << 20
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")  # an HTTP method or header name
Algorithm = Literal["md5", "sha256", "s3etag"]


class UploadParams(KeyTarget):
    path: str
    chunk_size_mb: int | None = None
    bwlimit_bps: int = 0
    # Metadata stored with the object (metadata/): natively on S3, in the daemon's store elsewhere.
    title: str | None = None
    description: str | None = None
    alias: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


class DownloadParams(KeyTarget):
    dest: str
    chunk_size_mb: int | None = None
    bwlimit_bps: int = 0


class CopyParams(KeyTarget):
    dst_key: str
    dst_bucket: str | None = None
    dst_remote: str | None = None


class UrlParams(KeyTarget):
    url: str
    method: str = "GET"
    headers: dict[str, str] = {}
    data: str | None = None


class HashParams(Params):
    path: str
    algorithm: Algorithm = "sha256"
    part_size: int = 8 << 20
    profile: str = "default"


def check_local_file(path: str) -> int:
    """The size of a readable local file, or a clear error naming it."""
    if not os.path.isabs(path):
        raise E.InvalidParamsError(f"path must be absolute: {path!r}", {"field": "path", "path": path})
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise E.NotFoundError(f"no such file: {path}", {"path": path}) from None
    except PermissionError:
        raise E.PermissionDeniedError(f"cannot read {path}", {"path": path}) from None
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a symlink loop
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise E.InvalidParamsError(f"bad path {path!r}: {why}", {"field": "path", "path": path}) from None
    if not os.path.isfile(path):
        raise E.InvalidParamsError(f"not a regular file: {path}", {"field": "path", "path": path})
    if not os.access(path, os.R_OK):
        raise E.PermissionDeniedError(f"cannot read {path}", {"path": path})
    return st.st_size


def check_part_size(size: int, part_size: int) -> None:
    if part_size < 1 or part_size > 5 << 30:
        raise E.InvalidParamsError("part_size must be between 1 byte and 5 GiB", {"field": "part_size"})
    if size > part_size * MAX_PARTS:
        raise E.InvalidParamsError(
            f"part_size {part_size} makes more than {MAX_PARTS} parts for {size} bytes",
            {"field": "part_size"})


def _check_tuning(p: UploadParams | DownloadParams) -> None:
    if p.chunk_size_mb is not None and not 5 <= p.chunk_size_mb <= 5 * 1024:
        raise E.InvalidParamsError("chunk_size_mb must be between 5 and 5120", {"field": "chunk_size_mb"})
    if not 0 <= p.bwlimit_bps <= MAX_BPS:  # (10**400 crashed the job converting to float)
        raise E.InvalidParamsError(f"bwlimit_bps must be between 0 (unlimited) and {MAX_BPS}",
                                   {"field": "bwlimit_bps"})


def _tuning(ctx: JobContext, p: UploadParams | DownloadParams, remote: str) -> transfer.Tuning:
    chunk = p.chunk_size_mb * MiB if p.chunk_size_mb else None
    return ctx.tuning(f"{p.profile}/{remote}", chunk, p.bwlimit_bps)


def download_target(dest: str, key: str) -> Path:
    """``dest`` ending in '/' or naming a folder receives the key's base name."""
    if not os.path.isabs(dest):
        raise E.InvalidParamsError(f"dest must be an absolute path: {dest!r}", {"field": "dest"})
    name = safepath.clean_key(key).rstrip("/").rsplit("/", 1)[-1]
    if dest.endswith("/") or os.path.isdir(dest):
        return safepath.local_target(Path(dest), name)
    return Path(dest)


async def _submit(ctx: Context, kind: str, p: msgspec.Struct) -> Any:
    return await ctx.daemon.jobs.submit(kind, msgspec.to_builtins(p), p.profile, ctx.conn)  # type: ignore[attr-defined]


METHODS = Methods()


@METHODS.rpc("transfer.upload", UploadParams)
async def rpc_upload(ctx: Context, p: UploadParams) -> Any:
    """Start a job uploading a local file to ``key`` (under the remote's root or a bucket)."""
    check_local_file(p.path)
    object_key(p.key)
    _check_tuning(p)
    remote = await ctx.daemon.remotes.get(p.profile, p.remote)
    meta.check_upload(_upload_record(p), remote.protocol)
    return await _submit(ctx, "transfer.upload", p)


def _upload_record(p: UploadParams) -> meta.Record | None:
    return meta.record_of(p.title, p.description, p.alias, p.tags, p.metadata)


@METHODS.rpc("transfer.download", DownloadParams)
async def rpc_download(ctx: Context, p: DownloadParams) -> Any:
    """Start a job downloading ``key`` to ``dest`` (a file path, or a folder ending in '/')."""
    download_target(p.dest, p.key)
    _check_tuning(p)
    await ctx.daemon.remotes.get(p.profile, p.remote)
    return await _submit(ctx, "transfer.download", p)


@METHODS.rpc("transfer.copy", CopyParams)
async def rpc_copy(ctx: Context, p: CopyParams) -> Any:
    """Start a job copying an object (server-side where the storage can)."""
    safepath.clean_key(p.key)
    object_key(p.dst_key, "dst_key")
    await ctx.daemon.remotes.get(p.profile, p.dst_remote or p.remote)
    return await _submit(ctx, "transfer.copy", p)


@METHODS.rpc("object.put_request", UrlParams)
async def rpc_put_request(ctx: Context, p: UrlParams) -> Any:
    """Start a job in which the daemon fetches a URL and stores the body as an object."""
    if not p.url.startswith(("http://", "https://")):
        raise E.InvalidParamsError(f"url must be http(s): {p.url!r}", {"field": "url"})
    if not _TOKEN.match(p.method):
        raise E.InvalidParamsError(f"method must be an HTTP method name: {p.method!r}", {"field": "method"})
    for name, value in p.headers.items():  # a CR or LF would smuggle in headers of its own
        if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise E.InvalidParamsError(f"invalid header {name!r}", {"field": "headers", "header": name})
    object_key(p.key)
    return await _submit(ctx, "object.put_request", p)


async def _open(ctx: JobContext, profile: str, remote_name: str, bucket: str | None, key: str,
                mode: Mode) -> tuple[Backend, str, str]:
    """The backend, the backend path of ``key`` and the remote's name."""
    backend, remote = await ctx.daemon.remotes.backend(profile, remote_name, mode)
    return backend, safepath.join(base_path(remote, backend, bucket), key), remote.name


JOB_KINDS = JobKinds()


@JOB_KINDS.kind("transfer.upload")
async def job_upload(ctx: JobContext) -> dict[str, Any]:
    p = msgspec.convert(ctx.params, UploadParams)
    size = check_local_file(p.path)
    backend, path, remote = await _open(ctx, p.profile, p.remote, p.bucket, p.key, "write")
    started = time.monotonic()
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        ctx.progress(done, size)

    ctx.progress(0, size, file_name=p.key)
    service, rec = ctx.daemon.metadata, _upload_record(p)
    entry = await transfer.upload(backend, Path(p.path), path, on_bytes, tuning=_tuning(ctx, p, remote),
                                  resume=ctx.resume_slot(path), extra=service.upload_args(backend, rec))
    await service.uploaded(p.profile, remote, backend, path, rec, entry)
    ctx.daemon.remotes.changed(p.profile, remote, path, entry)
    return {"key": safepath.clean_key(p.key), "size": entry.size, "etag": entry.etag,
            "checksum": entry.etag, "elapsed_s": round(time.monotonic() - started, 3), "remote": remote}


@JOB_KINDS.kind("transfer.download")
async def job_download(ctx: JobContext) -> dict[str, Any]:
    p = msgspec.convert(ctx.params, DownloadParams)
    backend, path, remote = await _open(ctx, p.profile, p.remote, p.bucket, p.key, "read")
    target = download_target(p.dest, p.key)
    started = time.monotonic()
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        ctx.progress(done)

    entry = await retry(lambda: backend.stat(path), what=f"stat {p.key}")
    if entry.is_dir:
        raise E.NotFoundError(f"{p.key} is a folder, not an object", {"key": p.key})
    ctx.progress(0, entry.size, file_name=p.key)
    entry = await transfer.download(backend, path, target, on_bytes, entry=entry,
                                    tuning=_tuning(ctx, p, remote), resume=ctx.resume_slot(str(target)))
    return {"key": safepath.clean_key(p.key), "size": entry.size, "etag": entry.etag,
            "files": [[str(target), entry.size]], "elapsed_s": round(time.monotonic() - started, 3),
            "stat": entry_dict(entry, safepath.clean_key(p.key))}


@JOB_KINDS.kind("transfer.copy")
async def job_copy(ctx: JobContext) -> dict[str, Any]:
    p = msgspec.convert(ctx.params, CopyParams)
    src_backend, src, _ = await _open(ctx, p.profile, p.remote, p.bucket, p.key, "read")
    dst_bucket = p.dst_bucket if p.dst_bucket is not None else p.bucket
    dst_backend, dst, dst_remote = await _open(ctx, p.profile, p.dst_remote or p.remote, dst_bucket,
                                               p.dst_key, "write")
    if (p.dst_remote or p.remote) == p.remote and src == dst:  # S3 refuses it, a local copy truncates
        raise E.InvalidParamsError(f"{p.key} would be copied onto itself", {"field": "dst_key", "key": p.key})
    entry = await retry(lambda: src_backend.stat(src), what=f"stat {p.key}")
    ctx.progress(0, entry.size, file_name=p.key)
    out = None
    copier = dst_backend.features.server_copy
    if (p.dst_remote or p.remote) == p.remote and copier is not None:
        # Same storage: copy there. With separate read/write credentials the write set
        # does it, and a refusal falls back to streaming through the daemon.
        with contextlib.suppress(E.PermissionDeniedError):
            out = await retry(lambda: copier.copy(src, dst), what=f"copy {p.key}")
    if out is None:
        done = 0

        async def chunks() -> Any:
            nonlocal done
            stream = src_backend.read(src)
            async with contextlib.aclosing(stream):
                async for piece in stream:
                    done += len(piece)
                    ctx.progress(done)
                    yield piece

        out = await transfer.upload_stream(dst_backend, chunks(), dst, entry.size,
                                           tuning=ctx.tuning(f"{p.profile}/{dst_remote}"))
    ctx.daemon.remotes.changed(p.profile, dst_remote, dst, out)
    ctx.progress(entry.size, entry.size)
    return entry_dict(out, safepath.clean_key(p.dst_key))


@JOB_KINDS.kind("object.put_request")
async def job_put_request(ctx: JobContext) -> dict[str, Any]:
    import aiohttp

    p = msgspec.convert(ctx.params, UrlParams)
    backend, path, remote = await _open(ctx, p.profile, p.remote, p.bucket, p.key, "write")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    try:
        entry = await _fetch_into(ctx, p, backend, path, timeout)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:  # (yarl: ValueError for a bad URL)
        raise E.StorageError(f"{p.method} {p.url} failed: {exc or type(exc).__name__}",
                             {"url": p.url}) from None
    ctx.daemon.remotes.changed(p.profile, remote, path, entry)
    return entry_dict(entry, safepath.clean_key(p.key))


async def _fetch_into(ctx: JobContext, p: UrlParams, backend: Backend, path: str, timeout: Any) -> Any:
    import aiohttp

    async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
            p.method, p.url, headers=p.headers, data=p.data) as resp:
        if resp.status >= 400:
            raise E.StorageError(f"{p.method} {p.url} answered HTTP {resp.status}",
                                 {"url": p.url, "status": resp.status})
        size = resp.content_length
        if size is None:
            raise E.StorageError(f"{p.url} gave no Content-Length; cannot verify the body",
                                 {"url": p.url})
        ctx.progress(0, size, file_name=p.key)
        done = 0

        async def chunks() -> Any:
            nonlocal done
            async for piece in resp.content.iter_chunked(1 << 20):
                done += len(piece)
                ctx.progress(done)
                yield piece

        return await transfer.upload_stream(backend, chunks(), path, size)


@METHODS.rpc("hash.file", HashParams)
async def hash_file(ctx: Context, p: HashParams) -> object:
    """Start a job hashing a local file (md5, sha256 or s3etag)."""
    size = check_local_file(p.path)
    if p.algorithm == "s3etag":
        check_part_size(size, p.part_size)
    return await ctx.daemon.jobs.submit("hash.file", msgspec.to_builtins(p), p.profile, ctx.conn)


@JOB_KINDS.kind("hash.file")
async def run_hash(ctx: JobContext) -> dict[str, str]:
    p = msgspec.convert(ctx.params, HashParams)
    size = check_local_file(p.path)
    name = os.path.basename(p.path)
    ctx.progress(0, size, file_name=name, file_count=1)
    cancelled = threading.Event()
    report = lambda done: ctx.progress_threadsafe(done, size)  # noqa: E731
    try:
        digest = await asyncio.to_thread(hash_path, p.path, p.algorithm, p.part_size, report, cancelled)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    except OSError as exc:
        raise E.StorageError(f"reading {p.path} failed: {exc.strerror or exc}", {"path": p.path}) from exc
    ctx.progress(size, size)
    return {p.algorithm: digest}
