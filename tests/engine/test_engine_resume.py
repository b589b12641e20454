"""kill -9 at any moment loses no finished work: the next daemon resumes mid-file (rule 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.support.engine import kill_daemon, make_file, sha256, temp_leftovers, wait_progress
from tests.support.storage import register

SIZE = 60 * 2**20
CHUNK_MB = 5
PARTS = SIZE // (CHUNK_MB * 2**20)
IN_FLIGHT = 8  # the engine's streams per file: the most chunks a kill can cost
SLOW = 12 * 2**20  # bytes per second, so a kill lands mid-transfer


def _restart_and_wait(job_id: str) -> Any:
    with PipeClient() as client:  # auto-starts a new daemon, which resumes the job by itself
        info = client.job(job_id).wait(timeout=300)
        client.shutdown()
    return info


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_s3_upload_resumes_its_multipart_upload(percent: int, s3_spec: dict[str, Any], s3_request_log: Any,
                                                s3_client: Any, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE, seed=percent)
    bucket = s3_spec["root"].rstrip("/")
    with PipeClient() as client:
        register(client, s3_spec, "r")
        s3_request_log.reset()
        job = client.upload(src, remote="r", key="big.bin", chunk_size_mb=CHUNK_MB, wait=False,
                            transfer_timeout_s=None)
        client.call("daemon.limits", {"bwlimit_bps": SLOW})
        wait_progress(client, job.id, percent)
        kill_daemon(client)
    info = _restart_and_wait(job.id)
    assert info.state == "succeeded" and info.result["size"] == SIZE
    obj = s3_client.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    import hashlib

    assert hashlib.sha256(obj).hexdigest() == digest
    sent = s3_request_log.count("PUT", "partNumber=")
    assert PARTS <= sent <= PARTS + IN_FLIGHT, f"{sent} part uploads for {PARTS} parts"
    assert s3_request_log.count("POST", "uploads") == 1  # one upload id, continued
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_s3_download_resumes_from_the_chunks_on_disk(percent: int, s3_spec: dict[str, Any],
                                                      s3_request_log: Any, s3_client: Any,
                                                      tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE, seed=percent + 1)
    bucket = s3_spec["root"].rstrip("/")
    s3_client.upload_file(str(src), bucket, "big.bin")
    dest = tmp_path / "dl"
    with PipeClient() as client:
        register(client, s3_spec, "r")
        s3_request_log.reset()
        client.call("daemon.limits", {"bwlimit_bps": SLOW})
        job = client.download(remote="r", key="big.bin", dest=f"{dest}/", chunk_size_mb=CHUNK_MB,
                              wait=False, transfer_timeout_s=None)
        wait_progress(client, job.id, percent)
        kill_daemon(client)
    assert not (dest / "big.bin").exists()  # never a partial file under the final name
    info = _restart_and_wait(job.id)
    assert info.state == "succeeded"
    assert sha256(dest / "big.bin") == digest
    gets = s3_request_log.count("GET", "big.bin")
    assert PARTS <= gets <= PARTS + IN_FLIGHT, f"{gets} ranged GETs for {PARTS} chunks"
    assert temp_leftovers(dest) == []


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_sftp_transfer_resumes_after_kill(direction: str, sftp_spec: dict[str, Any],
                                          tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE, seed=7)
    with PipeClient() as client:
        register(client, sftp_spec, "r")
        if direction == "download":
            client.upload(src, remote="r", key="big.bin")
        client.call("daemon.limits", {"bwlimit_bps": SLOW})
        if direction == "upload":
            job = client.upload(src, remote="r", key="up/big.bin", chunk_size_mb=CHUNK_MB, wait=False)
        else:
            job = client.download(remote="r", key="big.bin", dest=f"{tmp_path}/dl/", chunk_size_mb=CHUNK_MB,
                                  wait=False)
        wait_progress(client, job.id, 50)
        kill_daemon(client)
    assert _restart_and_wait(job.id).state == "succeeded"
    root = Path(sftp_spec["options"]["remotepath"])
    out = root / "up" / "big.bin" if direction == "upload" else tmp_path / "dl" / "big.bin"
    assert sha256(out) == digest
    assert temp_leftovers(root) == [] and temp_leftovers(tmp_path / "dl") == []


def test_graceful_stop_checkpoints_and_the_next_daemon_finishes(s3_spec: dict[str, Any], s3_client: Any,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE, seed=3)
    with PipeClient() as client:
        register(client, s3_spec, "r")
        client.call("daemon.limits", {"bwlimit_bps": SLOW})
        job = client.upload(src, remote="r", key="big.bin", chunk_size_mb=CHUNK_MB, wait=False)
        wait_progress(client, job.id, 30)
        client.shutdown()
    info = _restart_and_wait(job.id)
    assert info.state == "succeeded"
    import hashlib

    body = s3_client.get_object(Bucket=s3_spec["root"].rstrip("/"), Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
