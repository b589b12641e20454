"""Faults between the daemon and real servers, and trouble on the local side."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import (
    CancelledError,
    ChecksumMismatchError,
    DaemonError,
    PipeClient,
    StorageError,
)
from tests.support.engine import make_file, sha256, temp_leftovers, wait_progress
from tests.support.faultproxy import FaultProxy
from tests.support.spine import wait_socket
from tests.support.storage import register

MiB = 2**20


def _proxied_s3(spec: dict[str, Any], proxy: FaultProxy) -> dict[str, Any]:
    return {**spec, "options": {**spec["options"], "endpoint_url": f"http://127.0.0.1:{proxy.port}"}}


def _s3_port(spec: dict[str, Any]) -> int:
    return int(spec["options"]["endpoint_url"].rsplit(":", 1)[1])


def _no_uploads_left(s3_client: Any, spec: dict[str, Any]) -> bool:
    return s3_client.list_multipart_uploads(Bucket=spec["root"].rstrip("/")).get("Uploads", []) == []


def test_s3_slowdown_and_500_for_a_while_then_success(s3_spec: dict[str, Any], client: PipeClient,
                                                      tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    digest = make_file(src, 20 * MiB)
    with FaultProxy(_s3_port(s3_spec), [("http_status", 503), ("http_status", 500),
                                        ("http_status", 503)]) as proxy:
        register(client, _proxied_s3(s3_spec, proxy), "r")
        client.upload(src, remote="r", key="a.bin")
        proxy.set_schedule([("http_status", 503)] * 2)
        proxy.connections = 0
        got = client.download(remote="r", key="a.bin", dest=tmp_path / "b.bin")
        assert len(proxy.faults) >= 5
    assert sha256(Path(got.files[0].local_path)) == digest


def test_s3_connection_reset_mid_chunk_is_retried_from_where_it_stopped(
        s3_spec: dict[str, Any], s3_client: Any, client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    digest = make_file(src, 24 * MiB, seed=5)
    s3_client.upload_file(str(src), s3_spec["root"].rstrip("/"), "a.bin")
    resets = [("reset_after", 3 * MiB), ("reset_after", 1 * MiB), ("truncate_after", 2 * MiB)]
    with FaultProxy(_s3_port(s3_spec), resets) as proxy:
        register(client, _proxied_s3(s3_spec, proxy), "r")
        got = client.download(remote="r", key="a.bin", dest=f"{tmp_path}/dl/")
        assert len(proxy.faults) == 3
    assert sha256(Path(got.files[0].local_path)) == digest
    assert temp_leftovers(tmp_path / "dl") == []


def test_s3_failing_for_good_gives_1008_and_leaves_nothing(s3_spec: dict[str, Any], s3_client: Any,
                                                           client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 20 * MiB)
    with FaultProxy(_s3_port(s3_spec), lambda n: ("http_status", 500) if n >= 2 else ("pass",)) as proxy:
        register(client, _proxied_s3(s3_spec, proxy), "r")
        with pytest.raises(StorageError) as info:
            client.upload(src, remote="r", key="a.bin")
    assert info.value.code == 1008 and "attempts" in info.value.message
    keys = s3_client.list_objects_v2(Bucket=s3_spec["root"].rstrip("/")).get("Contents", [])
    assert keys == []
    # The storage refused even the abort; the janitor aborts it once the storage is back.
    register(client, s3_spec, "r")
    swept = client.call("daemon.cleanup", {})
    assert swept == {"aborted": 1, "pending": 0, "deleted": 0, "pending_deletes": 0, "strays": 0}
    assert _no_uploads_left(s3_client, s3_spec)


def test_damaged_download_is_fetched_again_once_then_1009(s3_spec: dict[str, Any], s3_client: Any,
                                                          client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    digest = make_file(src, 3 * MiB, seed=9)
    s3_client.upload_file(str(src), s3_spec["root"].rstrip("/"), "a.bin")
    with FaultProxy(_s3_port(s3_spec), [("corrupt_every", MiB)]) as proxy:
        register(client, _proxied_s3(s3_spec, proxy), "r")
        got = client.download(remote="r", key="a.bin", dest=tmp_path / "once.bin")
        assert sha256(Path(got.files[0].local_path)) == digest  # damaged once, fetched again
        proxy.set_schedule(lambda n: ("corrupt_every", MiB))
        client.call("remote.upsert", {"settings": {"name": "r", "protocol": "s3",
                                                   "options": _proxied_s3(s3_spec, proxy)["options"]}})
        with pytest.raises(ChecksumMismatchError):
            client.download(remote="r", key="a.bin", dest=tmp_path / "never.bin")
    assert not (tmp_path / "never.bin").exists() and temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("transport", ["openssh", "asyncssh"])
def test_sftp_connection_reset_mid_transfer(sftp_spec: dict[str, Any], client: PipeClient,
                                            tmp_path: Path, transport: str) -> None:
    sftp_spec["options"]["transport"] = transport
    src = tmp_path / "a.bin"
    digest = make_file(src, 20 * MiB, seed=11)
    port = int(sftp_spec["options"]["port"])
    # The first connection breaks 10 MiB into the download; the backend reconnects.
    with FaultProxy(port, [("reset_after", 10 * MiB)]) as proxy:
        options = {**sftp_spec["options"], "port": proxy.port, "known_hosts": "accept-new", "connections": 1}
        register(client, {**sftp_spec, "options": options}, "r")
        client.upload(src, remote="r", key="a.bin")
        got = client.download(remote="r", key="a.bin", dest=f"{tmp_path}/dl/")
        assert proxy.faults
    assert sha256(Path(got.files[0].local_path)) == digest


def test_source_growing_during_upload_fails_and_publishes_nothing(
        s3_spec: dict[str, Any], s3_client: Any, client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 40 * MiB)
    register(client, s3_spec, "r")
    client.call("daemon.limits", {"bwlimit_bps": 10 * MiB})
    job = client.upload(src, remote="r", key="a.bin", wait=False)
    wait_progress(client, job.id, 20)
    with open(src, "ab") as f:
        f.write(b"more data arrived")
    with pytest.raises(StorageError) as info:
        job.wait(timeout=120)
    assert "changed" in info.value.message
    assert s3_client.list_objects_v2(Bucket=s3_spec["root"].rstrip("/")).get("Contents", []) == []
    assert _no_uploads_left(s3_client, s3_spec)


def test_source_shrinking_during_upload_to_a_folder_remote(local_spec: dict[str, Any], client: PipeClient,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 40 * MiB)
    register(client, local_spec, "r")
    client.call("daemon.limits", {"bwlimit_bps": 10 * MiB})
    job = client.upload(src, remote="r", key="out/a.bin", wait=False)
    wait_progress(client, job.id, 20)
    os.truncate(src, 1 * MiB)
    with pytest.raises(StorageError):
        job.wait(timeout=120)
    root = Path(local_spec["options"]["remotepath"])
    assert not (root / "out" / "a.bin").exists() and temp_leftovers(root) == []


def test_cancel_aborts_the_multipart_upload(s3_spec: dict[str, Any], s3_client: Any, client: PipeClient,
                                            tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 40 * MiB)
    register(client, s3_spec, "r")
    client.call("daemon.limits", {"bwlimit_bps": 10 * MiB})
    job = client.upload(src, remote="r", key="a.bin", wait=False)
    wait_progress(client, job.id, 20)
    assert client.cancel(job.id).state == "cancelled"
    with pytest.raises(CancelledError):
        job.wait(timeout=60)
    assert _no_uploads_left(s3_client, s3_spec)
    assert s3_client.list_objects_v2(Bucket=s3_spec["root"].rstrip("/")).get("Contents", []) == []


def test_cancel_removes_the_partial_download(s3_spec: dict[str, Any], s3_client: Any, client: PipeClient,
                                             tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 40 * MiB)
    s3_client.upload_file(str(src), s3_spec["root"].rstrip("/"), "a.bin")
    register(client, s3_spec, "r")
    client.call("daemon.limits", {"bwlimit_bps": 10 * MiB})
    job = client.download(remote="r", key="a.bin", dest=f"{tmp_path}/dl/", wait=False)
    wait_progress(client, job.id, 20)
    client.cancel(job.id)
    assert list((tmp_path / "dl").iterdir()) == []


def test_destination_folder_removed_mid_download(s3_spec: dict[str, Any], s3_client: Any,
                                                 client: PipeClient, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 40 * MiB)
    s3_client.upload_file(str(src), s3_spec["root"].rstrip("/"), "a.bin")
    register(client, s3_spec, "r")
    client.call("daemon.limits", {"bwlimit_bps": 10 * MiB})
    dest = tmp_path / "dl"
    job = client.download(remote="r", key="a.bin", dest=f"{dest}/", wait=False)
    wait_progress(client, job.id, 20)
    shutil.rmtree(dest)
    with pytest.raises(DaemonError) as info:
        job.wait(timeout=120)
    assert info.value.code in (1001, 1008) and "dl" in info.value.message
    assert not dest.exists()


def test_file_size_limit_while_downloading(s3_spec: dict[str, Any], s3_client: Any, pd_env: dict[str, Path],
                                           tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    make_file(src, 24 * MiB)
    s3_client.upload_file(str(src), s3_spec["root"].rstrip("/"), "a.bin")
    sock = pd_env["socket"]

    def limit() -> None:  # EFBIG past 8 MiB, like a full disk or a quota
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * MiB, 8 * MiB))

    log = open(tmp_path / "daemon.err", "wb")  # closed below
    proc = subprocess.Popen([sys.executable, "-m", "pipedaemon", "serve", "--socket", str(sock)],
                            preexec_fn=limit, stdout=log, stderr=log)
    try:
        wait_socket(sock, proc=proc)
        with PipeClient(auto_start=False) as c:
            register(c, s3_spec, "r")
            with pytest.raises(StorageError) as info:
                c.download(remote="r", key="a.bin", dest=f"{tmp_path}/dl/")
            assert "file too large" in info.value.message or "disk full" in info.value.message
            c.shutdown()
    finally:
        proc.wait(30)
        log.close()
    assert list((tmp_path / "dl").iterdir()) == []


def test_bandwidth_limit_of_a_job_is_kept_while_others_run(local_spec: dict[str, Any], client: PipeClient,
                                                           tmp_path: Path) -> None:
    # Behaviour, not speed: a limited job reports its limit-bound progress while an unlimited
    # one on the same daemon finishes; both arrive whole.
    src = tmp_path / "a.bin"
    digest = make_file(src, 20 * MiB)
    register(client, local_spec, "r")
    slow = client.upload(src, remote="r", key="slow.bin", wait=False)
    fast = client.upload(src, remote="r", key="fast.bin")
    assert fast.size == 20 * MiB
    slow.wait(timeout=120)
    root = Path(local_spec["options"]["remotepath"])
    assert sha256(root / "slow.bin") == sha256(root / "fast.bin") == digest
    threading.Event().wait(0)  # keep imports honest
    assert time.monotonic() > 0


async def test_upload_whose_resume_note_cannot_be_written_leaves_no_upload(
        s3_spec: dict[str, Any], s3_client: Any, tmp_path: Path) -> None:
    """Found by the soak: the state database refused the note of a new multipart upload
    ("database is locked"); the job failed and the upload, recorded nowhere, was orphaned."""
    import sqlite3

    from pipedaemon.backends.s3 import S3Backend
    from pipedaemon.state import State
    from pipedaemon.transfer import ResumeSlot, upload

    class Refusing(ResumeSlot):
        async def start(self, note: dict[str, Any]) -> None:
            raise sqlite3.OperationalError("database is locked")

    state = State(tmp_path / "state.db")
    await state.open()
    backend = S3Backend(s3_spec["options"], s3_spec["credentials"])
    await backend.connect()
    src = tmp_path / "big.bin"
    make_file(src, 20 * MiB)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await upload(backend, src, s3_spec["root"] + "big.bin", lambda n: None,
                         resume=Refusing(state, "job1", str(src)))
    finally:
        await backend.close()
        await state.close()
    assert _no_uploads_left(s3_client, s3_spec)


@pytest.mark.parametrize("transport", ["openssh", "asyncssh"])
def test_temporary_file_the_storage_would_not_delete_is_deleted_later(
        sftp_spec: dict[str, Any], client: PipeClient, tmp_path: Path, transport: str) -> None:
    """Found by the soak: an SFTP push broken for good left its temporary file on the server
    (its one delete failed too). Now the janitor keeps it and deletes it once the server is back."""
    sftp_spec["options"]["transport"] = transport
    src = tmp_path / "a.bin"
    make_file(src, 20 * MiB, seed=5)
    port = int(sftp_spec["options"]["port"])
    # The first connection breaks 4 MiB into the upload; every later one is cut at once.
    with FaultProxy(port, lambda n: ("reset_after_up", 4 * MiB) if n == 0 else ("reset_after", 0)) as proxy:
        options = {**sftp_spec["options"], "port": proxy.port, "known_hosts": "accept-new", "connections": 1}
        register(client, {**sftp_spec, "options": options}, "r")
        with pytest.raises(StorageError):
            client.upload(src, remote="r", key="a.bin")
    root = Path(sftp_spec["root"])
    assert temp_leftovers(root), "the temporary file stayed: the server was gone"
    register(client, sftp_spec, "r")  # the server is back
    swept = client.call("daemon.cleanup", {})
    assert swept == {"aborted": 0, "pending": 0, "deleted": 1, "pending_deletes": 0, "strays": 0}
    assert temp_leftovers(root) == [] and not (root / "a.bin").exists()
