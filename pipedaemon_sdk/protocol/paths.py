"""Where the daemon's socket and state live; shared by the SDK and the daemon."""

from __future__ import annotations

import errno
import os
import stat
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


def home_lock_path(home: Path) -> Path:
    """Locked by the daemon that serves ``home``: one daemon per home, whatever the socket."""
    return home / "daemon.lock"


def read_home_lock(home: Path) -> dict[str, object] | None:
    """The pid and socket the home's daemon wrote in its lock file (None if unreadable)."""
    import json

    try:
        data = json.loads(home_lock_path(home).read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def home_holder(home: Path) -> dict[str, object] | None:
    """The lock file's content when a daemon holds the home's lock now, else None."""
    import fcntl

    try:
        fd = os.open(home_lock_path(home), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_home_lock(home) or {}
    finally:
        os.close(fd)
    return None


def ensure_socket_dir(socket_path: Path) -> None:
    """Make the socket's folder; refuse one another user controls (they could swap the socket)."""
    folder = socket_path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() and not (st.st_uid == 0 and st.st_mode & stat.S_ISVTX):  # /tmp is fine
        raise PermissionError(errno.EACCES, f"the socket folder belongs to uid {st.st_uid}, not to us",
                              str(folder))


def try_lock(socket_path: Path) -> int | None:
    """The locked fd of ``<socket>.lock``, or None when someone holds it."""
    ensure_socket_dir(socket_path)
    fd = os.open(lock_path(socket_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
