"""Metadata beside the data, against the real servers: S3 natively (seen by boto3, read back
from what boto3 wrote), SFTP, FTP and local in the daemon's store; limits at N-1, N, N+1."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import DaemonError, InvalidSettingsError, NotFoundError, PipeClient
from tests.servers import BACKENDS
from tests.support.storage import REMOTE, get_spec, register

MiB = 1 << 20


def _file(tmp_path: Path, name: str = "a.csv", data: bytes = b"x,y\n1,2\n") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _upload(c: PipeClient, tmp_path: Path, key: str = "m/a.csv", **meta: Any) -> Any:
    return c.upload(_file(tmp_path), remote=REMOTE, key=key, **meta)


def _field_error(fn: Any) -> str:
    with pytest.raises(InvalidSettingsError) as info:
        fn()
    return info.value.data["field"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_upload_get_set_merge(client: PipeClient, request: pytest.FixtureRequest, tmp_path: Path,
                              backend: str) -> None:
    register(client, get_spec(request, backend))
    _upload(client, tmp_path, title="Raw data", description="two\nlines", alias="raw-1",
            tags=["csv", "site=north"], metadata={"rows": 2, "unit": "m"})
    got = client.get_metadata(REMOTE, "m/a.csv")
    assert (got["title"], got["description"], got["alias"]) == ("Raw data", "two\nlines", "raw-1")
    assert got["tags"] == ["csv", "site=north"] and got["metadata"] == {"rows": 2, "unit": "m"}
    assert got["stored_in"] == ("storage" if backend == "s3" else "daemon")
    assert got["object"]["size"] == 8

    merged = client.set_metadata(REMOTE, "m/a.csv", title="Raw data v2", tags=["csv"],
                                 metadata={"unit": None, "source": "sensor"})
    assert merged["title"] == "Raw data v2" and merged["alias"] == "raw-1" and merged["tags"] == ["csv"]
    assert merged["metadata"] == {"rows": 2, "source": "sensor"}
    assert client.get_metadata(REMOTE, "m/a.csv") == merged
    cleared = client.set_metadata(REMOTE, "m/a.csv", description=None, metadata=None)
    assert cleared["description"] is None and cleared["metadata"] == {} and cleared["title"] == "Raw data v2"

    with pytest.raises(NotFoundError):
        client.get_metadata(REMOTE, "m/missing.csv")
    with pytest.raises(NotFoundError):
        client.set_metadata(REMOTE, "m/missing.csv", title="x")


def test_s3_native_both_ways(client: PipeClient, s3_spec: dict[str, Any], s3_client: Any,
                             tmp_path: Path) -> None:
    register(client, s3_spec)
    bucket = s3_spec["root"].split("/")[0]
    up = _upload(client, tmp_path, key="n/a.csv", title="Données", tags=["csv"], metadata={"n": 3})
    head = s3_client.head_object(Bucket=bucket, Key="n/a.csv")
    assert head["Metadata"]["n"] == "3" and "title" in head["Metadata"]
    tagging = s3_client.get_object_tagging(Bucket=bucket, Key="n/a.csv")
    assert tagging["TagSet"] == [{"Key": "csv", "Value": ""}]

    out = client.set_metadata(REMOTE, "n/a.csv", description="set later", tags=["a=1", "b"])
    head = s3_client.head_object(Bucket=bucket, Key="n/a.csv")
    assert head["Metadata"]["description"] == "set later" and head["ETag"].strip('"') == up.etag
    tagging = s3_client.get_object_tagging(Bucket=bucket, Key="n/a.csv")
    tags = {t["Key"]: t["Value"] for t in tagging["TagSet"]}
    assert tags == {"a": "1", "b": ""}
    assert s3_client.get_object(Bucket=bucket, Key="n/a.csv")["Body"].read() == b"x,y\n1,2\n"
    assert out["title"] == "Données" and out["metadata"] == {"n": 3}, "the daemon's types survive"

    # Written by another tool: read back from S3, the daemon never wrote it.
    s3_client.put_object(Bucket=bucket, Key="n/other.csv", Body=b"1",
                         Metadata={"title": "by boto3", "k": "v"}, Tagging="team=geo&raw=")
    got = client.get_metadata(REMOTE, "n/other.csv")
    assert got["title"] == "by boto3" and got["metadata"] == {"k": "v"}
    assert sorted(got["tags"]) == ["raw", "team=geo"]
    # boto3 changes what the daemon wrote: S3 is the truth.
    s3_client.put_object_tagging(Bucket=bucket, Key="n/a.csv",
                                 Tagging={"TagSet": [{"Key": "z", "Value": ""}]})
    assert client.get_metadata(REMOTE, "n/a.csv")["tags"] == ["z"]


def test_s3_multipart_keeps_etag(client: PipeClient, s3_spec: dict[str, Any], s3_client: Any,
                                 tmp_path: Path) -> None:
    spec = {**s3_spec, "options": {**s3_spec["options"], "part_size": 5 * MiB, "put_threshold": 5 * MiB}}
    register(client, spec)
    bucket = s3_spec["root"].split("/")[0]
    data = hashlib.sha256(b"seed").digest() * (17 * MiB // 32)  # over the engine's parallel threshold
    up = client.upload(_file(tmp_path, "big.bin", data), remote=REMOTE, key="big.bin", chunk_size_mb=5,
                       tags=["big"])
    assert up.etag.endswith("-4")
    out = client.set_metadata(REMOTE, "big.bin", title="big one")
    head = s3_client.head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"].strip('"') == up.etag == out["object"]["etag"], "same parts, same ETag"
    assert head["Metadata"]["title"] == "big one" and head["ContentLength"] == len(data)
    assert client.get_metadata(REMOTE, "big.bin")["tags"] == ["big"]


def test_s3_uneven_parts_keep_etag(client: PipeClient, s3_spec: dict[str, Any], s3_client: Any) -> None:
    """Parts of another uploader's sizes (5, 6 and 1 MiB) are copied at their own boundaries."""
    register(client, s3_spec)
    bucket = s3_spec["root"].split("/")[0]
    up = s3_client.create_multipart_upload(Bucket=bucket, Key="uneven.bin")["UploadId"]
    parts = []
    for number, size in enumerate((5 * MiB, 6 * MiB, 1 * MiB), start=1):
        resp = s3_client.upload_part(Bucket=bucket, Key="uneven.bin", UploadId=up, PartNumber=number,
                                     Body=bytes([number]) * size)
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
    s3_client.complete_multipart_upload(Bucket=bucket, Key="uneven.bin", UploadId=up,
                                        MultipartUpload={"Parts": parts})
    etag = s3_client.head_object(Bucket=bucket, Key="uneven.bin")["ETag"]
    client.set_metadata(REMOTE, "uneven.bin", title="uneven")
    head = s3_client.head_object(Bucket=bucket, Key="uneven.bin")
    assert head["ETag"] == etag and head["Metadata"] == {"title": "uneven"}


def test_bad_fields_are_named(client: PipeClient, s3_spec: dict[str, Any], local_spec: dict[str, Any],
                              tmp_path: Path) -> None:
    register(client, s3_spec)
    register(client, local_spec, "loc")
    _upload(client, tmp_path)
    client.upload(_file(tmp_path), remote="loc", key="a.csv")
    s3 = lambda **f: client.set_metadata(REMOTE, "m/a.csv", **f)  # noqa: E731
    loc = lambda **f: client.set_metadata("loc", "a.csv", **f)  # noqa: E731
    assert _field_error(lambda: s3(colour="red")) == "colour"
    assert _field_error(lambda: s3(tags="csv")) == "tags"
    assert _field_error(lambda: s3(alias="has space")) == "alias"
    assert _field_error(lambda: s3(title="a\rb")) == "title"
    assert _field_error(lambda: s3(tags=["ok", "not#ok"])) == "tags[1]"
    assert _field_error(lambda: s3(tags=["a=1", "a=2"])) == "tags[1]"
    assert _field_error(lambda: s3(tags=["aws:x"])) == "tags[0]"
    assert _field_error(lambda: s3(metadata={"Upper": "x"})) == "metadata.Upper"
    assert _field_error(lambda: s3(metadata={"a b": "x"})) == "metadata.a b"
    assert _field_error(lambda: s3(metadata={"title": "x"})) == "metadata.title"
    assert _field_error(lambda: loc(tags=[""])) == "tags[0]"
    loc(tags=["not#ok", "Ünïcode ok"], metadata={"Upper": [1, 2]})  # the daemon's store holds these
    # Refused before the upload starts: nothing is written.
    with pytest.raises(InvalidSettingsError) as info:
        _upload(client, tmp_path, key="m/never.csv", tags=["x"] * 2)
    assert info.value.data["field"] == "tags[1]"
    with pytest.raises(NotFoundError):
        client.get_metadata(REMOTE, "m/never.csv")
    assert client.get_metadata(REMOTE, "m/a.csv")["tags"] == [], "refused updates changed nothing"


def _at_limit(set_: Any, field: str, n: int, make: Any) -> None:
    """N-1 and N are held, N+1 is 1003 naming ``field``."""
    set_(make(n - 1))
    set_(make(n))
    with pytest.raises(InvalidSettingsError) as info:
        set_(make(n + 1))
    assert info.value.data["field"] == field


def test_s3_limits(client: PipeClient, s3_spec: dict[str, Any], tmp_path: Path) -> None:
    register(client, s3_spec)
    _upload(client, tmp_path)

    def put(fields: dict[str, Any]) -> None:
        client.set_metadata(REMOTE, "m/a.csv", **fields)

    _at_limit(put, "tags", 10, lambda n: {"tags": [f"t{i}" for i in range(n)]})
    _at_limit(put, "tags[0]", 128, lambda n: {"tags": ["k" * n]})
    _at_limit(put, "tags[0]", 256, lambda n: {"tags": ["k=" + "v" * n]})
    put({"tags": [], "title": None})
    # 2 KiB of user metadata: name "blob" (4 bytes) + its value.
    _at_limit(put, "metadata", 2048, lambda n: {"metadata": {"blob": "v" * (n - 4)}})
    put({"metadata": None})
    # The title is user metadata too: "title" (5 bytes) + its text.
    _at_limit(put, "title", 2048, lambda n: {"title": "t" * (n - 5)})
    assert client.get_metadata(REMOTE, "m/a.csv")["metadata"] == {}


def test_s3_meta_key_length(client: PipeClient, s3_spec: dict[str, Any], tmp_path: Path) -> None:
    register(client, s3_spec)
    _upload(client, tmp_path)
    for n in (127, 128):
        client.set_metadata(REMOTE, "m/a.csv", metadata={"k" * n: "v"})
        client.set_metadata(REMOTE, "m/a.csv", metadata=None)
    with pytest.raises(InvalidSettingsError) as info:
        client.set_metadata(REMOTE, "m/a.csv", metadata={"k" * 129: "v"})
    assert info.value.data["field"] == "metadata." + "k" * 129


def test_store_limits(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path) -> None:
    register(client, local_spec)
    _upload(client, tmp_path)

    def put(fields: dict[str, Any]) -> None:
        client.set_metadata(REMOTE, "m/a.csv", **fields)

    _at_limit(put, "tags", 100, lambda n: {"tags": [f"t{i}" for i in range(n)]})
    _at_limit(put, "tags[0]", 256, lambda n: {"tags": ["k" * n]})
    _at_limit(put, "tags[0]", 256, lambda n: {"tags": ["k=" + "v" * n]})
    _at_limit(put, "title", 1024, lambda n: {"title": "t" * n})
    _at_limit(put, "alias", 128, lambda n: {"alias": "a" * n})
    _at_limit(put, "description", 16384, lambda n: {"description": "d" * n})
    # 64 KiB of free metadata as JSON: {"b":"..."} is 8 bytes around the value.
    _at_limit(put, "metadata", 65536, lambda n: {"metadata": {"b": "v" * (n - 8)}})
    _at_limit(put, "metadata." + "k" * 257, 256, lambda n: {"metadata": {"b": None, "k" * n: 1}})


def test_pipe_file_metadata(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path) -> None:
    register(client, local_spec)
    client.update_profile_config({"filerepo": str(tmp_path / "repo")})
    client.upsert_pipe({"name": "p", "remote": REMOTE, "options": {"dir": "pd"}})
    pipe = client.pipe("p")
    (pipe.dirpath / "f.csv").parent.mkdir(parents=True, exist_ok=True)
    (pipe.dirpath / "f.csv").write_text("1\n")
    pipe.push()
    out = pipe.set_metadata("f.csv", title="pipe file", tags=["p"])
    assert out["pipe"] == "p" and out["key"] == "pd/f.csv"
    assert client.get_metadata(REMOTE, "pd/f.csv")["title"] == "pipe file"
    assert pipe.get_metadata("f.csv")["tags"] == ["p"]
    with pytest.raises(NotFoundError):
        pipe.get_metadata("not-pushed.csv")
    # Deleting the object through the daemon takes its metadata along.
    client.call("object.delete", {"remote": REMOTE, "key": "pd/f.csv"})
    client.upload(_file(tmp_path, "f.csv", b"2\n"), remote=REMOTE, key="pd/f.csv")
    assert client.get_metadata(REMOTE, "pd/f.csv")["title"] is None


def test_wrong_types_are_refused(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path) -> None:
    register(client, local_spec)
    _upload(client, tmp_path)
    with pytest.raises(DaemonError) as info:
        client.call("object.set_metadata", {"remote": REMOTE, "key": "m/a.csv", "fields": {"tags": [1]}})
    assert info.value.code == 1003 and info.value.data["field"] == "tags[0]"


def test_async_client(pd_env: dict[str, Path], local_spec: dict[str, Any], tmp_path: Path) -> None:
    import asyncio

    from pipedaemon_sdk import AsyncPipeClient

    async def main() -> None:
        async with AsyncPipeClient() as c:
            await c.upsert_remote({"name": REMOTE, "protocol": "local", "options": local_spec["options"]})
            await c.upload(_file(tmp_path), remote=REMOTE, key="a.csv", tags=["x"])
            rec = await c.set_metadata(REMOTE, "a.csv", title="async")
            assert rec["tags"] == ["x"] and (await c.get_metadata(REMOTE, "a.csv"))["title"] == "async"
            assert (await c.auth_status(REMOTE))["can_write"] is True
            await c.shutdown()

    asyncio.run(main())
