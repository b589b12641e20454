"""Checks that a transfer delivered the source's exact bytes, so a fast wrong tool cannot win."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

MiB = 1 << 20


class VerifyError(AssertionError):
    pass


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_file(path: Path, want_sha: str) -> None:
    if not path.is_file():
        raise VerifyError(f"{path} was not written")
    if sha256(path) != want_sha:
        raise VerifyError(f"{path}: content differs from the source")


def check_tree(folder: Path, want: dict[str, str]) -> None:
    got = {p.name: p for p in folder.rglob("*") if p.is_file()}
    if set(got) != set(want):
        raise VerifyError(f"{folder}: {len(got)} files, expected {len(want)}")
    for name, path in got.items():
        if hashlib.md5(path.read_bytes()).hexdigest() != want[name]:
            raise VerifyError(f"{path}: content differs from the source")


def check_s3_big(b: Any, key: str) -> None:
    """Size, then the ETag recomputed from the source for the part size the uploader used."""
    head = b.s3.boto3_client().head_object(Bucket=b.bucket, Key=key)
    if head["ContentLength"] != b.sizes.big:
        raise VerifyError(f"s3://{b.bucket}/{key}: {head['ContentLength']} bytes, expected {b.sizes.big}")
    etag = head["ETag"].strip('"')
    if "-" not in etag:
        if hashlib.md5(b.big.read_bytes()).hexdigest() != etag:
            raise VerifyError(f"s3://{b.bucket}/{key}: ETag differs from the source's md5")
        return
    nparts = int(etag.split("-")[1])
    common = [8, 16, 5, 10, 50, 64, 32, 100, 128]
    sizes = [p * MiB for p in common] + [p * MiB for p in range(5, 5121) if p not in common]
    for part in sizes:
        if -(-b.sizes.big // part) == nparts:
            digests = b.part_md5s(part)
            if f"{hashlib.md5(b''.join(digests)).hexdigest()}-{nparts}" == etag:
                return
    raise VerifyError(f"s3://{b.bucket}/{key}: ETag {etag} matches no part size of the source")


def check_s3_many(b: Any, prefix: str) -> None:
    want = b.many_md5
    got = {}
    pages = b.s3.boto3_client().get_paginator("list_objects_v2").paginate(Bucket=b.bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            got[obj["Key"][len(prefix):]] = (obj["Size"], obj["ETag"].strip('"'))
    if set(got) != set(want):
        raise VerifyError(f"s3://{b.bucket}/{prefix}: {len(got)} objects, expected {len(want)}")
    for name, (size, etag) in got.items():
        if size != b.sizes.many_size or etag != want[name]:
            raise VerifyError(f"s3://{b.bucket}/{prefix}{name}: size or ETag differs from the source")


def s3_delete_prefix(b: Any, prefix: str) -> None:
    client = b.s3.boto3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=b.bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=b.bucket, Delete={"Objects": keys, "Quiet": True})
