"""The d6tpipe tests' fixtures: the real d6tpipe 1.2.7, and d6tpipe's config in a temporary HOME."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.d6tpipe.helpers import CLOSED_PORT


@pytest.fixture(scope="session")
def real_d6tpipe(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real d6tpipe module. Its d6tcollect phones home: switched off before import, its server
    pointed at a closed loopback port, and its event database kept in a temporary HOME."""
    home = tmp_path_factory.mktemp("d6thome")
    old_home = os.environ.get("HOME")
    os.environ["D6TCOLLECT_SVR"] = CLOSED_PORT
    os.environ["HOME"] = str(home)
    try:
        import d6tcollect

        d6tcollect.submit = False
        d6tcollect.host = CLOSED_PORT
        mod = importlib.import_module("d6tpipe")
    except ImportError as exc:
        unavailable(f"d6tpipe 1.2.7 is not installed (pip install d6tpipe==1.2.7): {exc}")
    finally:
        if old_home is not None:
            os.environ["HOME"] = old_home
    assert sys.modules["d6tcollect"].submit is False
    return mod


@pytest.fixture
def d6t_home(client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """d6tpipe's ``~/d6tpipe/cfg.json`` in a temporary HOME (the daemon is already running)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
