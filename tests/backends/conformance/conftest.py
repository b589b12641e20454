"""Fixtures for the conformance suite.

tests/conftest.py loads the network servers as plugins; the local folder "server"
is pulled in here so the suite always has at least one backend to run.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: moves 100 MiB per backend; deselect with -m 'not slow'")
