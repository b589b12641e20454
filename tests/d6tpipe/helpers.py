"""Helpers for the d6tpipe tests: the real d6tpipe 1.2.7 (never reaching the network), d6tpipe-style
settings for each test server, and direct access to the files around both libraries."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

CLOSED_PORT = "http://127.0.0.1:9"  # d6tcollect's usage reports go here: nothing listens (discard)


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


def s3_settings(name: str, server: Any, bucket: str, folder: str = "") -> dict[str, Any]:
    """A self-hosted S3 pipe as d6tpipe's docs write it (plus the moto endpoint)."""
    return {"name": name, "protocol": "s3", "location": bucket,
            "options": {"remotepath": f"s3://{bucket}/{folder}", "endpoint_url": server.endpoint_url,
                        "region": server.region},
            "credentials": {"aws_access_key_id": server.aws_access_key_id,
                            "aws_secret_access_key": server.aws_secret_access_key}}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative name, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
