"""Local servers for the benchmarks: the same ones the tests start, outside pytest.

Each is a context manager that yields the tests' own server object, so benchmark
and tests exercise identical setups: moto_server on a free port, OpenSSH sshd with
its own config and keys in a temp dir, pyftpdlib in its own process.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh

from tests.servers import ftp as ftp_mod
from tests.servers import s3 as s3_mod
from tests.servers import sftp as sftp_mod

S3Server = s3_mod.S3Server
SSHDServer = sftp_mod.SSHDServer
FTPServer = ftp_mod.FTPServer
RequestLog = s3_mod.RequestLog  # what moto_server received: explains where S3 time goes
SftpLog = sftp_mod.SftpLog  # what sftp-server logged (after sftp_log_requests)
sftp_log_requests = sftp_mod.log_requests


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    with _workdir("pd-bench-moto-") as base:
        server = s3_mod._start_moto(base)
        try:
            yield server
        finally:
            s3_mod._stop(server.proc)


@contextlib.contextmanager
def sftp_server() -> Iterator[SSHDServer]:
    with _workdir("pd-bench-sshd-") as base:
        server = sftp_mod.start_sshd(base, asyncssh.generate_private_key("ssh-ed25519"))
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def ftp_server() -> Iterator[FTPServer]:
    # The tests' launcher is a generator (a pytest fixture body): drive it as a context manager.
    with _workdir("pd-bench-ftp-") as base:
        with contextlib.contextmanager(ftp_mod._start_pyftpdlib)(base) as server:
            yield server


def s3_bucket(server: S3Server) -> str:
    """A fresh bucket on ``server``."""
    name = s3_mod.new_bucket_name("bench")
    server.boto3_client().create_bucket(Bucket=name)
    return name


def s3_drop_bucket(server: S3Server, bucket: str) -> None:
    """Empty and remove a bucket: moto keeps objects in memory."""
    s3_mod._empty_and_remove(server.boto3_client(), bucket)


def s3_spec(server: S3Server, bucket: str) -> dict[str, Any]:
    return s3_mod.spec_for(server, bucket)


def sftp_spec(server: SSHDServer) -> dict[str, Any]:
    return sftp_mod.make_spec(server)


def ftp_spec(server: FTPServer) -> dict[str, Any]:
    return server.spec()


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
