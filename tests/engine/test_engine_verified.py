"""Verified before visible, and bounded retries, against real servers through the fault proxy.

A byte flipped on its way to S3 is refused by S3 itself (every PUT and part carries its
Content-MD5): nothing appears under the final name, and the job fails 1009 or succeeds on a
retry. ``object.read`` from a server that stops answering resumes from the offset it reached,
a bounded number of times, then ends 1008, while other clients keep being served.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import ChecksumMismatchError, PipeClient, StorageError
from tests.support.engine import make_file, sha256
from tests.support.faultproxy import FaultProxy
from tests.support.storage import register

MiB = 2**20


def _port(spec: dict[str, Any]) -> int:
    return int(spec["options"]["endpoint_url"].rsplit(":", 1)[1])


def _via(spec: dict[str, Any], proxy: FaultProxy, **options: Any) -> dict[str, Any]:
    return {**spec, "options": {**spec["options"], "endpoint_url": f"http://127.0.0.1:{proxy.port}",
                                **options}}


def _keys(s3_client: Any, spec: dict[str, Any]) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=spec["root"].rstrip("/"))
    return [o["Key"] for o in listed.get("Contents", [])]


def _uploads(s3_client: Any, spec: dict[str, Any]) -> list[Any]:
    return s3_client.list_multipart_uploads(Bucket=spec["root"].rstrip("/")).get("Uploads", [])


@pytest.mark.parametrize("size", [3 * MiB, 11 * MiB + 5])  # one PUT; 5 MiB parts + a tail
def test_body_damaged_on_the_way_up_is_refused_before_it_is_visible(
        size: int, s3_spec: dict[str, Any], s3_client: Any, client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    digest = make_file(src, size, seed=5)
    options = {"part_size": 5 * MiB, "put_threshold": 5 * MiB}
    with FaultProxy(_port(s3_spec), lambda n: ("corrupt_every_up", MiB)) as proxy:
        register(client, _via(s3_spec, proxy), "r", **options)
        with pytest.raises(ChecksumMismatchError):
            client.upload(src, remote="r", key="never.bin")
        assert proxy.fired
        assert _keys(s3_client, s3_spec) == [] and _uploads(s3_client, s3_spec) == []
        # Damaged once (the first connection), then clean: the retry sends it again.
        proxy.drop_all()
        first = proxy.connections
        proxy.set_schedule(lambda n: ("corrupt_every_up", MiB) if n == first else ("pass",))
        up = client.upload(src, remote="r", key="once.bin")
        assert up.size == size and _keys(s3_client, s3_spec) == ["once.bin"]
        got = client.download(remote="r", key="once.bin", dest=tmp_path / "back.bin")
        assert sha256(Path(got.files[0].local_path)) == digest
        stored = s3_client.head_object(Bucket=s3_spec["root"].rstrip("/"), Key="once.bin")["ETag"]
        assert stored.strip('"') == up.etag  # what is stored is what the engine verified


def test_object_read_resumes_then_gives_up_with_1008(s3_spec: dict[str, Any], s3_client: Any,
                                                     client: PipeClient, tmp_path: Path,
                                                     pd_env: dict[str, Path]) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 3 * MiB, seed=6)
    data = src.read_bytes()
    s3_client.upload_file(str(src), s3_spec["root"].rstrip("/"), "a.bin")
    bucket = s3_spec["root"].rstrip("/")
    # Each connection answers 1.5 MiB, then stops answering (past the 0.5 s read timeout).
    with FaultProxy(_port(s3_spec), lambda n: ("stall_after", 3 * MiB // 2, 30)) as proxy:
        register(client, _via(s3_spec, proxy), "r", read_timeout=0.5)
        ds = client.datastore("r").get_bucket(bucket)
        assert ds.get("a.bin").read() == data  # resumed from the offset it had reached
        assert len(proxy.fired) >= 2
        # Now a server that answers a header's worth per connection and then nothing.
        proxy.set_schedule(lambda n: ("stall_after", 2000, 30))
        proxy.drop_all()
        outcome: list[BaseException | bytes] = []

        def read() -> None:
            try:
                outcome.append(client.datastore("r").get_bucket(bucket).get("a.bin").read())
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        with PipeClient() as other:  # another client of the same daemon is served meanwhile
            while reader.is_alive():
                assert other.ping() is not None
                reader.join(0.2)
    assert len(outcome) == 1 and isinstance(outcome[0], StorageError), outcome
    assert outcome[0].code == 1008
    # The daemon gave up by its policy (5 attempts), not by some other failure.
    log = (pd_env["home"] / "daemon.log").read_text()
    assert "stream object.read ended early: [1008] read a.bin" in log and "gave up after 5 attempts" in log
