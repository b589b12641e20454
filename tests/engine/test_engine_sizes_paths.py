"""The S3 cut-offs through the other entry points: CLI ``cp`` both ways, copies between
remotes (a stream stored by the engine: multipart on S3 above ``put_threshold``) and
server-side copies (single CopyObject up to ``copy_threshold``, UploadPartCopy above).

5 MiB parts and every cut-off at 5 MiB: sizes N-1, N and N+1 (the pipe test also two parts
and a tail); each object must hold the same bytes and the ETag the engine's choice implies.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipedaemon_sdk import PipeClient
from tests.engine.test_engine_sizes import expected_etag
from tests.support.engine import make_file, sha256
from tests.support.storage import settings_of

MiB = 1 << 20
N = 5 * MiB


def cli(*args: str) -> Any:
    res = subprocess.run([sys.executable, "-m", "pipedaemon", "--json", *args], text=True,
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def copy(c: PipeClient, **params: Any) -> None:
    job = c.call("transfer.copy", params)
    c.job(job["id"]).wait()


def test_cli_cp_and_copies_at_the_cut_offs(s3_spec: dict[str, Any], local_spec: dict[str, Any],
                                           client: PipeClient, tmp_path: Path) -> None:
    s3 = settings_of(s3_spec, "s3")
    s3["options"].update(part_size=N, put_threshold=N, copy_threshold=N, copy_part_size=N)
    client.upsert_remote(s3)
    client.upsert_remote(settings_of(local_spec, "loc"))
    bucket = s3_spec["root"].rstrip("/")
    ds = client.datastore("s3").get_bucket(bucket)
    for size in (N - 1, N, N + 1):  # 2 parts + a tail: test_s3_small_part_size, the pipe test
        src = tmp_path / f"{size}.bin"
        digest = make_file(src, size, seed=size % 83)
        etag = expected_etag(src, N, N)

        def check(key: str, where: str, size: int = size, etag: str = etag, digest: str = digest) -> None:
            stat = client.call("object.stat", {"remote": "s3", "key": key})
            assert (stat["size"], stat["etag"]) == (size, etag), where
            assert hashlib.sha256(ds.get(key).read()).hexdigest() == digest, where

        cli("cp", str(src), f"s3:cli/{size}.bin")
        check(f"cli/{size}.bin", f"cp up, {size}")
        back = tmp_path / f"back-{size}.bin"
        cli("cp", f"s3:cli/{size}.bin", str(back))
        assert sha256(back) == digest, f"cp down, {size}"
        copy(client, remote="s3", key=f"cli/{size}.bin", dst_remote="loc", dst_key=f"{size}.bin")
        assert sha256(Path(local_spec["root"]) / f"{size}.bin") == digest, f"s3 -> local, {size}"
        copy(client, remote="loc", key=f"{size}.bin", dst_remote="s3", dst_key=f"back/{size}.bin")
        check(f"back/{size}.bin", f"local -> s3, {size}")
        ds.fcopy_to(bucket, f"server/{size}.bin", f"cli/{size}.bin")
        check(f"server/{size}.bin", f"server-side copy, {size}")
        src.unlink()
        back.unlink()


def test_pipe_push_and_pull_at_the_cut_offs(s3_spec: dict[str, Any], s3_client: Any, client: PipeClient,
                                            tmp_path: Path) -> None:
    client.update_profile_config({"filerepo": str(tmp_path / "repo")})
    s3 = settings_of(s3_spec, "r")
    s3["options"].update(part_size=N, put_threshold=N)
    client.upsert_remote(s3)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    sizes = (N - 1, N, N + 1, 2 * N + 3)
    digests, etags = {}, {}
    for size in sizes:
        path = Path(pipe.dirpath) / f"f{size}.bin"
        digests[size] = make_file(path, size, seed=size % 79)
        etags[size] = expected_etag(path, N, N)
    pipe.push()
    bucket = s3_spec["root"].rstrip("/")
    stored = {o["Key"].rsplit("/", 1)[-1]: o for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    for size in sizes:
        obj = stored[f"f{size}.bin"]
        assert (obj["Size"], obj["ETag"].strip('"')) == (size, etags[size]), f"push of {size}"
        (Path(pipe.dirpath) / f"f{size}.bin").unlink()
    pipe.pull(cached=False)
    for size in sizes:
        assert sha256(Path(pipe.dirpath) / f"f{size}.bin") == digests[size], f"pull of {size}"
