"""pipedaemon:// and pipe:// under pandas and pyarrow, on a real S3 (moto) remote; registration.

One daemon for the module (tests/fsspec/helpers.py); each test its own S3 bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
import tomllib
from fsspec.callbacks import Callback

from pipedaemon_sdk.fsspec import STREAM_MAX, PipedaemonFileSystem, PipeFileSystem
from tests.fsspec.helpers import Daemon, remote_spec, unique
from tests.support.storage import register

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def protocols() -> None:
    """Where the package is installed from another tree (a shared dev venv), register by hand
    what the entry points register in an install from this repo (test_entry_points checks them)."""
    for proto, cls in (("pipedaemon", PipedaemonFileSystem), ("pipe", PipeFileSystem)):
        if fsspec.get_filesystem_class(proto) is not cls if proto in fsspec.available_protocols() else True:
            fsspec.register_implementation(proto, cls, clobber=True)


@pytest.fixture
def s3(request: pytest.FixtureRequest, daemon: Daemon) -> dict[str, Any]:
    spec = remote_spec(request, "s3")
    name = register(daemon.client, spec, unique("s3"))
    fs = PipedaemonFileSystem(socket_path=str(daemon.socket), skip_instance_cache=True)
    return {"remote": name, "bucket": spec["root"].rstrip("/"), "fs": fs,
            "opts": {"socket_path": str(daemon.socket)}}


def frame(n: int = 500) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n), "name": [f"n{i}" for i in range(n)], "x": [i / 7 for i in range(n)]})


def test_entry_points_name_both_filesystems() -> None:
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["fsspec.specs"]
    assert eps == {"pipedaemon": "pipedaemon_sdk.fsspec:PipedaemonFileSystem",
                   "pipe": "pipedaemon_sdk.fsspec:PipeFileSystem"}
    from importlib.metadata import distribution

    dist = distribution("pipedaemon")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "fsspec.specs"}
    origin = (dist.read_text("direct_url.json") or "")
    if str(ROOT) in origin:  # installed from this tree (as in CI): fsspec finds them by itself
        assert installed == eps


def test_sdk_import_stays_light() -> None:
    code = ("import sys, pipedaemon_sdk; "
            "print(sorted(m for m in ('fsspec', 'pandas', 'dask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_pandas_csv_and_parquet_round_trip(s3: dict[str, Any]) -> None:
    df = frame()
    base = f"pipedaemon://{s3['remote']}/data"
    df.to_csv(f"{base}/a.csv", index=False, storage_options=s3["opts"])
    pd.testing.assert_frame_equal(pd.read_csv(f"{base}/a.csv", storage_options=s3["opts"]), df)
    df.to_parquet(f"{base}/a.parquet", engine="pyarrow", storage_options=s3["opts"])
    back = pd.read_parquet(f"{base}/a.parquet", engine="pyarrow", columns=["id", "x"],
                           storage_options=s3["opts"])
    pd.testing.assert_frame_equal(back, df[["id", "x"]])
    assert sorted(s3["fs"].ls(f"{s3['remote']}/data", detail=False)) == [
        f"{s3['remote']}/data/a.csv", f"{s3['remote']}/data/a.parquet"]


def test_ranged_reads_and_seeks(s3: dict[str, Any]) -> None:
    fs = s3["fs"]
    data = os.urandom(3 * 1024 * 1024 + 7)
    path = f"{s3['remote']}/blob.bin"
    fs.pipe_file(path, data)
    with fs.open(path, "rb", block_size=1 << 20) as f:
        f.seek(-8, 2)
        assert f.read() == data[-8:]
        f.seek(12345)
        assert f.read(100) == data[12345:12445]
    assert fs.cat_file(path, start=10, end=20) == data[10:20]
    assert fs.cat_file(path, start=-5) == data[-5:]
    assert fs.info(path)["size"] == len(data)


def test_failed_write_leaves_nothing(s3: dict[str, Any], s3_client: Any) -> None:
    fs = s3["fs"]
    path = f"{s3['remote']}/half.bin"
    with pytest.raises(RuntimeError), fs.open(path, "wb") as f:
        f.write(b"x" * 1000)
        raise RuntimeError("boom")
    assert not fs.exists(path)
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3["bucket"])


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[int] = []

    def call(self, *args: Any, **kwargs: Any) -> None:
        self.values.append(self.value)


SMALL_MAX = 64 << 10  # the stream/job threshold, made small so the edges move little data


def _uploads(daemon: Daemon) -> int:
    return len([j for j in daemon.client.jobs(limit=1000) if j.kind == "transfer.upload"])


def test_stream_max_default() -> None:
    assert PipedaemonFileSystem(skip_instance_cache=True).stream_max == STREAM_MAX == 8 << 20


@pytest.mark.parametrize("size", [SMALL_MAX - 1, SMALL_MAX, SMALL_MAX + 1])
def test_put_get_progress_and_checksum(s3: dict[str, Any], daemon: Daemon, tmp_path: Path, size: int) -> None:
    fs = PipedaemonFileSystem(socket_path=str(daemon.socket), skip_instance_cache=True, stream_max=SMALL_MAX)
    jobs = _uploads(daemon)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    path = f"{s3['remote']}/up.bin"
    up = Recorder()
    fs.put_file(str(src), path, callback=up)
    assert up.size == size and up.values[-1] == size
    assert _uploads(daemon) - jobs == (size > SMALL_MAX)  # above the threshold: a chunked job
    down = Recorder()
    fs.get_file(path, str(tmp_path / "back.bin"), callback=down)
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert down.values and down.values[-1] == size
    before = fs.checksum(path)
    fs.pipe_file(path, b"changed")
    assert fs.checksum(path) != before


def test_glob_find_rm_cp(s3: dict[str, Any]) -> None:
    fs, r = s3["fs"], s3["remote"]
    for i in range(3):
        fs.pipe_file(f"{r}/d/f{i}.csv", b"a\n1\n")
    fs.pipe_file(f"{r}/d/sub/g.txt", b"x")
    assert fs.glob(f"{r}/d/*.csv") == [f"{r}/d/f{i}.csv" for i in range(3)]
    assert fs.find(f"{r}/d") == [*(f"{r}/d/f{i}.csv" for i in range(3)), f"{r}/d/sub/g.txt"]
    assert fs.isdir(f"{r}/d/sub") and fs.isfile(f"{r}/d/sub/g.txt")
    fs.cp_file(f"{r}/d/sub/g.txt", f"{r}/e/g.txt")
    assert fs.cat_file(f"{r}/e/g.txt") == b"x"
    fs.rm(f"{r}/d", recursive=True)
    assert not fs.exists(f"{r}/d") and fs.exists(f"{r}/e/g.txt")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{r}/nothing-here")


# -- pipe:// ---------------------------------------------------------------------------------
@pytest.fixture
def pipe(s3: dict[str, Any], daemon: Daemon, s3_client: Any, tmp_path: Path) -> dict[str, Any]:
    name = unique("vendor-daily")
    daemon.client.upsert_pipe({"name": name, "remote": s3["remote"], "options": {"dir": "vendor"}})
    frames = {}
    for day in range(3):
        df = frame(50 + day)
        frames[f"daily-{day}.csv"] = df
        s3_client.put_object(Bucket=s3["bucket"], Key=f"vendor/daily-{day}.csv",
                             Body=df.to_csv(index=False).encode())
    fs = PipeFileSystem(socket_path=str(daemon.socket), skip_instance_cache=True)
    return {"name": name, "frames": frames, "fs": fs, "opts": s3["opts"],
            "dirpath": Path(daemon.client.get_pipe(name)["dirpath"]), "bucket": s3["bucket"]}


def test_pipe_reads_remote_then_cached_local(pipe: dict[str, Any], s3_client: Any) -> None:
    name, fs = pipe["name"], pipe["fs"]
    url = f"pipe://{name}/daily-1.csv"
    assert fs.ls(name, detail=False) == [f"{name}/daily-{d}.csv" for d in range(3)]
    want = pipe["frames"]["daily-1.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(url, storage_options=pipe["opts"]), want)
    assert not (pipe["dirpath"] / "daily-1.csv").exists()  # read through the daemon, nothing kept
    opts = {**pipe["opts"], "cache": True}
    pd.testing.assert_frame_equal(pd.read_csv(url, storage_options=opts), want)
    assert (pipe["dirpath"] / "daily-1.csv").exists()  # pulled: now a synced local copy
    assert fs.in_sync(f"{name}/daily-1.csv")
    # the remote changes: the local copy is no longer in sync, and the read sees the new bytes
    s3_client.put_object(Bucket=pipe["bucket"], Key="vendor/daily-1.csv", Body=b"id\n42\n")
    fs.ls(name, refresh=True)
    assert not fs.in_sync(f"{name}/daily-1.csv")
    assert pd.read_csv(url, storage_options=pipe["opts"])["id"].tolist() == [42]


def test_pipe_write_lands_locally_and_remotely(pipe: dict[str, Any], s3_client: Any) -> None:
    name = pipe["name"]
    df = frame(10)
    df.to_parquet(f"pipe://{name}/out/new.parquet", storage_options=pipe["opts"])
    assert (pipe["dirpath"] / "out" / "new.parquet").exists()
    body = s3_client.get_object(Bucket=pipe["bucket"], Key="vendor/out/new.parquet")["Body"].read()
    assert body == (pipe["dirpath"] / "out" / "new.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(f"pipe://{name}/out/new.parquet",
                                                  storage_options=pipe["opts"]), df)


async def test_async_filesystem(s3: dict[str, Any], tmp_path: Path) -> None:
    from pipedaemon_sdk.fsspec_async import AsyncPipedaemonFileSystem

    fs = AsyncPipedaemonFileSystem(socket_path=s3["opts"]["socket_path"], asynchronous=True)
    r = s3["remote"]
    try:
        await fs._pipe_file(f"{r}/a/x.bin", b"hello")
        await fs._pipe_file(f"{r}/a/b/y.bin", b"world")
        assert await fs._cat_file(f"{r}/a/x.bin", start=1, end=3) == b"el"
        assert await fs._ls(f"{r}/a", detail=False) == [f"{r}/a/b", f"{r}/a/x.bin"]
        assert (await fs._info(f"{r}/a/b"))["type"] == "directory"
        both = await fs._cat([f"{r}/a/x.bin", f"{r}/a/b/y.bin"])  # fetched concurrently
        assert both == {f"{r}/a/x.bin": b"hello", f"{r}/a/b/y.bin": b"world"}
        await fs._get_file(f"{r}/a/b/y.bin", str(tmp_path / "y.bin"))
        assert (tmp_path / "y.bin").read_bytes() == b"world"
        with pytest.raises(FileExistsError):
            await fs._pipe_file(f"{r}/a/x.bin", b"again", mode="create")
        await fs._rm(f"{r}/a", recursive=True)
        assert not await fs._exists(f"{r}/a/x.bin")
        with pytest.raises(FileNotFoundError):
            await fs._info(f"{r}/a")
    finally:
        await fs.client.close()


def test_async_filesystem_blocking_use(s3: dict[str, Any]) -> None:
    from pipedaemon_sdk.fsspec_async import AsyncPipedaemonFileSystem

    fs = AsyncPipedaemonFileSystem(socket_path=s3["opts"]["socket_path"])  # fsspec's own loop
    data = os.urandom(100_000)
    with fs.open(f"{s3['remote']}/z.bin", "wb") as f:
        f.write(data)
    with fs.open(f"{s3['remote']}/z.bin", "rb", block_size=4096) as f:
        f.seek(50_000)
        assert f.read(10) == data[50_000:50_010]
    assert fs.cat_file(f"{s3['remote']}/z.bin") == data


def test_listing_is_the_daemons_cached_one(s3: dict[str, Any], s3_client: Any, daemon: Daemon) -> None:
    fs, r = s3["fs"], s3["remote"]
    fs.pipe_file(f"{r}/c/a.txt", b"1")
    assert fs.ls(f"{r}/c", detail=False) == [f"{r}/c/a.txt"]
    s3_client.put_object(Bucket=s3["bucket"], Key="c/b.txt", Body=b"2")  # behind the daemon's back
    assert fs.ls(f"{r}/c", detail=False) == [f"{r}/c/a.txt"]  # the cached listing, within its TTL
    fresh = daemon.client.call("fs.list", {"remote": r, "path": "c", "ttl_s": 0})
    assert sorted(f["name"] for f in fresh["files"]) == ["a.txt", "b.txt"]
    s3_client.put_object(Bucket=s3["bucket"], Key="c/d.txt", Body=b"3")
    assert fs.ls(f"{r}/c", detail=False, refresh=True) == [f"{r}/c/{n}" for n in ("a.txt", "b.txt", "d.txt")]
    fs.rm(f"{r}/c/a.txt")  # the daemon's own delete updates its listing at once
    assert fs.ls(f"{r}/c", detail=False) == [f"{r}/c/b.txt", f"{r}/c/d.txt"]


@pytest.mark.parametrize(("age", "asks"), [(10.0 - 1e-3, False), (10.0, True), (10.0 + 1e-3, True)])
def test_info_memo_lasts_info_ttl_s(s3: dict[str, Any], daemon: Daemon, monkeypatch: pytest.MonkeyPatch,
                                    age: float, asks: bool) -> None:
    """An info() of a file the last ls saw is answered without the daemon while younger than
    ``info_ttl_s``; from that age on it asks the daemon's (cached) listing again."""
    import pipedaemon_sdk.fsspec as pdfs

    fs = PipedaemonFileSystem(socket_path=str(daemon.socket), skip_instance_cache=True, info_ttl_s=10.0)
    path = f"{s3['remote']}/m/a.txt"
    fs.pipe_file(path, b"abc")
    now = [1000.0]
    monkeypatch.setattr(pdfs.time, "monotonic", lambda: now[0])
    fs.ls(f"{s3['remote']}/m")
    calls: list[str] = []
    real = fs._files
    monkeypatch.setattr(fs, "_files", lambda *a: calls.append(a[1]) or real(*a))
    now[0] += age
    assert fs.info(path)["size"] == 3
    assert calls == (["m"] if asks else [])
