"""The transfer engine end to end through the daemon, on every backend's real server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient, ProgressEvent
from tests.servers import BACKENDS
from tests.support.engine import make_file, sha256, temp_leftovers
from tests.support.storage import register

SIZES = [0, 1000, 20 * 2**20 + 12345]  # empty, one stream, and parallel chunks


@pytest.mark.parametrize("backend", BACKENDS)
def test_upload_download_roundtrip(backend: str, request: pytest.FixtureRequest, client: PipeClient,
                                   tmp_path: Path) -> None:
    spec = request.getfixturevalue(f"{backend}_spec")
    register(client, spec, "r")
    for size in SIZES:
        src = tmp_path / f"src-{size}.bin"
        digest = make_file(src, size, seed=size)
        events: list[ProgressEvent] = []
        up = client.upload(src, remote="r", key=f"dir one/é-{size}.bin", on_progress=events.append)
        assert (up.size, up.key) == (size, f"dir one/é-{size}.bin")
        assert events and events[-1].bytes_done == size == events[-1].bytes_total
        dest = tmp_path / "down" / ""
        got = client.download(remote="r", key=f"dir one/é-{size}.bin", dest=f"{dest}/")
        local = Path(got.files[0].local_path)
        assert local == dest / f"é-{size}.bin" and got.files[0].size == size
        assert sha256(local) == digest
        stat = client.call("object.stat", {"remote": "r", "key": f"dir one/é-{size}.bin"})
        remote_mtime = stat["modified_at"]
        assert remote_mtime is not None and abs(local.stat().st_mtime - remote_mtime) < 1.0
    assert temp_leftovers(tmp_path) == []


def test_download_to_a_file_path_replaces_only_when_whole(s3_spec: dict[str, Any], client: PipeClient,
                                                          tmp_path: Path) -> None:
    register(client, s3_spec, "r")
    src = tmp_path / "a.bin"
    digest = make_file(src, 3 * 2**20)
    client.upload(src, remote="r", key="a.bin")
    target = tmp_path / "out" / "renamed.bin"
    target.parent.mkdir()
    target.write_bytes(b"old contents")
    client.download(remote="r", key="a.bin", dest=target)
    assert sha256(target) == digest
    assert os.listdir(target.parent) == ["renamed.bin"]


def test_s3_multipart_etag_matches_hash_file(s3_spec: dict[str, Any], client: PipeClient,
                                             tmp_path: Path) -> None:
    register(client, s3_spec, "r")
    src = tmp_path / "big.bin"
    make_file(src, 21 * 2**20)
    up = client.upload(src, remote="r", key="big.bin", chunk_size_mb=5)
    assert up.etag is not None and up.etag.endswith("-5")
    assert client.hash_file(src, algorithm="s3etag", part_size=5 * 2**20) == {"s3etag": up.etag}


def test_chunk_size_below_s3_minimum_is_refused(s3_spec: dict[str, Any], client: PipeClient,
                                                tmp_path: Path) -> None:
    from pipedaemon_sdk import InvalidParamsError

    register(client, s3_spec, "r")
    src = tmp_path / "a.bin"
    make_file(src, 10)
    with pytest.raises(InvalidParamsError) as info:
        client.upload(src, remote="r", key="a.bin", chunk_size_mb=1)
    assert info.value.data["field"] == "chunk_size_mb"


def test_daemon_limits_can_be_read_and_changed(client: PipeClient) -> None:
    assert client.call("daemon.limits", {})["max_streams"] >= 1
    out = client.call("daemon.limits", {"max_streams": 4, "remote_streams": 2, "bwlimit_bps": 0})
    assert out == {"max_streams": 4, "remote_streams": 2, "bwlimit_bps": 0}
