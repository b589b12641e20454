"""S3Backend against a real moto_server: what only S3 has (pages, multipart, buckets, ETags)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pipedaemon.backends.base import Entry, Multipart, Rename, ServerCopy, TransientError, backend_class
from pipedaemon.backends.s3 import READ_CHUNK, S3Backend, parse_timestamp
from pipedaemon.transfer import upload_stream
from pipedaemon_sdk.errors import (
    AuthFailedError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)
from tests.servers.s3 import RequestLog, S3Server, new_bucket_name, spec_for

MiB = 1024 * 1024
Factory = Callable[..., Awaitable[S3Backend]]


async def collect(items: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in items]


async def stream(data: bytes, step: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i:i + step]


def multipart_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(digests).hexdigest()}-{math.ceil(len(data) / part)}"


@pytest.fixture
async def make_backend() -> AsyncIterator[Factory]:
    """Connected S3Backends from a spec (plus option overrides); closed after the test."""
    made: list[S3Backend] = []

    async def make(spec: dict[str, Any], credentials: dict[str, Any] | None = None,
                   connect: bool = True, **options: Any) -> S3Backend:
        backend = S3Backend({**spec["options"], **options},
                            spec["credentials"] if credentials is None else credentials, max_streams=4)
        made.append(backend)
        if connect:
            await backend.connect()
        return backend

    yield make
    for backend in made:
        await backend.close()


def test_boto3_smoke(s3_client: Any, s3_spec: dict[str, Any]) -> None:
    bucket = s3_spec["root"].rstrip("/")
    s3_client.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello moto")
    assert s3_client.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello moto"
    assert s3_spec["options"]["remotepath"] == f"s3://{bucket}/"


def test_registry_names_s3() -> None:
    assert backend_class("s3") is S3Backend
    assert issubclass(S3Backend, Multipart) and issubclass(S3Backend, ServerCopy)
    assert not issubclass(S3Backend, Rename)


async def test_list_1001_objects_in_small_pages(s3_client: Any, s3_spec: dict[str, Any],
                                                make_backend: Factory, s3_request_log: RequestLog) -> None:
    bucket = s3_spec["root"].rstrip("/")
    names = {f"many/f{i:04d}.txt" for i in range(1001)}
    for name in names:
        s3_client.put_object(Bucket=bucket, Key=name, Body=name.encode())
    s3_client.put_object(Bucket=bucket, Key="many/sub/deeper.txt", Body=b"x")
    backend = await make_backend(s3_spec, list_page_size=100)
    s3_request_log.reset()

    entries = await collect(backend.list(s3_spec["root"] + "many"))
    assert {e.name for e in entries} == {n.removeprefix("many/") for n in names} | {"sub/deeper.txt"}
    assert all(e.size == len(e.name) + 5 and e.etag and e.mtime for e in entries if e.name[0] == "f")
    assert s3_request_log.count("GET", "list-type=2") == 11  # 1,002 keys / 100 per page

    shallow = await collect(backend.list(s3_spec["root"] + "many/", recursive=False))
    assert len(shallow) == 1002
    assert [e for e in shallow if e.is_dir] == [Entry(name="sub", is_dir=True)]
    assert await collect(backend.list(s3_spec["root"] + "nothing-here/")) == []


async def test_ranged_read_streams_in_chunks(s3_spec: dict[str, Any], make_backend: Factory) -> None:
    backend = await make_backend(s3_spec)
    data = os.urandom(3 * MiB + 17)
    path = s3_spec["root"] + "blob.bin"
    entry = await backend.write(path, stream(data), len(data))
    assert entry.size == len(data) and entry.etag == hashlib.md5(data).hexdigest()

    assert b"".join(await collect(backend.read(path, 1000, 5000))) == data[1000:6000]
    assert b"".join(await collect(backend.read(path, len(data) - 10))) == data[-10:]
    assert await collect(backend.read(path, len(data))) == []
    assert await collect(backend.read(path, 5, 0)) == []
    chunks = await collect(backend.read(path))
    assert b"".join(chunks) == data and max(map(len, chunks)) <= READ_CHUNK


async def test_small_write_is_one_put(s3_spec: dict[str, Any], make_backend: Factory,
                                      s3_request_log: RequestLog) -> None:
    backend = await make_backend(s3_spec)
    s3_request_log.reset()
    entry = await backend.write(s3_spec["root"] + "a/b/small.txt", stream(b"small" * 100))
    assert entry.etag == hashlib.md5(b"small" * 100).hexdigest() and entry.size == 500
    assert [m for m, p in s3_request_log.entries() if "uploads" in p or "uploadId" in p] == []
    assert s3_request_log.count("PUT") == 1


async def test_write_is_exactly_one_put(s3_spec: dict[str, Any], make_backend: Factory,
                                        s3_request_log: RequestLog) -> None:
    """Above put_threshold too: parts are the engine's decision, never write()'s."""
    backend = await make_backend(s3_spec, part_size=5 * MiB, put_threshold=5 * MiB)
    data = os.urandom(6 * MiB)
    s3_request_log.reset()
    entry = await backend.write(s3_spec["root"] + "six.bin", stream(data, MiB), len(data))
    assert entry.etag == hashlib.md5(data).hexdigest() and entry.size == len(data)
    assert s3_request_log.count("PUT") == 1
    with pytest.raises(StorageError, match="5 GiB"):
        await backend.write(s3_spec["root"] + "huge.bin", stream(b""), 5 * 1024 * MiB + 1)


async def test_multipart_write_has_md5_of_md5s_etag(s3_client: Any, s3_spec: dict[str, Any],
                                                    make_backend: Factory,
                                                    s3_request_log: RequestLog) -> None:
    backend = await make_backend(s3_spec, part_size=5 * MiB, put_threshold=5 * MiB)
    data = os.urandom(12 * MiB)
    path = s3_spec["root"] + "big/twelve.bin"
    s3_request_log.reset()
    entry = await upload_stream(backend, stream(data, 1000 * 1000), path, len(data))  # the engine's parts
    assert entry.etag == multipart_etag(data, 5 * MiB) and entry.etag.endswith("-3")
    assert entry.size == len(data)
    assert s3_request_log.count("PUT", "partNumber=") == 3
    assert b"".join(await collect(backend.read(path))) == data
    bucket = s3_spec["root"].rstrip("/")
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_failed_stream_aborts_the_upload(s3_client: Any, s3_spec: dict[str, Any],
                                               make_backend: Factory) -> None:
    backend = await make_backend(s3_spec, part_size=5 * MiB, put_threshold=5 * MiB)

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(6 * MiB)
        yield os.urandom(6 * MiB)
        raise OSError("local disk went away")

    path = s3_spec["root"] + "broken.bin"
    with pytest.raises(OSError, match="went away"):
        await upload_stream(backend, broken(), path, 18 * MiB)
    bucket = s3_spec["root"].rstrip("/")
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(NotFoundError):
        await backend.stat(path)


async def test_cancelled_write_aborts_the_upload(s3_client: Any, s3_spec: dict[str, Any],
                                                 make_backend: Factory) -> None:
    backend = await make_backend(s3_spec, part_size=5 * MiB, put_threshold=5 * MiB)
    in_multipart = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(6 * MiB)
        in_multipart.set()  # asked for more: the upload exists and part 1 is on its way
        await asyncio.Event().wait()
        yield b""

    bucket = s3_spec["root"].rstrip("/")
    task = asyncio.create_task(upload_stream(backend, stalls(), s3_spec["root"] + "stalled.bin", 12 * MiB))
    await in_multipart.wait()
    assert len(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_mp_parts_complete_and_abort(s3_client: Any, s3_spec: dict[str, Any],
                                           make_backend: Factory) -> None:
    backend = await make_backend(s3_spec)
    path = s3_spec["root"] + "parts/x.bin"
    p1, p2, p3 = os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"
    upload = await backend.mp_create(path)
    e2 = await backend.mp_upload_part(path, upload, 2, p2)
    e1 = await backend.mp_upload_part(path, upload, 1, p1)
    assert e1 == hashlib.md5(p1).hexdigest()
    assert await backend.mp_parts(path, upload) == {1: (e1, len(p1)), 2: (e2, len(p2))}
    e3 = await backend.mp_upload_part(path, upload, 3, p3)
    entry = await backend.mp_complete(path, upload, [(3, e3), (1, e1), (2, e2)])
    assert entry.size == len(p1 + p2 + p3) and entry.etag == multipart_etag(p1 + p2 + p3, 5 * MiB)
    assert b"".join(await collect(backend.read(path))) == p1 + p2 + p3

    upload = await backend.mp_create(path + ".2")
    await backend.mp_upload_part(path + ".2", upload, 1, b"abc")
    await backend.mp_abort(path + ".2", upload)
    bucket = s3_spec["root"].rstrip("/")
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(NotFoundError):
        await backend.mp_parts(path + ".2", upload)
    await backend.mp_abort(path + ".2", upload)  # aborting twice is fine


async def test_copy_single_and_multipart(s3_spec: dict[str, Any], make_backend: Factory,
                                         s3_request_log: RequestLog) -> None:
    backend = await make_backend(s3_spec, copy_threshold=6 * MiB, copy_part_size=5 * MiB)
    root = s3_spec["root"]
    small = b"copy me"
    await backend.write(root + "src/small.txt", stream(small))
    entry = await backend.copy(root + "src/small.txt", root + "dst/small copy.txt")
    assert entry.size == len(small) and entry.etag == hashlib.md5(small).hexdigest()
    assert b"".join(await collect(backend.read(root + "dst/small copy.txt"))) == small

    big = os.urandom(12 * MiB)
    await backend.write(root + "src/big.bin", stream(big, MiB))
    s3_request_log.reset()
    entry = await backend.copy(root + "src/big.bin", root + "dst/big.bin")
    assert entry.size == len(big) and entry.etag == multipart_etag(big, 5 * MiB)
    assert s3_request_log.count("PUT", "partNumber=") == 3  # UploadPartCopy, no data through us
    assert s3_request_log.count("GET") == 0
    assert b"".join(await collect(backend.read(root + "dst/big.bin"))) == big
    with pytest.raises(NotFoundError):
        await backend.copy(root + "src/none", root + "dst/none")


async def test_names_with_spaces_and_unicode(s3_spec: dict[str, Any], make_backend: Factory) -> None:
    backend = await make_backend(s3_spec)
    root = s3_spec["root"]
    name = "dir with space/ünïcødé 名前 +%&=?#;.csv"
    await backend.write(root + name, stream(b"a,b\n1,2\n"))
    assert (await backend.stat(root + name)).size == 8
    listed = await collect(backend.list(root))
    assert [e.name for e in listed] == [name]
    assert [e.name for e in await collect(backend.list(root, recursive=False))] == ["dir with space"]
    assert (await backend.stat(root + "dir with space")).is_dir
    await backend.copy(root + name, root + name + " copy")
    assert b"".join(await collect(backend.read(root + name + " copy"))) == b"a,b\n1,2\n"
    await backend.delete(root + name)
    with pytest.raises(NotFoundError):
        await backend.delete(root + name)
    with pytest.raises(NotFoundError):
        await backend.stat(root + name)


async def test_missing_bucket_is_not_found(s3_spec: dict[str, Any], make_backend: Factory) -> None:
    missing = new_bucket_name("missing")
    spec = {**s3_spec, "options": {**s3_spec["options"], "remotepath": f"s3://{missing}/x/"}}
    with pytest.raises(NotFoundError):
        await make_backend(spec)
    backend = await make_backend(s3_spec)
    with pytest.raises(NotFoundError):
        await collect(backend.list(f"{missing}/"))
    with pytest.raises(NotFoundError):
        await collect(backend.read(f"{missing}/a"))
    with pytest.raises(NotFoundError):
        await backend.write(f"{missing}/a", stream(b"x"))
    with pytest.raises(NotFoundError) as info:
        await backend.stat(f"{missing}/a")
    assert info.value.data["path"] == f"{missing}/a"


async def test_buckets_mkdir_and_rmdir(s3_client: Any, make_backend: Factory,
                                       s3_spec: dict[str, Any]) -> None:
    backend = await make_backend(s3_spec)
    bucket = new_bucket_name("mk")
    await backend.mkdir(bucket)
    await backend.mkdir(bucket + "/")  # exists: fine
    await backend.mkdir(bucket + "/some/folder")  # no folders on S3: nothing happens
    assert bucket in await backend.list_buckets()
    assert Entry(name=bucket, is_dir=True) in await collect(backend.list("", recursive=False))
    assert (await backend.stat(bucket)).is_dir
    await backend.write(f"{bucket}/keep.txt", stream(b"keep"))

    with pytest.raises(StorageError, match="bucket not empty") as info:
        await backend.rmdir(bucket)
    assert type(info.value) is StorageError
    assert s3_client.get_object(Bucket=bucket, Key="keep.txt")["Body"].read() == b"keep"
    await backend.rmdir(f"{bucket}/some/folder")  # a no-op inside a bucket
    assert [e.name for e in await collect(backend.list(bucket))] == ["keep.txt"]

    await backend.delete(f"{bucket}/keep.txt")
    await backend.rmdir(bucket + "/")
    assert bucket not in await backend.list_buckets()
    with pytest.raises(NotFoundError):
        await backend.rmdir(bucket)


async def test_wrong_keys_fail_auth(s3_auth_server: S3Server, make_backend: Factory) -> None:
    bucket = new_bucket_name("auth")
    s3_auth_server.boto3_client().create_bucket(Bucket=bucket)
    spec = spec_for(s3_auth_server, bucket)
    good = await make_backend(spec)
    await good.write(f"{bucket}/secret.txt", stream(b"42"))
    assert all(secret not in good.describe() for secret in spec["credentials"].values())

    wrong_secret = {**spec["credentials"], "aws_secret_access_key": "not-the-secret"}
    unknown_key = {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00", "aws_secret_access_key": "x"}
    for creds in (wrong_secret, unknown_key):
        with pytest.raises(AuthFailedError):
            await make_backend(spec, credentials=creds)
        bad = await make_backend(spec, credentials=creds, connect=False)
        bad._verify = _no_verify  # type: ignore[method-assign]  # open without the check
        await bad.connect()
        with pytest.raises(AuthFailedError):
            await collect(bad.read(f"{bucket}/secret.txt"))
        with pytest.raises(AuthFailedError):
            await bad.stat(f"{bucket}/secret.txt")  # HEAD has no error body: re-asked by GET
        with pytest.raises(AuthFailedError):
            await collect(bad.list(f"{bucket}/"))


async def _no_verify() -> None:
    return None


async def test_denied_is_permission_error(s3_auth_server: S3Server, make_backend: Factory) -> None:
    bucket = new_bucket_name("deny")
    admin = s3_auth_server.boto3_client()
    admin.create_bucket(Bucket=bucket)
    iam = s3_auth_server.boto3_client("iam")
    user = new_bucket_name("reader")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(UserName=user, PolicyName="list-only", PolicyDocument=(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket",'
        '"Resource":"*"}]}'))
    creds = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    backend = await make_backend(spec_for(s3_auth_server, bucket), credentials=creds)
    with pytest.raises(PermissionDeniedError):
        await backend.write(f"{bucket}/nope.txt", stream(b"x"))


async def test_unreachable_endpoint_is_transient(make_backend: Factory) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = {"options": {"endpoint_url": f"http://127.0.0.1:{port}", "remotepath": "s3://b/",
                        "connect_timeout": 2},
            "credentials": {"aws_access_key_id": "k", "aws_secret_access_key": "s"}}
    with pytest.raises(TransientError):
        await make_backend(spec)


@pytest.mark.parametrize("value", ["2009-10-12T17:50:30.000Z", "2026-12-01T18:00:00Z",
                                   "2009-10-12T17:50:30.12Z", "2009-10-12T17:50:30.123456Z",
                                   "Wed, 21 Oct 2015 07:28:00 GMT", "1445412480",
                                   "2015-10-21T07:28:00+02:00"])
def test_timestamps_parse_as_botocore_parses_them(value: str) -> None:
    import botocore.utils

    assert parse_timestamp(value).timestamp() == botocore.utils.parse_timestamp(value).timestamp()


async def test_listing_and_head_times_agree(s3_spec: dict[str, Any], make_backend: Factory) -> None:
    """The fast timestamp parser is the one the client uses: a listing's and a HEAD's mtime agree."""
    b = await make_backend(s3_spec)
    root = s3_spec["root"]
    await b.write(root + "t.txt", stream(b"x"))
    listed = {e.name: e for e in await collect(b.list(root))}["t.txt"]
    head = await b.stat(root + "t.txt")
    assert listed.mtime is not None and head.mtime is not None
    assert abs(listed.mtime - head.mtime) < 1.0  # the listing has milliseconds, the header seconds


def uploads_left(s3_client: Any, bucket: str) -> list[str]:
    return [u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@contextlib.asynccontextmanager
async def proxied(s3_spec: dict[str, Any], make_backend: Factory,
                  faults: dict[int, tuple[Any, ...]]) -> AsyncIterator[tuple[S3Backend, Any]]:
    """A backend reaching moto through a fault proxy that gives connection n ``faults[n]``.
    moto closes every connection, so each request (and each botocore retry) is one of its own;
    connection 0 is connect()'s listing."""
    from tests.support.faultproxy import FaultProxy

    port = int(s3_spec["options"]["endpoint_url"].rsplit(":", 1)[1])
    with FaultProxy(port, lambda n: faults.get(n, ("pass",))) as proxy:
        yield await make_backend(s3_spec, endpoint_url=f"http://127.0.0.1:{proxy.port}"), proxy


async def test_stray_uploads_are_aborted_even_when_the_first_sweep_is_cut(
        s3_spec: dict[str, Any], make_backend: Factory, s3_client: Any) -> None:
    """After a CreateMultipartUpload whose answer was lost, the other uploads of the key are
    swept; found by the soak: one cut sweep left such an upload for good."""
    bucket = s3_spec["root"].rstrip("/")
    s3_client.create_multipart_upload(Bucket=bucket, Key="big.bin")
    cut = {n: ("reset_after", 1) for n in (1, 2, 3, 4)}  # the sweep's listing and botocore's retries
    async with proxied(s3_spec, make_backend, cut) as (b, proxy):
        assert await b._abort_strays(bucket, "big.bin") == 1
        assert len(proxy.fired) == len(cut)
    assert uploads_left(s3_client, bucket) == []


async def test_stray_uploads_are_aborted_even_when_their_abort_is_refused_for_a_while(
        s3_spec: dict[str, Any], make_backend: Factory, s3_client: Any) -> None:
    """An abort answered 500 (and botocore's retry of it too) is tried again with the sweep;
    found by the soak: the sweep took any error of an abort for "gone already"."""
    bucket = s3_spec["root"].rstrip("/")
    s3_client.create_multipart_upload(Bucket=bucket, Key="big.bin")
    refused = {n: ("http_status", 500) for n in (2, 3)}  # 1: the sweep's listing; 2, 3: the abort, its retry
    async with proxied(s3_spec, make_backend, refused) as (b, proxy):
        assert await b._abort_strays(bucket, "big.bin") == 1
        assert len(proxy.fired) == len(refused)
    assert uploads_left(s3_client, bucket) == []


LOST_CREATE = {1: ("reset_after", 1)}  # the first answer to CreateMultipartUpload: botocore retries


async def test_a_stray_the_server_makes_late_is_aborted_when_the_upload_completes(
        s3_spec: dict[str, Any], make_backend: Factory, s3_client: Any) -> None:
    """The create's first answer is lost: the other uploads of the key are swept at once and
    again when ours completes, for a lost create the server carried out only after the first
    sweep (here made by hand in between)."""
    bucket = s3_spec["root"].rstrip("/")
    path = s3_spec["root"] + "late.bin"
    async with proxied(s3_spec, make_backend, LOST_CREATE) as (b, proxy):
        ours = await b.mp_create(path)
        assert len(proxy.fired) == 1
        s3_client.create_multipart_upload(Bucket=bucket, Key="late.bin")
        await b.mp_complete(path, ours, [(1, await b.mp_upload_part(path, ours, 1, b"abc"))])
    assert uploads_left(s3_client, bucket) == []
    assert s3_client.get_object(Bucket=bucket, Key="late.bin")["Body"].read() == b"abc"


async def test_a_clean_create_sweeps_nothing(s3_spec: dict[str, Any], make_backend: Factory,
                                            s3_client: Any) -> None:
    """Without a lost answer, another upload of the same key (another program's) is left alone."""
    bucket = s3_spec["root"].rstrip("/")
    theirs = s3_client.create_multipart_upload(Bucket=bucket, Key="shared.bin")["UploadId"]
    b = await make_backend(s3_spec)
    path = s3_spec["root"] + "shared.bin"
    ours = await b.mp_create(path)
    await b.mp_complete(path, ours, [(1, await b.mp_upload_part(path, ours, 1, b"abc"))])
    assert uploads_left(s3_client, bucket) == [theirs]


async def test_the_janitor_aborts_a_stray_that_lands_after_the_upload_completed(
        s3_spec: dict[str, Any], make_backend: Factory, s3_client: Any) -> None:
    """Found by the soak: a lost create held by the network reached the server seconds after
    our upload had completed. tidy() (the janitor's sweep) aborts it, and never one of our
    own uploads still in flight."""
    bucket = s3_spec["root"].rstrip("/")
    path = s3_spec["root"] + "landed.bin"
    async with proxied(s3_spec, make_backend, LOST_CREATE) as (b, _):
        first = await b.mp_create(path)
        await b.mp_complete(path, first, [(1, await b.mp_upload_part(path, first, 1, b"abc"))])
        s3_client.create_multipart_upload(Bucket=bucket, Key="landed.bin")
        again = await b.mp_create(path)  # the next upload of that key, in flight during the sweep
        assert await b.tidy() == 1
        assert uploads_left(s3_client, bucket) == [again]
        await b.mp_abort(path, again)
        assert await b.tidy() == 0


async def test_open_read_is_one_get_with_the_stat_entry(s3_spec: dict[str, Any], make_backend: Factory,
                                                        s3_request_log: RequestLog) -> None:
    """object.read's first request: the GET's headers give the entry a HEAD would (no HEAD)."""
    backend = await make_backend(s3_spec)
    data = os.urandom(100_003)
    path = s3_spec["root"] + "d/obj.bin"
    await backend.write(path, stream(data), len(data))
    await backend.write(s3_spec["root"] + "empty.bin", stream(b""), 0)
    want = await backend.stat(path)
    for offset, length, part in [(0, None, data), (10, 100, data[10:110]), (99_990, None, data[99_990:]),
                                 (99_990, 1000, data[99_990:])]:
        s3_request_log.reset()
        entry, body = await backend.open_read(path, offset, length)
        assert entry == want and body is not None
        assert b"".join(await collect(body)) == part
        assert [m for m, _ in s3_request_log.entries()] == ["GET"]
    # what a GET cannot answer is the stat's: past the end, nothing asked, empty, a folder, missing
    for offset, length in [(len(data), None), (len(data) + 5, 10), (0, 0)]:
        assert await backend.open_read(path, offset, length) == (want, None)
    entry, body = await backend.open_read(s3_spec["root"] + "empty.bin")
    assert entry.size == 0 and b"".join(await collect(body or backend.read(path, 0, 0))) == b""
    assert (await backend.open_read(s3_spec["root"] + "d"))[0].is_dir
    with pytest.raises(NotFoundError):
        await backend.open_read(s3_spec["root"] + "nothing.bin")
