"""fsspec's own abstract suites (Copy, Get, Put, Open, Pipe) on pipedaemon:// over every kind of remote.

Run as s3fs runs them: the suites' classes mixed with our fixtures. Folders are
implied by names on every remote (as on S3), hence ``supports_empty_directories``
is False.

Every suite runs whole on the local remote. On the other kinds of tests/servers/
(S3, SFTP over both transports, FTP, FTPS, pure-ftpd) the three ``*_glob_edge_cases``
tests (about 30 parametrizations each: 90 tests per backend, minutes of suite time) are
left out by default: they exercise fsspec's client-side glob expansion over the daemon's
listing, which is the same code and the same cached listing whatever the backend.
``PIPEDAEMON_FSSPEC_ALL=1`` runs them on every backend too (they passed on S3, SFTP and FTP).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from fsspec.tests import abstract

from pipedaemon_sdk.fsspec import PipedaemonFileSystem
from tests.fsspec.helpers import Daemon, remote_spec
from tests.fsspec.helpers import unique as unique_name
from tests.servers import BACKENDS
from tests.support.storage import register

ALL = os.environ.get("PIPEDAEMON_FSSPEC_ALL", "") not in ("", "0")
WHOLE = BACKENDS if ALL else ["local"]
PARTLY = [] if ALL else [b for b in BACKENDS if b not in WHOLE]


def make_fs(request: pytest.FixtureRequest, daemon: Daemon) -> Any:
    name = register(daemon.client, remote_spec(request, request.param), request.param)
    fs = PipedaemonFileSystem(socket_path=str(daemon.socket), skip_instance_cache=True)
    fs.test_remote = name
    return fs


class DaemonFixtures(abstract.AbstractFixtures):
    @pytest.fixture(scope="class", params=WHOLE)
    def fs(self, request: pytest.FixtureRequest, daemon: Daemon) -> Any:
        return make_fs(request, daemon)

    @pytest.fixture
    def fs_path(self, fs: Any) -> str:
        return f"{fs.test_remote}/{unique_name()}"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class TestCopy(abstract.AbstractCopyTests, DaemonFixtures):
    pass


class TestGet(abstract.AbstractGetTests, DaemonFixtures):
    pass


class TestPut(abstract.AbstractPutTests, DaemonFixtures):
    pass


class TestOpen(abstract.AbstractOpenTests, DaemonFixtures):
    pass


class TestPipe(abstract.AbstractPipeTests, DaemonFixtures):
    pass


if PARTLY:  # not defined at all otherwise: an empty parametrization would show as a skip
    class PartlyFixtures(DaemonFixtures):
        @pytest.fixture(scope="class", params=PARTLY)
        def fs(self, request: pytest.FixtureRequest, daemon: Daemon) -> Any:
            return make_fs(request, daemon)

    class TestCopyRemotes(abstract.AbstractCopyTests, PartlyFixtures):
        test_copy_glob_edge_cases = None

    class TestGetRemotes(abstract.AbstractGetTests, PartlyFixtures):
        test_get_glob_edge_cases = None

    class TestPutRemotes(abstract.AbstractPutTests, PartlyFixtures):
        test_put_glob_edge_cases = None

    class TestOpenRemotes(abstract.AbstractOpenTests, PartlyFixtures):
        pass

    class TestPipeRemotes(abstract.AbstractPipeTests, PartlyFixtures):
        pass
