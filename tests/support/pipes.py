"""Fixtures for the pipe tests: a daemon client with a temp filerepo, and storage to change behind its back.

``storage`` is a remote registered as ``r`` on a real server (local folder, moto
S3, OpenSSH sftp) plus direct access to the same files that bypasses the daemon,
the way another user or program would change them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.servers.local import local_base, local_spec
from tests.support.spine import reaper

__all__ = ["Storage", "client", "local_base", "local_spec", "local_storage", "mtime_storage", "reaper",
           "s3_storage", "state_db", "storage"]


class Storage:
    """Direct access to a remote's root folder, around the daemon."""

    def __init__(self, kind: str, spec: dict[str, Any], s3: Any = None,
                 disk_root: Path | None = None) -> None:
        self.kind = kind
        self.spec = spec
        self.s3 = s3
        # Where the files are on this machine (an FTP server's paths are under its own root).
        self.root = str(disk_root / spec["root"].lstrip("/")) if disk_root else spec["root"]
        self.bucket = self.root.split("/")[0] if kind == "s3" else ""

    def settings(self, name: str = "r") -> dict[str, Any]:
        return {"name": name, "protocol": self.spec["protocol"], "options": self.spec["options"],
                "credentials": self.spec["credentials"]}

    def _path(self, name: str) -> Path:
        return Path(self.root) / name

    def put(self, name: str, data: bytes | str, mtime: float | None = None) -> None:
        data = data.encode() if isinstance(data, str) else data
        if self.kind == "s3":
            self.s3.put_object(Bucket=self.bucket, Key=name, Body=data)
            return
        p = self._path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if mtime is not None:
            os.utime(p, (mtime, mtime))

    def read(self, name: str) -> bytes:
        if self.kind == "s3":
            return self.s3.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        return self._path(name).read_bytes()

    def delete(self, name: str) -> None:
        if self.kind == "s3":
            self.s3.delete_object(Bucket=self.bucket, Key=name)
        else:
            self._path(name).unlink()

    def names(self) -> set[str]:
        if self.kind == "s3":
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            return {o["Key"] for page in pages for o in page.get("Contents", [])}
        base = Path(self.root)
        return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def client(pd_env: dict[str, Path], tmp_path: Path) -> Iterator[PipeClient]:
    """A daemon (auto-started) whose default profile keeps pipe files under tmp_path/repo."""
    c = PipeClient(request_timeout_s=120).connect()
    c.update_profile_config({"filerepo": str(tmp_path / "repo")})
    yield c
    c.close()
    with contextlib.suppress(Exception), PipeClient(auto_start=False) as last:  # never start one to stop it
        last.shutdown()


@pytest.fixture(params=["local", "s3", "sftp", "ftp"])
def storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    """Remote ``r`` on each kind of server (local folder, moto S3, OpenSSH sftp, pyftpdlib), registered."""
    return _register(request, client, request.param)


@pytest.fixture
def local_storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    return _register(request, client, "local")


@pytest.fixture(params=["local", "sftp"])
def mtime_storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    """Storage whose files keep the modification times we set (S3 sets its own)."""
    return _register(request, client, request.param)


@pytest.fixture
def s3_storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    return _register(request, client, "s3")


def _register(request: pytest.FixtureRequest, client: PipeClient, kind: str) -> Storage:
    spec = request.getfixturevalue(f"{kind}_spec")
    s3 = request.getfixturevalue("s3_client") if kind == "s3" else None
    disk = request.getfixturevalue("ftp_server").root_dir if kind == "ftp" else None
    st = Storage(kind, spec, s3, disk)
    client.upsert_remote(st.settings())
    return st


def state_db(pd_env: dict[str, Path]) -> sqlite3.Connection:
    """The daemon's state database (only while no daemon runs, or for reading)."""
    return sqlite3.connect(pd_env["home"] / "state.db", timeout=30)


def restart(client: PipeClient) -> None:
    """Stop the daemon and reconnect (auto-starting a new one)."""
    pid = client.status().pid
    client.shutdown()
    client.close()
    from tests.support.spine import wait_gone

    wait_gone(pid)
    client.connect()


def bump(path: Path, data: str) -> None:
    """Rewrite a local file so that its mtime surely moves (a different size too)."""
    st = path.stat() if path.exists() else None
    path.write_text(data)
    if st is not None and path.stat().st_mtime_ns == st.st_mtime_ns:
        os.utime(path, (time.time() + 2, time.time() + 2))
