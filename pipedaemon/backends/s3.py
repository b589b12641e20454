"""S3 (and S3-compatible endpoints) through aiobotocore.

Paths are ``"bucket/key..."``. S3 has no folders: ``mkdir``/``rmdir`` inside a bucket
do nothing, and on a bare bucket name they create / remove the bucket. Retries belong
to the engine: botocore makes at most one extra attempt (a stale pooled connection),
everything else comes back as TransientError.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email.utils
import hashlib
import inspect
import math
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
import botocore.exceptions as bce
import botocore.utils
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from pipedaemon.backends.base import (
    Backend,
    Buckets,
    Entry,
    HasNativeMetadata,
    Hints,
    Identity,
    Multipart,
    NativeMetadata,
    ServerCopy,
    Traits,
    TransientError,
    error_edge,
)
from pipedaemon.retry import retry
from pipedaemon.window import Window
from pipedaemon_sdk.protocol.errors import (
    AlreadyExistsError,
    AuthFailedError,
    ChecksumMismatchError,
    DaemonError,
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # every part but the last (S3 rule)
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_SINGLE_COPY = 5 * GiB  # CopyObject limit; above it UploadPartCopy
MAX_PUT = 5 * GiB  # PutObject limit
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_COPY_PART_SIZE = 512 * MiB
READ_CHUNK = 1 * MiB
STRAY_WATCH_S = 1800.0  # how long the janitor sweeps a key after an uncertain create

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound", "404"}
_AUTH = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
         "TokenRefreshRequired", "InvalidClientTokenId", "ExpiredTokenException"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"}
_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
# The body did not match the Content-MD5 we sent: refused before anything was stored.
_DAMAGED = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
_TRANSIENT = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
              "ThrottlingException", "RequestLimitExceeded", "OperationAborted", "500", "502",
              "503", "504"}
_TRANSIENT_NATIVE = (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError,
                     bce.HTTPClientError, bce.IncompleteReadError, bce.ConnectionError,
                     aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, TimeoutError)


def _code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _map_client_error(exc: bce.ClientError) -> DaemonError:
    code = _code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    text = exc.response.get("Error", {}).get("Message") or code
    data = {"code": code, "status": status}
    if code == "BucketNotEmpty":
        return StorageError("bucket not empty: remove its objects first", data)
    if code in _NOT_FOUND or status == 404:
        return NotFoundError(f"not found: {text}", data)
    if code in _AUTH:
        return AuthFailedError(f"S3 refused the credentials: {code}", data)
    if code in _DENIED or status == 403:
        return PermissionDeniedError(f"access denied: {text}", data)
    if code in _EXISTS:
        return AlreadyExistsError(f"bucket exists: {text}", data)
    if code in _DAMAGED:
        return ChecksumMismatchError(f"S3 refused a body that arrived damaged ({code}); nothing was stored",
                                     {**data, "in_flight": True})
    if code == "InvalidBucketName":
        return InvalidSettingsError(f"invalid bucket name: {text}", data)
    if code in _TRANSIENT or status >= 500:
        return TransientError(f"S3 {code or status}: {text}", data)
    return StorageError(f"S3 {code or status}: {text}", data)


def map_s3_error(exc: BaseException) -> DaemonError | None:
    """The one place botocore/aiohttp failures become the project's errors."""
    if isinstance(exc, bce.ClientError):
        return _map_client_error(exc)
    if isinstance(exc, bce.SSLError):  # a certificate problem does not heal by retrying
        return StorageError(f"TLS failure: {exc}")
    if isinstance(exc, bce.ChecksumError):
        return ChecksumMismatchError(str(exc))
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError,
                        bce.CredentialRetrievalError)):
        return AuthFailedError(f"no usable S3 credentials: {exc}")
    if isinstance(exc, bce.ProfileNotFound):
        return InvalidSettingsError(str(exc), {"field": "profile"})
    if isinstance(exc, _TRANSIENT_NATIVE):
        return TransientError(f"S3 connection failed: {exc}")
    if isinstance(exc, (bce.BotoCoreError, OSError)):
        return StorageError(f"S3 failure: {exc}")
    return None  # programming errors stay visible


def _is_not_found(exc: bce.ClientError) -> bool:
    return isinstance(_map_client_error(exc), NotFoundError)


def split_path(path: str) -> tuple[str, str]:
    """``"bucket/key"`` -> (bucket, key); a path without a bucket is a settings error."""
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        raise InvalidSettingsError("an S3 path needs a bucket", {"path": path})
    return bucket, key


def parse_timestamp(value: str) -> datetime.datetime:
    """botocore's timestamp parser, minus dateutil for the two forms S3 sends (a listing's
    ISO 8601 ``...T...Z``, a header's RFC 1123): dateutil cost ~5 % of a many-file pull."""
    try:
        if value.endswith("Z") and "T" in value:
            return datetime.datetime.fromisoformat(value[:-1]).replace(tzinfo=datetime.timezone.utc)
        if value.endswith(" GMT"):
            return email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError):
        pass
    return botocore.utils.parse_timestamp(value)


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def _content_md5(body: bytes) -> str:
    """The Content-MD5 header: S3 checks the body against it before storing anything."""
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def _total_size(resp: dict[str, Any], ranged: bool) -> int | None:
    """The whole object's size from a GET's answer: ``Content-Range: bytes a-b/total`` for a
    ranged GET (None when the server sent none, so the body's offset is not known)."""
    if not ranged:
        return int(resp.get("ContentLength", 0))
    _, _, total = str(resp.get("ContentRange") or "").rpartition("/")
    return int(total) if total.isdigit() else None


def _head_entry(name: str, head: dict[str, Any]) -> Entry:
    # With SSE-KMS or SSE-C the ETag is not an md5 of the data: report none rather than one
    # the engine would check against and wrongly call a mismatch.
    encrypted = str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or \
        bool(head.get("SSECustomerAlgorithm"))
    return Entry(name=name, size=int(head.get("ContentLength", 0)),
                 etag=None if encrypted else _etag(head.get("ETag")),
                 mtime=head["LastModified"].timestamp() if head.get("LastModified") else None)


class S3Backend(Backend, Multipart, ServerCopy, Buckets, Identity, HasNativeMetadata):
    protocol = "s3"
    traits = Traits(atomic_write=True, ranged_read=True, implied_folders=True, checksums=("s3etag",))

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        super().__init__(options, credentials, max_streams=max_streams)
        self.endpoint_url: str | None = options.get("endpoint_url") or None
        self.region: str | None = options.get("region") or ("us-east-1" if self.endpoint_url else None)
        remote = str(options.get("remotepath") or "").removeprefix("s3://").lstrip("/")
        self.bucket, _, self.prefix = remote.partition("/")
        self.part_size = int(options.get("part_size", DEFAULT_PART_SIZE))
        self.put_threshold = int(options.get("put_threshold", self.part_size))
        self.copy_threshold = int(options.get("copy_threshold", MAX_SINGLE_COPY))
        self.copy_part_size = int(options.get("copy_part_size", DEFAULT_COPY_PART_SIZE))
        self.list_page_size: int | None = options.get("list_page_size")
        self.write_depth = int(options.get("write_concurrency", 2))
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._create_failed: set[str] = set()  # paths whose last CreateMultipartUpload failed
        # Paths whose CreateMultipartUpload was uncertain (an answer lost), and since when: a
        # lost create can reach the server late (held by the network), after every sweep.
        self._strays: dict[str, float] = {}
        self._active: set[str] = set()  # our uploads not completed or aborted yet: never swept

    # -- lifecycle -------------------------------------------------------------
    def _config(self) -> AioConfig:
        kwargs: dict[str, Any] = {
            "max_pool_connections": max(10, self.max_streams + 2 + self.write_depth),
            "retries": {"mode": "standard", "total_max_attempts": 2},
            "connect_timeout": float(self.options.get("connect_timeout", 10)),
            "read_timeout": float(self.options.get("read_timeout", 60)),
        }
        style = self.options.get("addressing_style") or ("path" if self.endpoint_url else None)
        if style:
            kwargs["s3"] = {"addressing_style": style}
        if self.endpoint_url:
            # Many S3-compatible servers reject the newer flexible-checksum headers and
            # trailers; AWS itself keeps the default integrity checks.
            kwargs["request_checksum_calculation"] = "when_required"
            kwargs["response_checksum_validation"] = "when_required"
        return AioConfig(**kwargs)

    def _client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"config": self._config()}
        if self.endpoint_url:
            args["endpoint_url"] = self.endpoint_url
        if self.region:
            args["region_name"] = self.region
        if "verify" in self.options:  # False, or a CA bundle path for private endpoints
            args["verify"] = self.options["verify"]
        creds = self.credentials
        if creds.get("aws_access_key_id"):
            args["aws_access_key_id"] = creds["aws_access_key_id"]
            args["aws_secret_access_key"] = creds.get("aws_secret_access_key")
            if creds.get("aws_session_token"):
                args["aws_session_token"] = creds["aws_session_token"]
        return args

    async def connect(self) -> None:
        with error_edge(map_s3_error):
            session = AioSession(profile=self.options.get("profile") or None)
            session.get_component("response_parser_factory").set_parser_defaults(
                timestamp_parser=parse_timestamp)
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", **self._client_args()))
        try:
            await self._verify()
        except BaseException:
            await self.close()
            raise

    async def _verify(self) -> None:
        """One cheap signed GET: its error body tells bad keys from denied access."""
        with error_edge(map_s3_error, self.bucket):
            if self.bucket:
                await self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            else:
                await self._client.list_buckets()

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS {self.region or 'default region'}"
        root = f"s3://{self.bucket}/{self.prefix}" if self.bucket else "all buckets"
        profile = f" (profile {self.options['profile']})" if self.options.get("profile") else ""
        return f"s3 {where} {root}{profile}"

    def native_metadata(self) -> NativeMetadata:
        from .s3meta import S3Metadata  # user metadata and tags: their own file

        return S3Metadata(self)

    async def identity(self) -> tuple[str | None, datetime.datetime | None]:
        """The access key id and expiry botocore holds (credentials from a profile or the
        environment, resolved by the client)."""
        creds = getattr(getattr(self._client, "_request_signer", None), "_credentials", None)
        if creds is None:
            return None, None
        frozen = creds.get_frozen_credentials()
        if inspect.isawaitable(frozen):
            frozen = await frozen
        return getattr(frozen, "access_key", None), getattr(creds, "_expiry_time", None)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StorageError("S3 backend is not connected")
        return self._client

    async def _head(self, bucket: str, key: str) -> dict[str, Any]:
        """HeadObject; a bare 403 is re-asked with a GET, whose error body names bad keys."""
        try:
            return dict(await self.client.head_object(Bucket=bucket, Key=key))
        except bce.ClientError as exc:
            if _code(exc) != "403":
                raise
            denied = exc
        try:
            resp = await self.client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")
        except bce.ClientError as probe:
            if _code(probe) in _AUTH:
                raise probe from denied
            raise denied from None
        resp["Body"].close()
        raise denied

    # -- required --------------------------------------------------------------
    async def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        if not path.strip("/") and not recursive:
            for name in await self.list_buckets():
                yield Entry(name=name, is_dir=True)
            return
        bucket, key = split_path(path)
        prefix = key if not key or key.endswith("/") else key + "/"
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if not recursive:
            kwargs["Delimiter"] = "/"
        if self.list_page_size:
            kwargs["PaginationConfig"] = {"PageSize": int(self.list_page_size)}
        with error_edge(map_s3_error, path):
            async for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(prefix):].rstrip("/")
                    if name:
                        yield Entry(name=name, is_dir=True)
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix):]
                    if name and not name.endswith("/"):  # "x/" objects are console folder markers
                        yield Entry(name=name, size=int(obj["Size"]), etag=_etag(obj.get("ETag")),
                                    mtime=obj["LastModified"].timestamp())

    async def stat(self, path: str) -> Entry:
        bucket, key = split_path(path)
        with error_edge(map_s3_error, path):
            if not key:
                await self.client.head_bucket(Bucket=bucket)
                return Entry(name=path, is_dir=True)
            if not key.endswith("/"):
                try:
                    return _head_entry(path, await self._head(bucket, key))
                except bce.ClientError as exc:
                    if not _is_not_found(exc):
                        raise
            # No such object: it is a "folder" if some key starts with it.
            folder = key.rstrip("/") + "/"
            found = await self.client.list_objects_v2(Bucket=bucket, Prefix=folder, MaxKeys=1)
            if found.get("KeyCount", 0):
                return Entry(name=path, is_dir=True)
            raise NotFoundError(f"no such object: {path}", {"path": path})

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        bucket, key = split_path(path)
        if length == 0:
            return
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        with error_edge(map_s3_error, path):
            try:
                resp = await self.client.get_object(**kwargs)
            except bce.ClientError as exc:
                if _code(exc) == "InvalidRange":  # offset at or past the end: nothing to read
                    return
                raise
        async for chunk in self._body(path, resp):
            yield chunk

    async def open_read(self, path: str, offset: int = 0,
                        length: int | None = None) -> tuple[Entry, AsyncIterator[bytes] | None]:
        """One GET: its headers give the size, ETag and time a HEAD would (s3fs sends no HEAD
        either). What a GET cannot answer (nothing to read, a folder, a missing key, a bare
        403) is left to ``stat``, which tells those apart."""
        bucket, key = split_path(path)
        if not key or key.endswith("/") or length == 0:
            return await self.stat(path), None
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if offset or length is not None:
            kwargs["Range"] = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        with error_edge(map_s3_error, path):
            try:
                resp = await self.client.get_object(**kwargs)
            except bce.ClientError as exc:
                if _code(exc) not in ("InvalidRange", "403") and not _is_not_found(exc):
                    raise
                resp = None
        total = _total_size(resp, "Range" in kwargs) if resp is not None else None
        if total is None:  # asked again the way that tells the cases apart
            if resp is not None:
                resp["Body"].close()
            return await self.stat(path), None
        return _head_entry(path, {**resp, "ContentLength": total}), self._body(path, resp)

    async def _body(self, path: str, resp: dict[str, Any]) -> AsyncIterator[bytes]:
        with error_edge(map_s3_error, path):
            async with resp["Body"] as body:
                while chunk := await body.read(READ_CHUNK):
                    yield chunk

    def hints(self) -> Hints:
        return Hints(part_size=self.part_size, min_part=MIN_PART_SIZE, put_threshold=self.put_threshold,
                     max_write=MAX_PUT, write_concurrency=self.write_depth,
                     copy_part_size=self.copy_part_size)

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        """Exactly one PUT, with the body's Content-MD5 so S3 refuses a damaged body; ``extra``:
        more PutObject arguments of this one write (metadata, tags: backends/s3meta.py)."""
        bucket, key = split_path(path)
        if size is not None and size > MAX_PUT:
            raise StorageError(f"{path}: {size} bytes is more than one S3 PUT takes (5 GiB)",
                               {"path": path, "size": size})
        buf = bytearray()
        # The caller's stream is read outside error_edge: its failures are not S3's.
        async for chunk in chunks:
            buf += chunk
            if len(buf) > MAX_PUT:
                raise StorageError(f"{path}: more than one S3 PUT takes (5 GiB)", {"path": path})
        body = bytes(buf)
        md5 = _content_md5(body) if len(body) <= MiB else await asyncio.to_thread(_content_md5, body)
        with error_edge(map_s3_error, path):
            resp = await self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5,
                                                **(extra or {}))
        # No HEAD for the modified time: a second request per small file halves the rate of
        # many-file pushes, and the ETag already identifies what was stored.
        return Entry(name=path, size=len(body), etag=_etag(resp.get("ETag")), mtime=None)

    async def _abort_quietly(self, path: str, upload_id: str) -> None:
        # Shielded: a cancelled copy must still not leave paid-for parts behind.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(self.mp_abort(path, upload_id))

    async def delete(self, path: str) -> None:
        bucket, key = split_path(path)
        with error_edge(map_s3_error, path):
            # S3 deletes missing keys silently; the contract wants NotFoundError.
            await self._head(bucket, key)
            await self.client.delete_object(Bucket=bucket, Key=key)

    async def mkdir(self, path: str) -> None:
        bucket, key = split_path(path)
        if key.strip("/"):
            return  # folders inside a bucket do not exist on S3
        with error_edge(map_s3_error, path):
            try:
                await self.client.head_bucket(Bucket=bucket)
                return
            except bce.ClientError as exc:
                if not _is_not_found(exc):
                    raise
        with contextlib.suppress(AlreadyExistsError):  # created meanwhile by someone else
            await self.create_bucket(bucket)

    async def rmdir(self, path: str) -> None:
        bucket, key = split_path(path)
        if key.strip("/"):
            return  # nothing to remove: an S3 "folder" vanishes with its last object
        with error_edge(map_s3_error, path):
            await self.client.delete_bucket(Bucket=bucket)

    # -- optional ----------------------------------------------------------------
    def copies_from(self, other: Backend) -> bool:
        """Another S3 remote on this endpoint and region: CopyObject reads its keys."""
        keys = ("endpoint_url", "region")
        return isinstance(other, S3Backend) and all(other.options.get(k) == self.options.get(k) for k in keys)

    async def copy(self, src: str, dst: str) -> Entry:
        sbucket, skey = split_path(src)
        dbucket, dkey = split_path(dst)
        with error_edge(map_s3_error, src):
            size = int((await self._head(sbucket, skey))["ContentLength"])
        source = {"Bucket": sbucket, "Key": skey}
        if size > self.copy_threshold:
            return await self._copy_multipart(source, dst, size)
        with error_edge(map_s3_error, dst):
            resp = await self.client.copy_object(Bucket=dbucket, Key=dkey, CopySource=source)
        result = resp["CopyObjectResult"]
        return Entry(name=dst, size=size, etag=_etag(result.get("ETag")),
                     mtime=result["LastModified"].timestamp() if result.get("LastModified") else None)

    async def _copy_multipart(self, source: dict[str, str], dst: str, size: int) -> Entry:
        bucket, key = split_path(dst)
        part = min(MAX_PART_SIZE, max(self.copy_part_size, math.ceil(size / MAX_PARTS)))
        upload_id = await self.mp_create(dst)
        etags: dict[int, str] = {}

        async def copy_part(number: int, start: int) -> None:
            with error_edge(map_s3_error, dst):
                resp = await self.client.upload_part_copy(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, CopySource=source,
                    CopySourceRange=f"bytes={start}-{min(start + part, size) - 1}")
            etags[number] = _etag(resp["CopyPartResult"]["ETag"]) or ""

        try:
            async with Window(min(4, self.max_streams)) as window:
                for i, start in enumerate(range(0, size, part)):
                    await window.submit(copy_part(i + 1, start))
            return await self.mp_complete(dst, upload_id, sorted(etags.items()))
        except BaseException:
            await self._abort_quietly(dst, upload_id)
            raise

    async def stored_part_size(self, path: str) -> int | None:
        """HEAD of part 1: its length is the part size the uploader chose."""
        bucket, key = split_path(path)
        with error_edge(map_s3_error, path):
            try:
                head = await self.client.head_object(Bucket=bucket, Key=key, PartNumber=1)
            except bce.ClientError as exc:
                if _code(exc) in ("400", "InvalidArgument", "InvalidRequest", "NotImplemented", "501"):
                    return None  # a server that cannot answer part queries
                raise
        return int(head["ContentLength"]) if head.get("PartsCount") else None

    async def mp_create(self, path: str, extra: dict[str, Any] | None = None) -> str:
        bucket, key = split_path(path)
        args = extra or {}
        with error_edge(map_s3_error, path):
            try:
                resp = await self.client.create_multipart_upload(Bucket=bucket, Key=key, **args)
            except Exception:
                self._create_failed.add(path)  # the server may have made an upload whose id we never saw
                raise
        upload_id = str(resp["UploadId"])
        self._active.add(upload_id)
        if path in self._create_failed or resp.get("ResponseMetadata", {}).get("RetryAttempts"):
            self._create_failed.discard(path)
            # Swept now, again once this upload is completed or aborted, and by the janitor for
            # STRAY_WATCH_S: the first sweep may be refused, or run before a late create lands.
            self._strays[path] = time.monotonic()
            await self._abort_strays(bucket, key)
        return upload_id

    async def abort_stale_uploads(self, path: str) -> int:
        bucket, key = split_path(path)
        return await self._abort_strays(bucket, key) or 0

    async def tidy(self) -> int:
        """The janitor's sweep of the keys whose create was uncertain lately."""
        now = time.monotonic()
        for path, since in list(self._strays.items()):
            if now - since > STRAY_WATCH_S:
                del self._strays[path]
        swept = 0
        for path in list(self._strays):
            bucket, key = split_path(path)
            swept += await self._abort_strays(bucket, key) or 0
        return swept

    async def _abort_strays(self, bucket: str, key: str) -> int | None:
        """Abort the uploads of ``key`` that are not ours in flight; how many (None when the
        storage would not let us). After a create whose answer was lost (ours, or botocore's
        retry of it) they are ours, and nobody would ever complete or abort them. Retried like
        any storage call (found by the soak: one failing sweep left an orphan). A concurrent
        upload of the same key by someone else would be cut too."""
        aborted = 0

        async def sweep() -> None:
            nonlocal aborted
            with error_edge(map_s3_error, f"{bucket}/{key}"):
                listed = await self.client.list_multipart_uploads(Bucket=bucket, Prefix=key)
                for up in listed.get("Uploads", []):
                    if up.get("Key") == key and up.get("UploadId") not in self._active:
                        await self._abort_upload(bucket, key, up["UploadId"])
                        aborted += 1

        try:
            await retry(sweep, what=f"abort stray uploads of {key}", budget_s=10)
        except DaemonError:
            return None
        return aborted

    async def _upload_ended(self, path: str, upload_id: str) -> None:
        """This upload of ``path`` was completed or aborted: sweep the key again if its create
        was uncertain."""
        self._active.discard(upload_id)
        if path in self._strays:
            bucket, key = split_path(path)
            await self._abort_strays(bucket, key)

    async def mp_upload_part(self, path: str, upload_id: str, part_number: int, data: bytes,
                             md5: bytes | None = None) -> str:
        bucket, key = split_path(path)
        self._active.add(upload_id)  # also one resumed from a note, never created here
        digest = base64.b64encode(md5).decode() if md5 is not None else _content_md5(data)
        with error_edge(map_s3_error, path):
            resp = await self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                                 PartNumber=part_number, Body=data, ContentMD5=digest)
        return _etag(resp["ETag"]) or ""

    async def mp_parts(self, path: str, upload_id: str) -> dict[int, tuple[str, int]]:
        bucket, key = split_path(path)
        self._active.add(upload_id)
        parts: dict[int, tuple[str, int]] = {}
        with error_edge(map_s3_error, path):
            paginator = self.client.get_paginator("list_parts")
            async for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
                for p in page.get("Parts", []):
                    parts[int(p["PartNumber"])] = (_etag(p["ETag"]) or "", int(p["Size"]))
        return parts

    async def mp_complete(self, path: str, upload_id: str, parts: list[tuple[int, str]],
                          size: int | None = None) -> Entry:
        bucket, key = split_path(path)
        listed = [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in sorted(parts)]
        with error_edge(map_s3_error, path):
            done = await self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed})
            entry = _head_entry(path, await self.client.head_object(Bucket=bucket, Key=key))
        await self._upload_ended(path, upload_id)
        ours = _etag(done.get("ETag"))
        if size is not None and ours and entry.etag and entry.etag != ours:
            # Another writer replaced the key between our completion and the HEAD: report what we
            # stored (S3 computed its ETag from our parts), so the engine neither fails our upload
            # nor removes the other writer's object as "unverified".
            entry = Entry(name=path, size=size, etag=ours, mtime=entry.mtime)
        return entry

    async def mp_abort(self, path: str, upload_id: str) -> None:
        bucket, key = split_path(path)
        with error_edge(map_s3_error, path):
            await self._abort_upload(bucket, key, upload_id)
        await self._upload_ended(path, upload_id)

    async def _abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort one upload; already gone is what we wanted. Any other refusal (a 500, a
        503) is raised: taken for "gone", it once left a stray upload for good (the soak)."""
        try:
            await self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except bce.ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise

    async def list_buckets(self) -> list[str]:
        with error_edge(map_s3_error):
            resp = await self.client.list_buckets()
        return [b["Name"] for b in resp.get("Buckets", [])]

    async def create_bucket(self, name: str) -> None:
        if not name or "/" in name.strip("/"):
            raise InvalidSettingsError("a bucket name has no '/'", {"bucket": name})
        kwargs: dict[str, Any] = {"Bucket": name.strip("/")}
        if self.region and self.region != "us-east-1":  # us-east-1 refuses an explicit constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with error_edge(map_s3_error, name):
            await self.client.create_bucket(**kwargs)
