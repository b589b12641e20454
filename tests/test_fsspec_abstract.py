"""fsspec's own abstract suites (Copy, Get, Put, Open, Pipe) on pipedaemon:// over every kind of remote.

Run as s3fs runs them: the suites' classes mixed with our fixtures. Folders are
implied by names on every remote (as on S3), hence ``supports_empty_directories``
is False.
"""

from __future__ import annotations

from typing import Any

import pytest
from fsspec.tests import abstract

from pipedaemon_sdk.fsspec import PipedaemonFileSystem
from tests.fsspec_helpers import BACKENDS, Daemon, daemon, register, remote_spec
from tests.fsspec_helpers import unique as unique_name

__all__ = ["daemon"]


class DaemonFixtures(abstract.AbstractFixtures):
    @pytest.fixture(scope="class", params=BACKENDS)
    def fs(self, request: pytest.FixtureRequest, daemon: Daemon) -> Any:
        name = register(daemon.client, remote_spec(request, request.param), request.param)
        fs = PipedaemonFileSystem(socket_path=str(daemon.socket), skip_instance_cache=True)
        fs.test_remote = name
        return fs

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
