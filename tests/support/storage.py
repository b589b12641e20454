"""Shared pieces of the tests that register remotes with a daemon (storage, engine, metadata...).

Each test gets its own daemon (the ``client`` fixture, tests/conftest.py), auto-started by
PipeClient inside the test's temp PIPEDAEMON_HOME/PIPEDAEMON_SOCKET, shut down at the end
(and killed by ``reaper`` if it did not stop).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient

REMOTE = "store"


def get_spec(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    return request.getfixturevalue(f"{name}_spec")


def settings_of(spec: dict[str, Any], name: str = REMOTE, **extra: Any) -> dict[str, Any]:
    out = {"name": name, "protocol": spec["protocol"], "options": dict(spec["options"]),
           "credentials": spec["credentials"]}
    out.update(extra)
    return out


def register(c: PipeClient, spec: dict[str, Any], name: str = REMOTE, **options: Any) -> str:
    """Remote ``name`` on ``spec``'s server, with ``options`` over the spec's own; its name."""
    c.upsert_remote(settings_of(spec, name, options={**spec["options"], **options}))
    return name


def bucket_name(spec: dict[str, Any]) -> str:
    """A bucket that exists: S3's scratch bucket, or a new folder under the root elsewhere."""
    if spec["protocol"] == "s3":
        return spec["root"].split("/")[0]
    return f"b-{uuid.uuid4().hex[:8]}"


def new_bucket_name() -> str:
    # S3 bucket names are global on the endpoint: unique, lowercase, no underscores.
    return f"pd-{uuid.uuid4().hex[:16]}"


def ensure_bucket(c: PipeClient, spec: dict[str, Any]) -> str:
    name = bucket_name(spec)
    ds = c.datastore(REMOTE)
    if not ds.bucket_exists(name):
        ds.create_bucket(name)
    return name


def rss_peak_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            p = Path(dirpath, f)
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out
