"""A local folder as a remote: nothing to start, just a fresh scratch folder per test.

Fixtures follow the shared server contract: a session-scoped base folder and a
function-scoped ``local_spec`` whose ``root`` is an empty folder unique to the test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def local_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Holds every test's scratch folder; pytest removes old session folders itself."""
    return tmp_path_factory.mktemp("local-remote")


@pytest.fixture
def local_spec(local_base: Path) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="t-", dir=local_base))
    folder = f"{root}/"
    return {
        "protocol": "local",
        "options": {"remotepath": folder},
        "credentials": {},
        "root": folder,
    }
