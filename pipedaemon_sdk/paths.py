"""Where the daemon's socket and state live; shared by the SDK and the daemon."""

from __future__ import annotations

import os
from pathlib import Path


def default_socket_path() -> Path:
    env = os.environ.get("PIPEDAEMON_SOCKET")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "pipedaemon" / "pipedaemon.sock"
    return Path(f"/tmp/pipedaemon-{os.getuid()}") / "pipedaemon.sock"


def home_dir() -> Path:
    env = os.environ.get("PIPEDAEMON_HOME")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "pipedaemon"


def lock_path(socket_path: Path) -> Path:
    return socket_path.with_name(socket_path.name + ".lock")
