"""A shared daemon as storage, for the conformance suite: ``pipedaemon serve --shared``.

It runs as the suite's own user (its operator), with a local remote over a scratch folder:
the suite checks the ``pipedaemon`` backend (the wire, object.* methods, errors), not the
roles, and making real users per test would be slow. Roles are tests/sharing/test_sharing.py's.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient

START_TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass
class SharedServer:
    socket: Path
    data: Path  # the local remote's folder
    remote: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def pipedaemon_server() -> Iterator[SharedServer]:
    base = Path(tempfile.mkdtemp(prefix="pdshared-", dir="/tmp"))  # short: a socket path is <108
    (base / "home").mkdir()
    (base / "data").mkdir()
    sock = base / "shared.sock"
    env = {**os.environ, "PIPEDAEMON_HOME": str(base / "home"), "PIPEDAEMON_SOCKET": str(sock),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    group = grp.getgrgid(os.getgid()).gr_name
    with open(base / "stderr.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pipedaemon", "serve", "--shared", "--group", group,
                                 "--socket", str(sock)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((base / "stderr.log").read_text()[-3000:])
        time.sleep(0.05)
    with PipeClient(str(sock), shared=True) as c:
        c.upsert_remote({"name": "conf", "protocol": "local", "options": {"remotepath": f"{base}/data/"}})
    try:
        yield SharedServer(sock, base / "data", "conf", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pipedaemon_spec(pipedaemon_server: SharedServer) -> dict[str, Any]:
    root = f"t-{uuid.uuid4().hex[:10]}/"
    return {"protocol": "pipedaemon", "credentials": {}, "root": root,
            "options": {"socket": str(pipedaemon_server.socket), "remote": pipedaemon_server.remote}}
