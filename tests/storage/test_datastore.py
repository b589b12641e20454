"""The bucket connector end to end: SDK -> daemon -> every backend's real server."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import random
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import AsyncPipeClient, PipeClient
from pipedaemon_sdk import errors as E
from pipedaemon_sdk.wire import DownloadResult, ObjectInfo, UploadResult
from tests.servers.s3 import RequestLog
from tests.support.spine import sparse_file, zeros_digest
from tests.support.storage import REMOTE, ensure_bucket, new_bucket_name, register, rss_peak_kib

MiB = 1 << 20
OLD_MTIME = 1_600_000_000  # a whole second: every backend can keep it


def rand(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def store(client: PipeClient, spec: dict[str, Any]) -> tuple[PipeClient, dict[str, Any], Any]:
    """The remote registered, and one existing bucket of it."""
    register(client, spec)
    return client, spec, client.datastore(REMOTE).get_bucket(ensure_bucket(client, spec))


# -- buckets -----------------------------------------------------------------------------------
def test_buckets(client: PipeClient, spec: dict[str, Any]) -> None:
    register(client, spec)
    ds = client.datastore(REMOTE)
    name = new_bucket_name()
    assert ds.bucket_exists(name) is False
    assert ds.create_bucket(name) is True
    assert ds.bucket_exists(name) is True
    assert name in ds.list() and name in ds.list(return_type="str").split(",")
    assert name in [b.name for b in ds.get_buckets()]
    with pytest.raises(E.AlreadyExistsError) as err:
        ds.create_bucket(name)
    assert err.value.code == 1002
    assert ds.remove_bucket(name) is True
    assert ds.bucket_exists(name) is False and name not in ds.list()
    with pytest.raises(E.NotFoundError):
        ds.remove_bucket(name)


def test_remove_bucket_holding_only_empty_folders(client: PipeClient, spec: dict[str, Any]) -> None:
    register(client, spec)
    ds = client.datastore(REMOTE)
    name = new_bucket_name()
    ds.create_bucket(name)
    b = ds.get_bucket(name)
    b.put("sub/deeper/x.txt", b"x", 1)
    b.delete("sub/deeper/x.txt")  # folders may stay behind on folder storage; no object does
    assert b.list() == []
    assert ds.remove_bucket(name) is True
    assert ds.bucket_exists(name) is False


def test_remove_bucket_not_empty(store: tuple[PipeClient, dict[str, Any], Any]) -> None:
    client, _spec, _ = store
    ds = client.datastore(REMOTE)
    name = new_bucket_name()
    ds.create_bucket(name)
    b = ds.get_bucket(name)
    b.put("deep/keep.txt", b"keep me", 7)
    with pytest.raises(E.DaemonError) as err:
        ds.remove_bucket(name)
    assert "not empty" in err.value.message and "nothing was removed" in err.value.message
    assert ds.bucket_exists(name)
    assert b.get("deep/keep.txt").read() == b"keep me"


# -- objects -----------------------------------------------------------------------------------
def test_put_get_list_stat_delete(store: tuple[PipeClient, dict[str, Any], Any], tmp_path: Path) -> None:
    _client, _spec, b = store
    one, two = rand(5000, 1), rand(70_000, 2)
    b.put("2024/one.csv", one, len(one))
    b.put("2024/deep/two.bin", io.BytesIO(two), len(two))  # a file object
    b.put("top-2023.txt", b"", 0)
    objs = b.list()
    assert {o.name: o.size for o in objs} == {"2024/one.csv": 5000, "2024/deep/two.bin": 70_000,
                                              "top-2023.txt": 0}
    assert all(isinstance(o, ObjectInfo) and o.modified_at for o in objs)
    assert sorted(b.list(prefix="2024/", metadata=False)) == ["2024/deep/two.bin", "2024/one.csv"]
    shallow = {o.name: o.is_dir for o in b.list(prefix="2024/", recursive=False)}
    assert shallow == {"2024/one.csv": False, "2024/deep": True}
    assert sorted(b.list_filename(contains="2024")) == ["2024/deep/two.bin", "2024/one.csv"]
    assert b.list_filename(contains="2023", return_type="str") == "top-2023.txt"

    with b.get("2024/one.csv") as s:
        assert s.size == 5000 and s.read() == one
    assert b"".join(b.get("2024/deep/two.bin").stream(4096)) == two
    assert b.get("2024/deep/two.bin", offset=10, length=100).read() == two[10:110]
    assert b.get("top-2023.txt").read() == b""

    st = b.stat("2024/one.csv")
    assert st.name == "2024/one.csv" and st.size == 5000 and not st.is_dir
    many = b.stat(["2024/one.csv", "2024/deep/two.bin"])
    assert [m.size for m in many] == [5000, 70_000]

    assert b.delete("top-2023.txt") == {"deleted": ["top-2023.txt"]}
    assert b.delete(["2024/one.csv", "2024/deep/two.bin"])["deleted"] == ["2024/one.csv", "2024/deep/two.bin"]
    assert b.list() == []
    with pytest.raises(E.NotFoundError):
        b.stat("2024/one.csv")


def test_delete_missing_deletes_nothing(store: tuple[PipeClient, dict[str, Any], Any]) -> None:
    _client, _spec, b = store
    b.put("a.txt", b"a", 1)
    with pytest.raises(E.NotFoundError) as err:
        b.delete(["a.txt", "missing.txt"])
    assert err.value.code == 1001 and err.value.data["keys"] == ["missing.txt"]
    assert "nothing was deleted" in err.value.message
    assert b.get("a.txt").read() == b"a"
    with pytest.raises(E.NotFoundError):
        b.delete("missing.txt")


def test_keys_naming_folders_are_refused_for_writes(store: tuple[PipeClient, dict[str, Any], Any],
                                                    tmp_path: Path, http_url: tuple[str, bytes]) -> None:
    client, _spec, b = store
    local = tmp_path / "f.bin"
    local.write_bytes(b"abc")
    b.put("x.bin", b"abc", 3)
    writes = [lambda: b.put("d/", b"abc", 3), lambda: b.fput("e/", local),
              lambda: client.upload(local, remote=REMOTE, key="u/"),
              lambda: b.put_request(http_url[0], "p/"), lambda: b.fcopy_to(b.name, "c/", "x.bin")]
    for write in writes:
        with pytest.raises(E.InvalidParamsError) as err:
            write()
        assert "names a folder" in err.value.message
    assert b.list_filename() == ["x.bin"]
    assert client.jobs(state="failed") == []  # refused up front: no job ever started


def test_copy_onto_itself_is_refused(store: tuple[PipeClient, dict[str, Any], Any]) -> None:
    _client, _spec, b = store
    b.put("same.bin", b"keep", 4)
    with pytest.raises(E.InvalidParamsError) as err:
        b.fcopy_to(b.name, "same.bin", "same.bin")
    assert "onto itself" in err.value.message
    assert b.get("same.bin").read() == b"keep"


def test_delete_refuses_folders(store: tuple[PipeClient, dict[str, Any], Any]) -> None:
    _client, _spec, b = store
    b.put("dir/inner.txt", b"inner", 5)
    b.put("top.txt", b"top", 3)
    for name in ("dir", "dir/"):
        with pytest.raises(E.NotFoundError) as err:
            b.delete(["top.txt", name])
        assert "a folder, not an object" in err.value.message and "nothing was deleted" in err.value.message
    assert sorted(b.list_filename()) == ["dir/inner.txt", "top.txt"]


def test_fput_fget(store: tuple[PipeClient, dict[str, Any], Any], tmp_path: Path) -> None:
    _client, spec, b = store
    src = tmp_path / "src.bin"
    src.write_bytes(rand(300_000, 3))
    os.utime(src, (OLD_MTIME, OLD_MTIME))
    etag = b.fput("in/data file.bin", src)
    if spec["protocol"] == "s3":
        assert etag == hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    info = b.fget("in/data file.bin", dest)
    assert isinstance(info, ObjectInfo) and info.size == 300_000
    assert dest.read_bytes() == src.read_bytes()
    assert info.modified_at is not None
    assert abs(dest.stat().st_mtime - info.modified_at) < 1.0  # the remote's time, not "now"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temporary left


@pytest.fixture
def http_url(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A tiny HTTP server on loopback serving one file."""
    body = rand(123_456, 4)
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "file.csv").write_bytes(body)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/file.csv", body
    finally:
        server.shutdown()
        server.server_close()


def test_put_request(store: tuple[PipeClient, dict[str, Any], Any], http_url: tuple[str, bytes]) -> None:
    _client, _spec, b = store
    url, body = http_url
    info = b.put_request(url, "dl/file.csv")
    assert info.name == "dl/file.csv" and info.size == len(body)
    assert b.get("dl/file.csv").read() == body
    with pytest.raises(E.StorageError) as err:
        b.put_request(url.replace("file.csv", "nope.csv"), "dl/nope.csv")
    assert "404" in err.value.message
    with pytest.raises(E.InvalidParamsError):
        b.put_request("file:///etc/passwd", "dl/passwd")
    assert b.list_filename() == ["dl/file.csv"]


def test_fcopy_to(store: tuple[PipeClient, dict[str, Any], Any], s3_request_log: RequestLog | None) -> None:
    client, spec, b = store
    data = rand(200_000, 5)
    b.put("src/orig.bin", data, len(data))
    other = new_bucket_name()
    client.datastore(REMOTE).create_bucket(other)
    log = s3_request_log if spec["protocol"] == "s3" else None
    if log:
        log.reset()
    info = b.fcopy_to(other, "copies/new.bin", "src/orig.bin")
    assert info.name == "copies/new.bin" and info.size == len(data)
    if log:  # server-side: the object's bytes never came to the daemon
        gets = [p for m, p in log.entries() if m == "GET" and "orig.bin" in p]
        assert gets == [], gets
        assert log.count("PUT", "new.bin") >= 1
    dst = client.datastore(REMOTE).get_bucket(other)
    assert dst.get("copies/new.bin").read() == data
    assert b.get("src/orig.bin").read() == data  # the source stays


@pytest.fixture
def s3_request_log(request: pytest.FixtureRequest) -> RequestLog | None:
    """The S3 server's request log, only when the test's backend is S3."""
    if request.getfixturevalue("spec")["protocol"] != "s3":
        return None
    return RequestLog(request.getfixturevalue("s3_server").log_path)


def test_upload_download(client: PipeClient, spec: dict[str, Any], tmp_path: Path) -> None:
    register(client, spec)
    src = tmp_path / "report.csv"
    src.write_bytes(rand(50_000, 6))
    up = client.upload(src, remote=REMOTE, key="reports/2024/report.csv")
    assert isinstance(up, UploadResult)
    assert (up.key, up.size, up.remote) == ("reports/2024/report.csv", 50_000, REMOTE)
    # The daemon's own record of the job, as job.list answers it, is what the SDK returned.
    [job] = [j for j in client.jobs() if j.kind == "transfer.upload"]
    assert (job.result["key"], job.result["elapsed_s"]) == (up.key, up.elapsed_s)
    into = tmp_path / "into"
    into.mkdir()
    down = client.download(remote=REMOTE, key="reports/2024/report.csv", dest=str(into) + "/")
    assert isinstance(down, DownloadResult) and down.size == 50_000
    assert down.files[0].local_path == str(into / "report.csv") and down.files[0].size == 50_000
    assert (into / "report.csv").read_bytes() == src.read_bytes()
    assert down.stat["name"] == "reports/2024/report.csv"
    named = tmp_path / "named.csv"
    down = client.download(remote=REMOTE, key="reports/2024/report.csv", dest=named)
    assert down.files[0].local_path == str(named) and named.read_bytes() == src.read_bytes()
    with pytest.raises(E.NotFoundError):
        client.download(remote=REMOTE, key="reports/missing.csv", dest=tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


async def test_async_client_streams(local_spec: dict[str, Any], pd_env: dict[str, Path]) -> None:
    async with AsyncPipeClient() as c:
        try:
            await c.upsert_remote({"name": REMOTE, "protocol": "local", "options": local_spec["options"]})
            ds = c.datastore(REMOTE)
            await ds.create_bucket("raw")
            b = ds.get_bucket("raw")
            data = rand(3 * MiB + 7, 7)
            await b.put("x.bin", data, len(data))
            s = await b.get("x.bin")
            assert b"".join([piece async for piece in s.stream(MiB)]) == data
            assert [o.name for o in await b.list()] == ["x.bin"]
        finally:
            await c.shutdown()


# -- 1 GiB through put/get with bounded daemon memory ---------------------------------------------
def test_one_gib_streams_with_bounded_memory(client: PipeClient, local_spec: dict[str, Any],
                                             tmp_path: Path) -> None:
    size = 1 << 30
    register(client, local_spec)
    b = client.datastore(REMOTE).get_bucket(ensure_bucket(client, local_spec))
    pid = client.status().pid
    before = rss_peak_kib(pid)
    src = sparse_file(tmp_path / "big.bin", size)
    with src.open("rb") as f:
        b.put("big.bin", f, size)
    assert b.stat("big.bin").size == size
    h = hashlib.md5()
    got = 0
    for piece in b.get("big.bin").stream(8 * MiB):
        h.update(piece)
        got += len(piece)
    assert got == size and h.hexdigest() == zeros_digest("md5", size)
    grown_mib = (rss_peak_kib(pid) - before) / 1024
    assert grown_mib < 200, f"the daemon's peak RSS grew by {grown_mib:.0f} MiB moving 1 GiB"
    b.delete("big.bin")


# -- untrusted names: 1010 before anything is touched -----------------------------------------------
UNSAFE = ["../escape.txt", "ok/../../escape.txt", "/etc/pd-absolute.txt", "a\0b.txt",
          "a\\..\\..\\escape.txt", "..\\escape.txt"]
OPS = ["get", "put", "fget", "fput", "stat", "stat_list", "delete", "delete_list", "upload", "download"]


def _unsafe_call(op: str, client: PipeClient, b: Any, key: str, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    calls = {
        "get": lambda: b.get(key),
        "put": lambda: b.put(key, b"x", 1),
        "fget": lambda: b.fget(key, tmp_path / "fget.bin"),
        "fput": lambda: b.fput(key, local),
        "stat": lambda: b.stat(key),
        "stat_list": lambda: b.stat(["fine.txt", key]),
        "delete": lambda: b.delete(key),
        "delete_list": lambda: b.delete(["fine.txt", key]),
        "upload": lambda: client.upload(local, remote=REMOTE, key=key),
        "download": lambda: client.download(remote=REMOTE, key=key, dest=str(tmp_path / "dl") + "/"),
    }
    calls[op]()


@pytest.mark.parametrize("op", OPS)
def test_unsafe_names_refused(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path,
                              op: str) -> None:
    register(client, local_spec)
    root = Path(local_spec["root"])
    b = client.datastore(REMOTE).get_bucket(ensure_bucket(client, local_spec))
    b.put("fine.txt", b"fine", 4)
    (tmp_path / "local.bin").write_bytes(b"x")
    (tmp_path / "dl").mkdir()
    before = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    for key in UNSAFE:
        with pytest.raises(E.UnsafePathError) as err:
            _unsafe_call(op, client, b, key, tmp_path)
        assert err.value.code == 1010, key
    assert sorted(p.relative_to(root.parent) for p in root.parent.rglob("*")) == before
    assert b.get("fine.txt").read() == b"fine"  # a list with one bad name deleted nothing
    assert list((tmp_path / "dl").iterdir()) == []
    assert not Path("/etc/pd-absolute.txt").exists()


# -- clients that go away mid-stream ------------------------------------------------------------
def cut_put(client: PipeClient, bucket: str, size: int, sent: int) -> dict[str, Any]:
    """object.write announcing ``size`` bytes, then the client leaves after ``sent``: the answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(client.socket_path))
    params = {"remote": REMOTE, "bucket": bucket, "key": "cut.bin", "size": size}
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "object.write", "params": params}).encode()
              + b"\n" + rand(sent, 8))
    s.shutdown(socket.SHUT_WR)
    answer = json.loads(s.makefile("rb").readline())
    s.close()
    return answer


def test_truncated_put_stores_nothing(store: tuple[PipeClient, dict[str, Any], Any]) -> None:
    client, _spec, b = store
    answer = cut_put(client, b.name, 3 * MiB, MiB)
    assert answer["error"]["code"] == 1008 and "nothing was stored" in answer["error"]["message"]
    assert b.list(metadata=False) == []
    with pytest.raises(E.NotFoundError):
        b.stat("cut.bin")


def test_truncated_multipart_put_leaves_no_upload(client: PipeClient, s3_spec: dict[str, Any],
                                                  s3_client: Any) -> None:
    spec = {**s3_spec, "options": {**s3_spec["options"], "part_size": 5 * MiB}}
    register(client, spec)
    bucket = spec["root"].rstrip("/")
    answer = cut_put(client, bucket, 30 * MiB, 12 * MiB)  # two parts landed before the client left
    assert answer["error"]["code"] == 1008
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_reader_leaving_early(store: tuple[PipeClient, dict[str, Any], Any]) -> None:
    client, _spec, b = store
    data = rand(12 * MiB, 9)
    b.put("big.bin", data, len(data))
    for _ in range(3):  # each reader hangs up after a little: the daemon shrugs it off
        s = b.get("big.bin")
        assert s.read(1000) == data[:1000]
        s.close()
    assert client.ping()["pong"] is True
    assert b.get("big.bin", offset=len(data) - 10).read() == data[-10:]
    assert b"".join(b.get("big.bin").stream(MiB)) == data


def test_put_refuses_short_or_wrong_data(client: PipeClient, local_spec: dict[str, Any]) -> None:
    register(client, local_spec)
    b = client.datastore(REMOTE).get_bucket(ensure_bucket(client, local_spec))
    with pytest.raises(ValueError, match="fewer than length"):
        b.put("short.bin", b"abc", 10)
    with pytest.raises(TypeError):
        b.put("text.txt", "not bytes", 9)
    with pytest.raises(ValueError, match="ended"):
        b.put("file.bin", io.BytesIO(b"abc"), 10)  # a file shorter than promised: found while sending
    assert b.list() == []
