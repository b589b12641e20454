"""Uploads of one S3 key at the same moment, each with its own metadata (issue 13): the
metadata travels with its own upload's PUT or CreateMultipartUpload, never through a table
keyed by path, so whichever upload lands last, its bytes and its metadata are the record."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipedaemon_sdk import AsyncPipeClient
from tests.storage_helpers import REMOTE, settings_of

UPLOADS = 6


def test_concurrent_uploads_of_one_key_end_coherent(pd_env: dict[str, Path], s3_spec: dict[str, Any],
                                                    s3_client: Any, tmp_path: Path) -> None:
    options = dict(s3_spec["options"])
    # Each upload held open about a second by its bandwidth limit: all of them are in flight at
    # once, so a hook keyed by path would hand one upload's metadata to another (or drop it).
    base = 200_000
    files = []
    for i in range(UPLOADS):
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
            assert len(results) == UPLOADS
            return await c.get_metadata(REMOTE, "same.bin")

    got = asyncio.run(main())
    body = s3_client.get_object(Bucket=bucket, Key="same.bin")["Body"].read()
    i = body[0] - 65
    assert 0 <= i < UPLOADS and body == files[i].read_bytes()
    head = s3_client.head_object(Bucket=bucket, Key="same.bin")
    assert head["Metadata"]["n"] == str(i), "the bytes of one upload, the metadata of another"
    assert head["Metadata"]["alias"] == f"alias-{i}"
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="same.bin")["TagSet"]
    assert tags == [{"Key": "v", "Value": str(i)}]
    assert (got["title"], got["alias"], got["tags"], got["metadata"]) == (
        f"title {i}", f"alias-{i}", [f"v={i}"], {"n": i})
    assert got["object"]["size"] == base + i
