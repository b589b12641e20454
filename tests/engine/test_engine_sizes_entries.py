"""The size matrix on the file servers through every other entry point.

``test_engine_sizes_backends.py`` moves the sizes by ``upload``/``download``; here the same
cut-offs go through the streams (``Bucket.put``/``get``), the bucket API's ``fput``/``fget``,
CLI ``cp`` both ways, copies between remotes (the engine stores a stream: offset-free writes on
every file server) and a pipe's ``push``/``pull``, on local, SFTP, FTP, FTPS and pure-ftpd.

Sizes: 0, 1, N-1/N/N+1 of the backends' own pieces (FTP's data read, SFTP's read request and
local's flush, the SDK's stream frame: 1 MiB), of PARALLEL_THRESHOLD (which is also the
daemon's stream piece, 16 MiB; N+1 is two 8 MiB chunks and a tail). Identical bytes (SHA-256)
every time, the stored size the one sent, no temporary name left behind.
One daemon per backend; the CLI runs in-process (click's runner, the same command code as
``python -m pipedaemon`` without an interpreter start per copy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipedaemon.cli import main_group as cli_main
from pipedaemon.transfer import PARALLEL_THRESHOLD
from pipedaemon_sdk import PipeClient
from tests.servers import BACKENDS
from tests.support.engine import make_file, sha256, temp_leftovers
from tests.support.storage import ensure_bucket, settings_of

MiB = 1 << 20
N = PARALLEL_THRESHOLD
PIECE = 1 << 20  # SFTP's READ_CHUNK, local's CHUNK, the SDK's stream frame
BLOCK = 256 << 10  # FTP's data-connection read (ftpdata.BLOCK)
# N+1 is also two parts and a tail: two 8 MiB chunks (the default) and one byte.
SIZES = [0, 1, *(n + d for n in (BLOCK, PIECE, N) for d in (-1, 0, 1))]
FILE_SERVERS = [b for b in BACKENDS if b != "s3"]  # S3's cut-offs are test_engine_sizes_paths.py's


def cp(*args: str) -> dict[str, Any]:
    res = CliRunner().invoke(cli_main, ["--json", "cp", *args], catch_exceptions=False)
    assert res.exit_code == 0, f"cp {args}: {res.output}"
    out: dict[str, Any] = json.loads(res.output)
    return out


def copy(c: PipeClient, **params: Any) -> dict[str, Any]:
    job = c.call("transfer.copy", params)
    info = c.job(job["id"]).wait()
    assert info.state == "succeeded", f"copy {params}: {info.state} {info.error}"
    return dict(info.result)


def stored_size(c: PipeClient, remote: str, key: str) -> int:
    return int(c.call("object.stat", {"remote": remote, "key": key})["size"])


@pytest.mark.parametrize("backend", FILE_SERVERS)
def test_entry_points_at_every_cut_off(backend: str, request: pytest.FixtureRequest, client: PipeClient,
                                       local_spec: dict[str, Any], tmp_path: Path) -> None:
    spec: dict[str, Any] = request.getfixturevalue(f"{backend}_spec")
    client.upsert_remote(settings_of(spec))
    client.upsert_remote(settings_of(local_spec, "loc"))
    name = ensure_bucket(client, spec)
    bucket = client.datastore("store").get_bucket(name)
    for size in SIZES:
        src = tmp_path / "src" / f"{size}.bin"
        digest = make_file(src, size, seed=size % 89)

        def same(path: Path, how: str, size: int = size, digest: str = digest) -> None:
            assert sha256(path) == digest, f"{backend}: {how} of {size} bytes"
            path.unlink()

        def stored(key: str, how: str, size: int = size, digest: str = digest) -> None:
            where = f"{backend}: {how} of {size} bytes"
            assert stored_size(client, "store", key) == size, where
            got = bucket.get(key.removeprefix(f"{name}/")).read()
            assert hashlib.sha256(got).hexdigest() == digest, where

        with open(src, "rb") as f:  # the stream in, and out
            bucket.put(f"put/{size}.bin", f, size)
        stored(f"{name}/put/{size}.bin", "put/get")

        bucket.fput(f"fput/{size}.bin", src)
        assert stored_size(client, "store", f"{name}/fput/{size}.bin") == size
        bucket.fget(f"fput/{size}.bin", tmp_path / "fget.bin")
        same(tmp_path / "fget.bin", "fput/fget")

        assert cp(str(src), f"store:{name}/cp/{size}.bin")["size"] == size
        cp(f"store:{name}/cp/{size}.bin", str(tmp_path / "cp.bin"))
        same(tmp_path / "cp.bin", "cp up/down")

        # Remote to remote, both ways: the engine stores a stream read from the other remote.
        copy(client, remote="store", key=f"{name}/cp/{size}.bin", dst_remote="loc", dst_key=f"{size}.bin")
        assert sha256(Path(local_spec["root"]) / f"{size}.bin") == digest, f"{backend}: copy out of {size}"
        copy(client, remote="loc", key=f"{size}.bin", dst_remote="store", dst_key=f"{name}/copy/{size}.bin")
        stored(f"{name}/copy/{size}.bin", "copy from local")
        (Path(local_spec["root"]) / f"{size}.bin").unlink()
        bucket.delete([f"{how}/{size}.bin" for how in ("put", "fput", "cp", "copy")])
        src.unlink()
    assert temp_leftovers(tmp_path) == []
    assert temp_leftovers(Path(local_spec["root"])) == []


@pytest.mark.parametrize("backend", FILE_SERVERS)
def test_pipe_push_and_pull_at_every_cut_off(backend: str, request: pytest.FixtureRequest, client: PipeClient,
                                             tmp_path: Path) -> None:
    spec: dict[str, Any] = request.getfixturevalue(f"{backend}_spec")
    client.update_profile_config({"filerepo": str(tmp_path / "repo")})
    client.upsert_remote(settings_of(spec))
    client.upsert_pipe({"name": "p", "remote": "store"})
    pipe = client.pipe("p")
    digests = {size: make_file(Path(pipe.dirpath) / f"f{size}.bin", size, seed=size % 79) for size in SIZES}
    pipe.push()
    for size in SIZES:
        (Path(pipe.dirpath) / f"f{size}.bin").unlink()
    pipe.pull(cached=False)
    for size in SIZES:
        assert sha256(Path(pipe.dirpath) / f"f{size}.bin") == digests[size], f"{backend}: push/pull of {size}"
    assert temp_leftovers(tmp_path) == []
