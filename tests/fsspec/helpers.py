"""Shared pieces of the fsspec and Dask tests: daemons of their own, remotes on every server.

The per-test daemon of ``pd_env`` would cost a daemon start for each of the
abstract suites' many tests: these tests share one daemon (its own home and
socket) per module, and name it explicitly (``socket_path``) so ``pd_env``'s
per-test socket does not matter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import DaemonError, PipeClient
from tests import secret_scan
from tests.servers.s3 import new_bucket_name, spec_for
from tests.servers.sftp import make_spec
from tests.support.spine import stop_all


@dataclass
class Daemon:
    base: Path
    home: Path
    socket: Path
    client: PipeClient

    def env(self) -> dict[str, str]:
        return {"PIPEDAEMON_HOME": str(self.home), "PIPEDAEMON_SOCKET": str(self.socket)}


def start_daemon(base: Path, name: str = "d") -> Daemon:
    """A daemon of its own (home and socket under ``base``), auto-started by its first client."""
    home, sock = base / f"{name}-home", base / f"{name}-run" / "pipedaemon.sock"
    saved = {k: os.environ.get(k) for k in ("PIPEDAEMON_HOME", "PIPEDAEMON_SOCKET")}
    os.environ.update(PIPEDAEMON_HOME=str(home), PIPEDAEMON_SOCKET=str(sock))
    try:
        client = PipeClient(socket_path=sock, request_timeout_s=60.0).connect()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Daemon(base, home, sock, client)


def stop_daemon(d: Daemon) -> None:
    with contextlib.suppress(DaemonError, ConnectionError, OSError):
        d.client.shutdown()
    d.client.close()
    stop_all(d.socket)


@contextlib.contextmanager
def daemon_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="pdfs-", dir="/tmp"))
    try:
        yield base
        leaks = secret_scan.check(base)
        if leaks:
            pytest.fail("a secret is in plain text in the daemon's folder: " + "; ".join(leaks))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def remote_spec(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    """A fresh, empty root on ``backend``'s (session-wide) real server."""
    if backend == "local":
        folder = Path(tempfile.mkdtemp(prefix="pdfs-remote-", dir="/tmp"))
        request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
        return {"protocol": "local", "options": {"remotepath": f"{folder}/"}, "credentials": {}}
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = new_bucket_name("pdfs")
        request.getfixturevalue("s3_client").create_bucket(Bucket=bucket)
        return spec_for(server, bucket)
    if backend in ("sftp", "sftp_asyncssh"):
        spec = make_spec(request.getfixturevalue("sftp_server"))
        if backend == "sftp_asyncssh":
            spec["options"]["transport"] = "asyncssh"
        return spec
    return request.getfixturevalue(f"{backend}_server").spec()  # ftp, ftps, pureftpd


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
