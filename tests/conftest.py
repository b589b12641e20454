"""Every test runs against its own PIPEDAEMON_HOME and socket: never the real home."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Real storage servers on loopback, one module per server (each owns its fixtures).
pytest_plugins = [
    "tests.servers.s3",
    "tests.servers.sftp",
    "tests.servers.ftp",
    "tests.servers.local",
]


@pytest.fixture(autouse=True)
def pd_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    # Short paths: a Unix socket path must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))
    home = base / "home"
    sock = base / "run" / "pipedaemon.sock"
    monkeypatch.setenv("PIPEDAEMON_HOME", str(home))
    monkeypatch.setenv("PIPEDAEMON_SOCKET", str(sock))
    monkeypatch.delenv("PIPEDAEMON_KEY", raising=False)
    yield {"base": base, "home": home, "socket": sock}
    shutil.rmtree(base, ignore_errors=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
