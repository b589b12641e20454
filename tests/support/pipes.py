"""Storage to change behind the daemon's back, for the pipe tests (the fixtures: tests/conftest.py).

``storage_on`` registers a remote ``r`` on a real server (any kind of tests/servers/) and
gives direct access to the same files that bypasses the daemon, the way another user or
program would change them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.servers import FTP_KINDS


class Storage:
    """Direct access to a remote's root folder, around the daemon."""

    def __init__(self, kind: str, spec: dict[str, Any], s3: Any = None,
                 disk_root: Path | None = None, owner: tuple[int, int] | None = None) -> None:
        self.kind = kind
        self.spec = spec
        self.s3 = s3
        self.owner = owner  # who must own the files (pure-ftpd works as its own uid)
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
        if self.owner:
            for q in (p, *p.parents[:len(Path(name).parents) - 1]):
                os.chown(q, *self.owner)
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


def storage_on(request: pytest.FixtureRequest, client: PipeClient, kind: str) -> Storage:
    """Remote ``r`` on the ``kind`` server (tests/servers/), registered, and direct access to its files."""
    spec = request.getfixturevalue(f"{kind}_spec")
    s3 = request.getfixturevalue("s3_client") if kind == "s3" else None
    server = request.getfixturevalue(f"{kind}_server") if kind in FTP_KINDS else None
    st = Storage(kind, spec, s3, server.root_dir if server else None, server.owner if server else None)
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
