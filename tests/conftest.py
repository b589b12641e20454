"""Every test runs against its own PIPEDAEMON_HOME and socket: never the real home.

The fixtures every folder uses are here: the servers (tests/servers/, as plugins), ``pd_env``,
``reaper``, ``client``, ``spec`` and ``storage`` (each over the one list of backends,
tests/servers/__init__.py). A folder's own fixtures are in its conftest.py; plain helpers
(no fixtures) in tests/support/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pipedaemon_sdk import PipeClient
from tests import secret_scan
from tests.servers import BACKENDS
from tests.support.pipes import Storage, storage_on
from tests.support.spine import stop_all
from tests.support.storage import get_spec

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


@pytest.fixture(autouse=True)
def reaper(pd_env: dict[str, Path]) -> Iterator[None]:
    """Whatever daemons the test started for its socket are gone when it ends."""
    yield
    stop_all(pd_env["socket"])


@pytest.fixture
def client(pd_env: dict[str, Path], tmp_path: Path) -> Iterator[PipeClient]:
    """A client of this test's own daemon (auto-started), whose default profile keeps pipe files
    under tmp_path/repo; the daemon is stopped when the test ends, its log kept in tmp_path."""
    c = PipeClient(request_timeout_s=120).connect()
    c.update_profile_config({"filerepo": str(tmp_path / "repo")})
    try:
        yield c
    finally:  # the daemon's log outlives the test's home, for a failure's post-mortem
        for log in pd_env["home"].glob("daemon.log*"):  # rotated ones too: a soak writes many
            with contextlib.suppress(OSError):
                shutil.copy(log, tmp_path / log.name)
        c.close()
        with contextlib.suppress(Exception), PipeClient(auto_start=False) as last:  # never start one
            last.shutdown()


@pytest.fixture(params=BACKENDS)
def spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A fresh, empty scratch root on one backend's real server."""
    return {**get_spec(request, request.param), "backend": request.param}


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    """Remote ``r`` on each kind of server, registered, with direct access to its files."""
    return storage_on(request, client, request.param)


@pytest.fixture
def local_storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    return storage_on(request, client, "local")


# S3 sets an object's modification time itself: the other kinds keep the times we set.
@pytest.fixture(params=[b for b in BACKENDS if b != "s3"])
def mtime_storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    return storage_on(request, client, request.param)


@pytest.fixture
def s3_storage(request: pytest.FixtureRequest, client: PipeClient) -> Storage:
    return storage_on(request, client, "s3")


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
