"""Nothing unverified stays under a final name, even once it was published.

Where the engine can only check an upload after it is visible (S3's answer to a PUT or to the
completion of a multipart upload; a file server's size of the renamed file) and the check
fails, it removes what it published and reports 1009. Shown on real servers, the fault proxy
telling the daemon a wrong ETag (S3) or a wrong size of the final name (FTP's MLST reply):
the objects themselves are stored whole, but nothing vouches for them, so they must go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import ChecksumMismatchError, PipeClient
from tests.engine.test_engine_verified import _keys, _port, _uploads, _via
from tests.servers.ftp import FTPServer
from tests.support.engine import make_file, sha256, temp_leftovers
from tests.support.faultproxy import FaultProxy
from tests.support.storage import register

MiB = 1 << 20
WRONG = b"0" * 32


@pytest.mark.parametrize(("size", "pattern", "repl"), [
    (1 * MiB, rb'(?i)ETag: "[0-9a-f]{32}"', b'ETag: "' + WRONG + b'"'),  # one PUT's answer
    (11 * MiB + 5, rb"[0-9a-f]{32}-(\d+)", WRONG + rb"-\1"),  # CompleteMultipartUpload's answer
], ids=["put", "multipart"])
def test_s3_object_answered_with_another_etag_is_removed(
        size: int, pattern: bytes, repl: bytes, s3_spec: dict[str, Any], s3_client: Any,
        client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    digest = make_file(src, size, seed=9)
    with FaultProxy(_port(s3_spec), lambda n: ("rewrite", pattern, repl)) as proxy:
        register(client, _via(s3_spec, proxy), "r", part_size=5 * MiB, put_threshold=5 * MiB)
        with pytest.raises(ChecksumMismatchError) as err:
            client.upload(src, remote="r", key="pub.bin")
        assert err.value.code == 1009 and WRONG.decode() in str(err.value)
        assert proxy.fired  # the wrong answer was given, and the object is gone again
        assert _keys(s3_client, s3_spec) == [] and _uploads(s3_client, s3_spec) == []
        proxy.set_schedule(lambda n: ("pass",))
        proxy.drop_all()
        up = client.upload(src, remote="r", key="pub.bin")  # told the truth, it stays
        assert _keys(s3_client, s3_spec) == ["pub.bin"]
        got = client.download(remote="r", key="pub.bin", dest=tmp_path / "back.bin")
        assert sha256(Path(got.files[0].local_path)) == digest and up.size == size


def test_ftp_file_whose_final_name_reports_another_size_is_removed(
        ftp_server: FTPServer, ftp_spec: dict[str, Any], client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    digest = make_file(src, 300_000, seed=10)
    folder = ftp_server.root_dir / ftp_spec["root"].strip("/")
    # Only the final name's MLST facts are wrong: the temporary file checks out, is renamed,
    # and then the final name is said to hold 7 bytes.
    pattern, repl = rb"size=\d+;([^\r\n]* [^\r\n]*/pub\.bin\r\n)", rb"size=7;\1"
    with FaultProxy(ftp_server.port, lambda n: ("rewrite", pattern, repl), ftp_data=True) as proxy:
        spec = {**ftp_spec, "options": {**ftp_spec["options"], "port": proxy.port}}
        register(client, spec, "r")
        with pytest.raises(ChecksumMismatchError) as err:
            client.upload(src, remote="r", key="pub.bin")
        assert err.value.code == 1009 and "stored 7 bytes, sent 300000" in str(err.value)
        assert proxy.fired
        assert sorted(p.name for p in folder.iterdir()) == []  # neither the final nor a temporary name
        proxy.set_schedule(lambda n: ("pass",))
        proxy.drop_all()
        client.upload(src, remote="r", key="pub.bin")
        assert sha256(folder / "pub.bin") == digest
    assert temp_leftovers(folder) == []
