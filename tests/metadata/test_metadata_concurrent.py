"""Uploads of one S3 key at the same moment, each with its own metadata (issue 13): the
metadata travels with its own upload's PUT or CreateMultipartUpload, never through a table
keyed by path, so whichever upload lands last, its bytes and its metadata are the record."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import AsyncPipeClient
from tests.support.storage import REMOTE, settings_of

MiB = 1 << 20


# One PUT each, and multipart each (5 MiB parts from 1 MiB: two parts), where a completion could
# otherwise see another upload's object in its HEAD and fail ours or remove theirs as unverified.
@pytest.mark.parametrize(("base", "uploads", "tuning"), [
    (200_000, 6, {}), (5 * MiB + 1, 3, {"part_size": 5 * MiB, "put_threshold": MiB}),
], ids=["put", "multipart"])
def test_concurrent_uploads_of_one_key_end_coherent(pd_env: dict[str, Path], s3_spec: dict[str, Any],
                                                    s3_client: Any, tmp_path: Path, base: int,
                                                    uploads: int, tuning: dict[str, int]) -> None:
    options = {**s3_spec["options"], **tuning}
    # Each upload held open about a second by its bandwidth limit: all of them are in flight at
    # once, so a hook keyed by path would hand one upload's metadata to another (or drop it).
    files = []
    for i in range(uploads):
        f = tmp_path / f"v{i}.bin"
        f.write_bytes(bytes([65 + i]) * (base + i))  # upload i: its own bytes and size
        files.append(f)
    bucket = s3_spec["root"].split("/")[0]

    async def main() -> dict[str, Any]:
        async with AsyncPipeClient(request_timeout_s=120) as c:
            await c.upsert_remote(settings_of(s3_spec, REMOTE, options=options))
            results = await asyncio.gather(*(
                c.upload(f, remote=REMOTE, key="same.bin", bwlimit_bps=base, title=f"title {i}",
                         alias=f"alias-{i}", tags=[f"v={i}"], metadata={"n": i})
                for i, f in enumerate(files)))
            assert len(results) == uploads
            return await c.get_metadata(REMOTE, "same.bin")

    got = asyncio.run(main())
    body = s3_client.get_object(Bucket=bucket, Key="same.bin")["Body"].read()
    i = body[0] - 65
    assert 0 <= i < uploads and body == files[i].read_bytes()
    head = s3_client.head_object(Bucket=bucket, Key="same.bin")
    assert head["Metadata"]["n"] == str(i), "the bytes of one upload, the metadata of another"
    assert head["Metadata"]["alias"] == f"alias-{i}"
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="same.bin")["TagSet"]
    assert tags == [{"Key": "v", "Value": str(i)}]
    assert (got["title"], got["alias"], got["tags"], got["metadata"]) == (
        f"title {i}", f"alias-{i}", [f"v={i}"], {"n": i})
    assert got["object"]["size"] == base + i
