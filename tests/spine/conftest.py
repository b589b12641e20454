"""The spine's fixtures: a daemon started each of the three ways users start one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.spine import Started, close_started, start_daemon


@pytest.fixture(params=["autostart", "serve", "activation"])
def daemon(request: pytest.FixtureRequest, pd_env: dict[str, Path]) -> Iterator[Started]:
    """A daemon started each way users start one: SDK auto-start, `serve`, systemd activation."""
    st = start_daemon(request.param, pd_env)
    yield st
    close_started(st)
