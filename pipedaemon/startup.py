"""What the daemon checks before serving: one daemon per home, a usable home, a sound state.

Every failure here is a ``StartupError``: ``serve`` prints its one line and exits 1,
with nothing left running (no traceback, no thread keeping the process alive).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path

from pipedaemon_sdk.protocol.paths import home_lock_path, read_home_lock


class StartupError(Exception):
    """A reason the daemon cannot start, said in one line."""


def check_home(home: Path) -> None:
    """The home must be a folder we can write (a file there is a common slip)."""
    if home.exists() and not home.is_dir():
        raise StartupError(f"PIPEDAEMON_HOME {home} is not a folder; point PIPEDAEMON_HOME at a folder "
                           "(or move the file away)")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot make PIPEDAEMON_HOME {home}: {exc.strerror or exc}") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise StartupError(f"PIPEDAEMON_HOME {home} is not writable by this user")


def take_home_lock(home: Path, socket_path: Path) -> int:
    """Lock ``<home>/daemon.lock`` for the daemon's life: one daemon per home, whatever its socket.

    The file names our pid and socket, so a client that finds the home taken by a daemon on
    another socket can say which socket to use."""
    path = home_lock_path(home)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        other = read_home_lock(home)
        where = f" (pid {other['pid']}, socket {other['socket']})" if other else ""
        sock = other.get("socket") if other else None
        hint = (f"; use that daemon: PIPEDAEMON_SOCKET={sock} or --socket {sock}"
                if sock and sock != str(socket_path) else "")
        raise StartupError(f"another daemon already serves PIPEDAEMON_HOME {home}{where}{hint}") from None
    record_socket(fd, str(socket_path))
    return fd


def record_socket(fd: int, socket_path: str) -> None:
    """Write our pid and the socket we serve into the home's lock file."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "socket": socket_path}).encode(), 0)


def damaged_reason(db: Path) -> str | None:
    """Why ``state.db`` cannot be used, or None when it is sound (or not there yet)."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return str(exc)
    if rows and rows[0][0] == "ok":
        return None
    return "; ".join(str(r[0]) for r in rows[:3])


def check_state(db: Path, reset: bool) -> Path | None:
    """Refuse a damaged state database, or (``reset``) move it aside: the path it was moved to."""
    reason = damaged_reason(db)
    if reason is None:
        return None
    if not reset:
        raise StartupError(
            f"the state database {db} is damaged ({reason}); it holds the remotes, pipes and jobs. "
            f"Restore it from a backup, or run `pipedaemon serve --reset-state` to move it aside "
            f"and start with an empty state (remotes and pipes must then be added again)")
    aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(db) + suffix)
        if part.exists():
            part.rename(Path(str(aside) + suffix))
    return aside
