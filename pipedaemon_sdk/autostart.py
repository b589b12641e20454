"""Start the daemon when no one answers, without races.

The daemon holds an exclusive ``flock`` on ``<socket>.lock`` for its whole life. A
client that cannot connect tries that lock: if it gets it, no daemon is alive, so it
re-checks, then spawns ``python -m pipedaemon serve`` handing over the *locked* file
descriptor (a flock belongs to the open file, which the child inherits). The lock is
therefore held without a gap from the client's check to the daemon's exit, and ten
clients racing end up with exactly one daemon. A client that finds the lock taken
just waits for the socket.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .protocol.errors import DaemonConnectionError
from .protocol.paths import ensure_socket_dir, home_dir, home_holder, try_lock  # noqa: F401 (ensure_socket_dir: re-exported)

if TYPE_CHECKING:
    import subprocess

RETRYABLE = (errno.ENOENT, errno.ECONNREFUSED)


def spawn_daemon(socket_path: Path, lock_fd: int) -> subprocess.Popen[bytes]:
    import subprocess  # only a client that starts the daemon pays for it

    home = home_dir()
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "PIPEDAEMON_HOME is not a folder", str(home))
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ, PIPEDAEMON_LOCK_FD=str(lock_fd), PIPEDAEMON_SOCKET=str(socket_path))
    with open(home / "daemon.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipedaemon", "serve", "--socket", str(socket_path), "--detached"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True, pass_fds=(lock_fd,), close_fds=True,
        )


def connect_or_start(socket_path: Path, attempt: Callable[[], bool], *, auto_start: bool,
                     timeout: float) -> None:
    """Call ``attempt`` (True once connected) until it succeeds, starting the daemon if needed."""
    deadline = time.monotonic() + timeout
    child: subprocess.Popen[bytes] | None = None
    log_start = 0
    while True:
        if attempt():
            if child is not None:
                reap_later(child)
            return
        if not auto_start:
            holder = home_holder(home_dir())
            other = holder.get("socket") if holder else None
            hint = (f"; a daemon serves PIPEDAEMON_HOME {home_dir()} on {other}: "
                    f"use PIPEDAEMON_SOCKET={other}" if other and other != str(socket_path) else "")
            raise DaemonConnectionError(f"no daemon is listening on {socket_path} (auto_start is off){hint}")
        if child is None:
            try:
                fd = try_lock(socket_path)
                if fd is not None:
                    try:
                        if attempt():
                            return
                        refuse_other_home_daemon(socket_path)
                        log_start = _size(home_dir() / "daemon.log")
                        child = spawn_daemon(socket_path, fd)
                    finally:
                        os.close(fd)
            except OSError as exc:  # no folder for the socket or the home: say so, as for any start failure
                raise DaemonConnectionError(f"cannot start the daemon for {socket_path}: {exc}") from exc
        elif child.poll() not in (None, 0):
            why = last_error_line(home_dir() / "daemon.log", log_start)
            raise DaemonConnectionError(
                f"the daemon exited with status {child.returncode} while starting"
                + (f": {why}" if why else "") + f"; see {home_dir() / 'daemon.log'}")
        if time.monotonic() > deadline:
            if child is not None:
                reap_later(child)
            raise DaemonConnectionError(f"the daemon did not answer on {socket_path} within {timeout:g} s")
        time.sleep(0.02)


def refuse_other_home_daemon(socket_path: Path) -> None:
    """One daemon per home: when one serves our home on another socket, name that socket."""
    holder = home_holder(home_dir())
    if holder is None:
        return
    sock = holder.get("socket")
    pid = holder.get("pid")
    if sock and sock != str(socket_path):
        raise DaemonConnectionError(
            f"a daemon (pid {pid}) already serves PIPEDAEMON_HOME {home_dir()} on socket {sock}, not on "
            f"{socket_path}; use it: PIPEDAEMON_SOCKET={sock} (or --socket {sock})")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def last_error_line(log: Path, start: int = 0) -> str:
    """The message of the last ERROR line written after ``start`` (why a daemon did not start)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(start, f.seek(0, 2) - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if " ERROR " in line:
            return line.split(": ", 1)[-1].strip()
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    return ""


def reap_later(child: subprocess.Popen[bytes]) -> None:
    """Collect the daemon's exit status when it ends: no zombie lingers under a long-lived client
    (``kill(pid, 0)`` still finds a zombie, so `pipedaemon stop` would wait for it in vain)."""
    import threading

    threading.Thread(target=child.wait, name="pipedaemon-reaper", daemon=True).start()


def probe(path: str) -> bool:
    """Whether a daemon answers on ``path`` now (False while none listens; blocking)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError as err:
        if is_retryable(err):
            return False
        raise DaemonConnectionError(f"cannot connect to {path}: {err}") from err
    finally:
        s.close()


def is_retryable(exc: OSError) -> bool:
    return exc.errno in RETRYABLE
