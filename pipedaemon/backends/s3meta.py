"""S3's native metadata: user metadata (``x-amz-meta-*``) and object tags.

Tags change with PutObjectTagging, which leaves the object as it is. User metadata
can only change by copying the object onto itself with ``MetadataDirective=REPLACE``,
guarded by ``CopySourceIfMatch`` (an overwrite meanwhile is a conflict, never undone
by our copy). The copy keeps the bytes and the ETag: a single-part object is copied
with CopyObject (its ETag is the md5 of the bytes, again); a multipart one part by
part at its own part boundaries, so the md5 of the part md5s is the same too.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import Any

from pipedaemon_sdk.protocol.errors import ConflictError, StorageError

from .base import Entry, Native, NativeMetadata, error_edge
from .s3 import MAX_SINGLE_COPY, S3Backend, _etag, _head_entry, map_s3_error, split_path

# Headers of the object a REPLACE copy would otherwise drop.
MAX_PART_QUERIES = 64  # parts of uneven sizes learned one HEAD each, up to this many
KEPT = (
    "ContentType",
    "ContentEncoding",
    "ContentDisposition",
    "ContentLanguage",
    "CacheControl",
    "Expires",
    "StorageClass",
    "WebsiteRedirectLocation",
)
_ENCRYPTION = ("ServerSideEncryption", "SSEKMSKeyId", "BucketKeyEnabled")


def _tag_set(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _query(tags: dict[str, str]) -> str:
    return urllib.parse.urlencode(tags, quote_via=urllib.parse.quote)


class S3Metadata(NativeMetadata):
    def __init__(self, backend: S3Backend) -> None:
        self.b = backend

    async def read(self, path: str) -> Native:
        bucket, key = split_path(path)
        with error_edge(map_s3_error, path):
            head = await self.b._head(bucket, key)
            tagging = await self.b.client.get_object_tagging(Bucket=bucket, Key=key)
        tags = {t["Key"]: t.get("Value", "") for t in tagging.get("TagSet", [])}
        return Native(meta=dict(head.get("Metadata") or {}), tags=tags, entry=_head_entry(path, head))

    def upload_args(self, meta: dict[str, str], tags: dict[str, str]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if meta:
            extra["Metadata"] = meta
        if tags:
            extra["Tagging"] = _query(tags)
        return extra

    async def write(
        self, path: str, meta: dict[str, str], tags: dict[str, str], if_etag: str | None
    ) -> Entry:
        bucket, key = split_path(path)
        now = await self.read(path)
        if if_etag and now.entry.etag != if_etag:
            raise ConflictError(
                f"{path} changed meanwhile; its metadata was not written",
                {"path": path, "etag": now.entry.etag, "expected": if_etag},
            )
        entry = now.entry
        if {k.lower(): v for k, v in now.meta.items()} != meta:
            entry = await self._replace_meta(bucket, key, path, meta, now)
        if now.tags != tags:
            with error_edge(map_s3_error, path):
                if tags:
                    await self.b.client.put_object_tagging(
                        Bucket=bucket, Key=key, Tagging={"TagSet": _tag_set(tags)}
                    )
                else:
                    await self.b.client.delete_object_tagging(Bucket=bucket, Key=key)
        return entry

    async def _replace_meta(
        self, bucket: str, key: str, path: str, meta: dict[str, str], now: Native
    ) -> Entry:
        was = now.entry
        with error_edge(map_s3_error, path):
            head = await self.b._head(bucket, key)
        keep = {k: head[k] for k in KEPT if head.get(k)}
        if str(head.get("ServerSideEncryption", "")).startswith("aws:kms"):
            keep.update({k: head[k] for k in _ENCRYPTION if head.get(k) is not None})
        source = {"Bucket": bucket, "Key": key}
        match = f'"{was.etag}"' if was.etag else None
        guard = {"CopySourceIfMatch": match} if match else {}
        try:
            with error_edge(map_s3_error, path):
                ranges = await self._part_ranges(bucket, key, path, was)
                if ranges is None and was.size > MAX_SINGLE_COPY:  # too big for CopyObject
                    part = self.b.copy_part_size
                    ranges = [(s, min(s + part, was.size)) for s in range(0, was.size, part)]
                if ranges is not None:  # a new upload: the tags are not copied by themselves
                    if now.tags:
                        keep["Tagging"] = _query(now.tags)
                    return await self._copy_parts(bucket, key, path, source, guard, meta, keep, ranges)
                await self.b.client.copy_object(
                    Bucket=bucket,
                    Key=key,
                    CopySource=source,
                    MetadataDirective="REPLACE",
                    Metadata=meta,
                    **keep,
                    **guard,
                )
                return _head_entry(path, await self.b.client.head_object(Bucket=bucket, Key=key))
        except StorageError as err:
            if err.data.get("code") in ("PreconditionFailed", "412") or err.data.get("status") == 412:
                raise ConflictError(
                    f"{path} changed meanwhile; its metadata was not written", {"path": path}
                ) from None
            raise

    async def _part_ranges(
        self, bucket: str, key: str, path: str, was: Entry
    ) -> list[tuple[int, int]] | None:
        """The byte ranges of a multipart object's parts (None for a single-part one, or when
        the storage will not tell): copied part for part, the ETag stays the same."""
        count = was.etag.rpartition("-")[2] if was.etag and "-" in was.etag else ""
        if not count.isdigit():
            return None
        n, size = int(count), was.size
        part = await self.b.stored_part_size(path)
        if not part:
            return None
        last = size - (n - 1) * part
        if 0 < last <= part and await self._part_size(bucket, key, n) == last:  # the usual layout
            return [(s, min(s + part, size)) for s in range(0, size, part)]
        if n > MAX_PART_QUERIES:
            return None
        sizes = []
        for number in range(1, n + 1):  # parts of their own sizes (another uploader's choice)
            sizes.append(await self._part_size(bucket, key, number))
        if sum(sizes) != size:
            return None
        starts = [sum(sizes[:i]) for i in range(n)]
        return [(s, s + z) for s, z in zip(starts, sizes, strict=True)]

    async def _part_size(self, bucket: str, key: str, number: int) -> int:
        head = await self.b.client.head_object(Bucket=bucket, Key=key, PartNumber=number)
        return int(head["ContentLength"])

    async def _copy_parts(
        self,
        bucket: str,
        key: str,
        path: str,
        source: dict[str, str],
        guard: dict[str, Any],
        meta: dict[str, str],
        keep: dict[str, Any],
        ranges: list[tuple[int, int]],
    ) -> Entry:
        """Copy onto itself at the original part boundaries: same parts, same ETag."""
        client = self.b.client
        up = await client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta, **keep)
        upload_id = up["UploadId"]
        try:
            parts = []
            for number, (start, end) in enumerate(ranges, start=1):
                resp = await client.upload_part_copy(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end - 1}",
                    **guard,
                )
                parts.append({"PartNumber": number, "ETag": f'"{_etag(resp["CopyPartResult"]["ETag"])}"'})
            await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        return _head_entry(path, await client.head_object(Bucket=bucket, Key=key))
