"""Fixtures for the conformance suite.

tests/conftest.py loads the network servers as plugins; the local folder "server"
is pulled in here so the suite always has at least one backend to run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon.backends.local import LocalBackend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: moves 100 MiB per backend; deselect with -m 'not slow'")


@pytest.fixture
async def local(local_spec: dict[str, Any]) -> AsyncIterator[tuple[LocalBackend, Path]]:
    """A connected local-folder backend and its root (the local backend's own tests)."""
    b = LocalBackend(local_spec["options"], local_spec["credentials"], max_streams=4)
    await b.connect()
    yield b, Path(local_spec["root"])
    await b.close()
