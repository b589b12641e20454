"""The OpenSSH transport's private folders (agent socket, pinned key) never stay behind.

A daemon killed with kill -9 cannot remove its folder: the next daemon's start removes it
(its owner's pid, in the name, is gone), and never a live process's. A request cancelled
while its remote connects (the client went away) closes what the connect started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import DaemonError, PipeClient
from tests.servers.sftp import SSHDServer, make_spec
from tests.support.engine import kill_daemon
from tests.support.storage import settings_of


@pytest.fixture
def runtime_dir(pd_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own XDG_RUNTIME_DIR (inherited by the daemons it starts)."""
    xdg = pd_env["base"] / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    return xdg


def folders(xdg: Path) -> list[Path]:
    return sorted(xdg.glob("pd-ssh-*"))


def wait_for(what: str, cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen in {timeout} s: {what}")
        time.sleep(0.05)


def openssh_remote(c: PipeClient, spec: dict[str, Any], name: str = "r", **options: Any) -> None:
    settings = settings_of(spec, name)
    settings["options"].update({"transport": "openssh", **options})
    c.upsert_remote(settings)


def test_kill9_leftover_is_removed_at_next_start(runtime_dir: Path, sftp_server: SSHDServer,
                                                 tmp_path: Path) -> None:
    live = runtime_dir / f"pd-ssh-{os.getpid()}-live"  # a live process's folder (this test's)
    live.mkdir()
    c = PipeClient(request_timeout_s=60.0).connect()
    openssh_remote(c, make_spec(sftp_server))
    src = tmp_path / "a.txt"
    src.write_bytes(b"through openssh")
    c.upload(src, remote="r", key="a.txt")  # connects: ssh, its agent, the folder
    pid = c.status().pid
    left = [p for p in folders(runtime_dir) if p != live]
    assert [p.name.split("-")[2] for p in left] == [str(pid)]
    assert (left[0] / "agent.sock").exists()
    kill_daemon(c)
    assert left[0].exists()  # nobody could remove it
    with PipeClient(request_timeout_s=60.0) as again:  # the next start (auto-started)
        assert again.status().pid != pid
        assert folders(runtime_dir) == [live]  # the stale one went, the live one stayed
        with contextlib.suppress(DaemonError, ConnectionError, OSError):
            again.shutdown()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (ssh waits for a banner)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def ssh_to(port: int) -> list[int]:
    """Processes running ssh to 127.0.0.1 ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"ssh") and str(port).encode() in argv:
                found.append(int(entry.name))
    return found


def test_a_request_cancelled_while_connecting_leaves_nothing(
        runtime_dir: Path, pd_env: dict[str, Path], sftp_server: SSHDServer, silent_port: int) -> None:
    spec = make_spec(sftp_server)
    spec["options"]["port"] = silent_port
    with PipeClient(request_timeout_s=60.0) as c:
        openssh_remote(c, spec, connect_timeout=30)
        c.status()
        request = {"jsonrpc": "2.0", "id": 1, "method": "remote.check",
                   "params": {"profile": c.profile, "name": "r", "write_probe": False}}
        with socket.socket(socket.AF_UNIX) as raw:  # a client that asks, then goes away
            raw.connect(str(pd_env["socket"]))
            raw.sendall(json.dumps(request).encode() + b"\n")
            wait_for("ssh waiting for the silent server's banner", lambda: ssh_to(silent_port))
            assert len(folders(runtime_dir)) == 1
        # The daemon cancels the request: its connect's folder, agent and ssh go with it.
        wait_for("the folder removed", lambda: not folders(runtime_dir))
        wait_for("the ssh process ended", lambda: not ssh_to(silent_port))
        assert c.status().pid  # and the daemon serves on
        with contextlib.suppress(DaemonError, ConnectionError, OSError):
            c.shutdown()
