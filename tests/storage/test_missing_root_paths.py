"""A remote's missing root is never made by a write (issue 18): on S3 a missing bucket, on
SFTP, FTP and local a missing remotepath, is 1001 naming it for a single PUT, a multipart
upload, a pipe's push, an fsspec write, a mirror, the CLI's cp and (a folder below the root)
create_bucket; still missing afterwards. Only an
explicit create_bucket/mkdir or the create_root option makes it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import NotFoundError, PipeClient
from pipedaemon_sdk.fsspec import PipedaemonFileSystem
from tests.servers import BACKENDS
from tests.support.storage import get_spec, settings_of
from tests.support.terminal import pd

MiB = 1 << 20


def _missing(spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The options of a remote whose root is missing, and the name of that root."""
    if spec["protocol"] == "s3":
        bucket = f"pd-missing-{uuid.uuid4().hex[:12]}"
        # Small parts: a 5 MiB + 1 file is a multipart upload.
        return {**spec["options"], "remotepath": f"s3://{bucket}/pre", "part_size": 5 * MiB,
                "put_threshold": 5 * MiB}, bucket
    root = spec["options"]["remotepath"].rstrip("/") + f"-missing-{uuid.uuid4().hex[:8]}"
    return {**spec["options"], "remotepath": root + "/"}, root.rsplit("/", 1)[-1]


def _names_root(err: NotFoundError, root: str) -> None:
    assert err.code == 1001
    assert root in err.message or any(root in str(v) for v in err.data.values()), (err.message, err.data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_write_makes_a_missing_root(request: pytest.FixtureRequest, backend: str, tmp_path: Path,
                                       pd_env: dict[str, Path]) -> None:
    spec = get_spec(request, backend)
    options, root = _missing(spec)
    small, big = tmp_path / "small.csv", tmp_path / "big.bin"
    small.write_text("a,b\n1,2\n")
    big.write_bytes(b"z" * (5 * MiB + 1))
    with PipeClient(request_timeout_s=120) as c:
        c.upsert_remote(settings_of(spec, "gone", options=options))
        for src in (small, big):  # one PUT, and multipart on S3
            with pytest.raises(NotFoundError) as err:
                c.upload(src, remote="gone", key=f"sub/{src.name}")
            _names_root(err.value, root)

        c.upsert_pipe({"name": "pp", "remote": "gone"})
        pipe = c.pipe("pp")
        pipe.dirpath.mkdir(parents=True, exist_ok=True)
        (pipe.dirpath / "x.csv").write_text("1\n")
        with pytest.raises(NotFoundError) as err:
            pipe.push(cached=False)
        _names_root(err.value, root)

        fs = PipedaemonFileSystem(skip_instance_cache=True)
        with pytest.raises(NotFoundError) as err:
            fs.pipe_file("gone/f/y.bin", b"hello")
        _names_root(err.value, root)

        out = pd("cp", str(small), "gone:c/small.csv")
        assert out.returncode != 0 and "Traceback" not in out.stderr and root in out.stderr, out.stderr

        srcdir = tmp_path / "src"
        (srcdir / "m").mkdir(parents=True)
        (srcdir / "m" / "z.csv").write_text("z\n")
        c.upsert_remote({"name": "here", "protocol": "local", "options": {"remotepath": str(srcdir)}})
        with pytest.raises(NotFoundError) as err:
            c.mirror("here:m/", "gone:m/")
        _names_root(err.value, root)

        if backend != "s3":  # a bucket here is a folder below the root: its mkdir must not make the root
            with pytest.raises(NotFoundError) as err:
                c.datastore("gone").create_bucket("b1")
            _names_root(err.value, root)

        check = c.check_remote("gone")
        assert check["error"]["code"] == 1001, "still missing after every write"
        if backend == "s3":
            s3 = request.getfixturevalue("s3_client")
            names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
            assert root not in names, "a write created the bucket"
        # Asked for: with create_root the first write makes it (on S3 create_bucket does).
        if backend != "s3":
            c.upsert_remote(settings_of(spec, "gone", options={**options, "create_root": True}))
            assert c.datastore("gone").create_bucket("b1") is True
            assert c.check_remote("gone")["ok"] is True
