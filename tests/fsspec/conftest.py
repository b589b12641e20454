"""The fsspec tests' daemon: one per test module (tests/fsspec/helpers.py says why)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fsspec.helpers import Daemon, daemon_dir, start_daemon, stop_daemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """One daemon for the whole test module."""
    with daemon_dir() as base:
        d = start_daemon(base)
        try:
            yield d
        finally:
            stop_daemon(d)
