"""Every test runs against its own PIPEDAEMON_HOME and socket: never the real home."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests import secret_scan

# Real storage servers on loopback, one module per server (each owns its fixtures).
pytest_plugins = [
    "tests.servers.s3",
    "tests.servers.sftp",
    "tests.servers.ftp",
    "tests.servers.local",
    "tests.servers.pipedaemon",
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
    leaks = secret_scan.check(base)
    shutil.rmtree(base, ignore_errors=True)
    if leaks:
        pytest.fail("a secret is in plain text in the daemon's folder: " + "; ".join(leaks))


# -- the suite-wide secret scan's totals (tests/secret_scan.py), summed over xdist workers --
def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the totals to the controller
        workeroutput["secret_scan"] = vars(secret_scan.TOTALS)


def pytest_testnodedown(node: object, error: object) -> None:
    secret_scan.TOTALS.add(getattr(node, "workeroutput", {}).get("secret_scan", {}))


def pytest_terminal_summary(terminalreporter: object) -> None:
    if secret_scan.TOTALS.folders:
        terminalreporter.write_line(secret_scan.TOTALS.line())  # type: ignore[attr-defined]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(msg: str) -> NoReturn:
    """A server or tool a test needs is missing: under CI that fails the run, never a skip;
    on a developer's machine the test is skipped, saying what is missing."""
    if in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)
