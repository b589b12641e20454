"""A real S3 endpoint for the tests: ``moto_server`` in its own process on loopback.

Fixtures:
- ``s3_server`` (session): the main server, no auth checks; endpoint url + keys.
- ``s3_auth_server`` (session, started only when asked for): a second server that
  enforces IAM signatures and policies, with one admin user; for wrong-key tests.
- ``s3_client`` (session): a plain boto3 client on ``s3_server``.
- ``s3_spec`` (function): a fresh, empty bucket as a backend spec (root "<bucket>/").
- ``s3_request_log`` (function): the (method, path) of every request ``s3_server``
  received since the test began, read from moto's access log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import secret_scan
from tests.conftest import unavailable

REGION = "us-east-1"
FAKE_KEY_ID = "testing"
FAKE_SECRET = "pd-moto-secret-7f3a9c2e"  # moto without auth takes any; distinctive for the scan
secret_scan.remember(FAKE_SECRET)
START_TIMEOUT_S = 60.0
# werkzeug's access log line: 127.0.0.1 - - [date] "GET /path?q HTTP/1.1" 200 -
_ACCESS_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours lines by status


@dataclass
class S3Server:
    endpoint_url: str
    log_path: Path
    aws_access_key_id: str = FAKE_KEY_ID
    aws_secret_access_key: str = FAKE_SECRET
    region: str = REGION
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def credentials(self) -> dict[str, str]:
        return {"aws_access_key_id": self.aws_access_key_id,
                "aws_secret_access_key": self.aws_secret_access_key}

    def boto3_client(self, service: str = "s3", **keys: str) -> Any:
        import boto3

        creds = self.credentials() | keys
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region, **creds)


class RequestLog:
    """Requests a server logged after ``start``: a test's own traffic."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.start = log_path.stat().st_size

    def entries(self, with_status: bool = False) -> list[tuple[str, ...]]:
        with self.log_path.open("rb") as f:
            f.seek(self.start)
            text = _ANSI.sub("", f.read().decode("utf-8", "replace"))
        found = (_ACCESS_LINE.search(line) for line in text.splitlines())
        return [(m[1], m[2], m[3]) if with_status else (m[1], m[2]) for m in found if m]

    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(1 for m, p in self.entries() if (method in (None, m)) and contains in p)

    def reset(self) -> None:
        self.start = self.log_path.stat().st_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_server_exe() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _start_moto(workdir: Path, env: dict[str, str] | None = None) -> S3Server:
    """Start moto_server on a free port and wait until it answers HTTP."""
    last_error = "did not start"
    for attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        log_path = workdir / f"moto-{port}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [_moto_server_exe(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True, cwd=workdir,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(url):
                return S3Server(endpoint_url=url, log_path=log_path, proc=proc)
            time.sleep(0.1)
        _stop(proc)
        last_error = f"attempt {attempt + 1}: " + log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"moto_server failed to start: {last_error}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _server(prefix: str, env: dict[str, str] | None = None) -> Iterator[S3Server]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server: S3Server | None = None
    try:
        try:
            server = _start_moto(workdir, env)
        except (OSError, RuntimeError) as exc:
            unavailable(str(exc))
        assert server is not None
        yield server
    finally:
        _stop(server.proc if server else None)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with _server("pd-moto-") as server:
        yield server


def _enforce_auth(server: S3Server) -> None:
    """Create an IAM admin user, take its keys, then make moto check every request."""
    iam = server.boto3_client("iam")
    iam.create_user(UserName="pd-test")
    key = iam.create_access_key(UserName="pd-test")["AccessKey"]
    policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
    iam.put_user_policy(UserName="pd-test", PolicyName="all", PolicyDocument=policy)
    # text/plain: with urllib's default form type moto would read an empty body.
    req = urllib.request.Request(server.endpoint_url + "/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    server.aws_access_key_id = key["AccessKeyId"]
    server.aws_secret_access_key = key["SecretAccessKey"]
    secret_scan.remember(key["SecretAccessKey"])


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[S3Server]:
    with _server("pd-moto-auth-") as server:
        try:
            _enforce_auth(server)
        except Exception as exc:  # noqa: BLE001 - any setup failure means "no auth server"
            unavailable(f"could not set up moto auth: {exc!r}")
        yield server


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Any:
    return s3_server.boto3_client()


def new_bucket_name(prefix: str = "pd") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _empty_and_remove(client: Any, bucket: str) -> None:
    """Best effort: keep moto's memory small across a long session."""
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for up in uploads:
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        client.delete_bucket(Bucket=bucket)


def spec_for(server: S3Server, bucket: str) -> dict[str, Any]:
    return {
        "protocol": "s3",
        "options": {"endpoint_url": server.endpoint_url, "region": server.region,
                    "remotepath": f"s3://{bucket}/"},
        "credentials": server.credentials(),
        "root": f"{bucket}/",
    }


@pytest.fixture
def s3_spec(s3_server: S3Server, s3_client: Any) -> Iterator[dict[str, Any]]:
    bucket = new_bucket_name()
    s3_client.create_bucket(Bucket=bucket)
    yield spec_for(s3_server, bucket)
    _empty_and_remove(s3_client, bucket)


@pytest.fixture
def s3_request_log(s3_server: S3Server) -> RequestLog:
    return RequestLog(s3_server.log_path)
